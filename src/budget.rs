//! The memory budget: every allocation whose size comes from the input (a model's dimensions, a
//! tensor's shape, a file's length) is checked here before it is made.
//!
//! A lying file must not be able to ask for more memory than the machine has: natively that
//! ends in the kernel's OOM killer or an allocation abort, in the page it kills the tab, and on
//! wasm32 a size computed in 32-bit `usize` can wrap to a small number and then index past it.
//! So sizes are computed in `u64` with checked arithmetic ([`bytes_of`]), and [`check`] refuses
//! anything over the budget with [`Error::TooLarge`], which says how much is needed and for
//! what.
//!
//! The budget is, in order of precedence:
//! 1. [`set_limit`] (the command line's `--memory-budget`);
//! 2. the environment variable `NSE_MEMORY_BUDGET` (native; `8G`, `512MiB`, `1.5GB`, bytes);
//! 3. natively, [`NATIVE_FRACTION`] of the memory available when the budget is first asked
//!    for (`MemAvailable` in `/proc/meminfo`, else `MemTotal`), or [`FALLBACK_BUDGET`] where
//!    there is no `/proc/meminfo`;
//! 4. on wasm32, the address space left: [`WASM32_ADDRESS_SPACE`] minus the linear memory
//!    already grown, minus [`WASM32_HEADROOM`].
//!
//! A check is per request: it compares one allocation (or one group of allocations made
//! together, such as all the weights of a model) with the budget, and does not track what is
//! already allocated. Natively the budget is read once, so it does not shrink as the model loads.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Share of the available memory one request may take natively: the rest is for the other
/// buffers alive at the same time (file bytes next to the weights, activations next to `P`).
pub const NATIVE_FRACTION: f64 = 0.8;

/// The native budget where `/proc/meminfo` cannot be read (macOS, Windows).
pub const FALLBACK_BUDGET: u64 = 16 << 30;

/// A wasm32 module addresses at most 4 GiB of linear memory (65,536 pages of 64 KiB), which
/// is also what Chrome and Firefox allow a page.
pub const WASM32_ADDRESS_SPACE: u64 = 4 << 30;

/// Kept free in the page for the allocator's fragmentation, the JS glue and the short-lived
/// copies an operation makes beside the buffer it asked for.
pub const WASM32_HEADROOM: u64 = 512 << 20;

/// How to get more room, for the [`Error::TooLarge`] message.
#[cfg(not(target_arch = "wasm32"))]
pub const RAISE_HINT: &str = "use a smaller model or fewer edited layers, or, if this machine \
                              really has the memory, raise the budget with --memory-budget SIZE \
                              or NSE_MEMORY_BUDGET=SIZE (e.g. 48G)";
/// How to get more room, for the [`Error::TooLarge`] message.
#[cfg(target_arch = "wasm32")]
pub const RAISE_HINT: &str = "a browser page can address at most 4 GiB; use a smaller model or \
                              fewer edited layers, or the native command line";

/// 0 = no override.
static OVERRIDE: AtomicU64 = AtomicU64::new(0);

/// Sets the budget for the rest of the process (`None` goes back to the default).
pub fn set_limit(bytes: Option<u64>) {
    OVERRIDE.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// The budget in force, in bytes.
pub fn limit() -> u64 {
    match OVERRIDE.load(Ordering::Relaxed) {
        0 => default_limit(),
        n => n,
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn default_limit() -> u64 {
    static DEFAULT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| {
        if let Some(n) = std::env::var("NSE_MEMORY_BUDGET")
            .ok()
            .and_then(|s| parse_size(&s).ok())
        {
            return n;
        }
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| meminfo_bytes(&m))
            .map_or(FALLBACK_BUDGET, |avail| {
                (avail as f64 * NATIVE_FRACTION) as u64
            })
    })
}

#[cfg(target_arch = "wasm32")]
fn default_limit() -> u64 {
    let grown = core::arch::wasm32::memory_size::<0>() as u64 * 65536;
    WASM32_ADDRESS_SPACE
        .saturating_sub(grown)
        .saturating_sub(WASM32_HEADROOM)
}

/// `MemAvailable` (else `MemTotal`) of a `/proc/meminfo` text, in bytes.
pub fn meminfo_bytes(meminfo: &str) -> Option<u64> {
    let field = |key: &str| {
        meminfo.lines().find_map(|l| {
            let kib = l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim();
            kib.parse::<u64>().ok()?.checked_mul(1024)
        })
    };
    field("MemAvailable:").or_else(|| field("MemTotal:"))
}

/// Checks that `needed` bytes (`None`: the size overflowed `u64`) fit in the budget; `what`
/// says what they are for, and is only called on failure.
///
/// # Errors
/// [`Error::TooLarge`] naming `what`, the size and the budget.
pub fn check(needed: Option<u64>, what: impl FnOnce() -> String) -> Result<()> {
    let budget = limit();
    match needed {
        Some(n) if n <= budget => Ok(()),
        n => Err(Error::too_large(what(), n.unwrap_or(u64::MAX), budget)),
    }
}

/// The bytes of `counts[0] × counts[1] × … × elem_bytes` items, `None` on overflow. Sizes are
/// `u64` so that wasm32's 32-bit `usize` never wraps.
pub fn bytes_of(counts: &[usize], elem_bytes: u64) -> Option<u64> {
    counts.iter().try_fold(elem_bytes, |acc, &n| {
        acc.checked_mul(u64::try_from(n).ok()?)
    })
}

/// [`bytes_of`] then [`check`], returning the element count as a `usize` that is safe to
/// allocate.
pub fn checked_len(
    counts: &[usize],
    elem_bytes: u64,
    what: impl FnOnce() -> String,
) -> Result<usize> {
    let bytes = bytes_of(counts, elem_bytes);
    check(bytes, what)?;
    let elems = bytes.expect("checked") / elem_bytes.max(1);
    Ok(usize::try_from(elems).expect("under the budget, so it fits in usize"))
}

/// Parses a size: bytes, or a number with `K`, `M`, `G`, `T` (powers of 1024), optionally
/// followed by `B` or `iB` (`512M`, `8GiB`, `1.5G`, `1073741824`).
///
/// # Errors
/// [`Error::Input`] for anything else, or zero.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let bad = || {
        Error::input(format!(
            "memory budget {:?} is not a size; write e.g. 8G, 512M or a number of bytes",
            crate::error::escape(text)
        ))
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let scale: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad()),
    };
    let x: f64 = num.parse().map_err(|_| bad())?;
    let bytes = x * scale as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `16.0 GiB`, `512.0 MiB`, `900 B`: sizes for messages.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n == u64::MAX {
        return "more than 2^64 bytes".into();
    }
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_size(" 1.5g ").unwrap(), 3 << 29);
        assert_eq!(parse_size("2kb").unwrap(), 2048);
        for bad in ["", "G", "0", "-1G", "1X", "1e30T", "nan"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_are_checked_products() {
        assert_eq!(bytes_of(&[3, 5], 4), Some(60));
        assert_eq!(bytes_of(&[], 4), Some(4));
        // Half the bits of usize each: the product overflows on 32- and 64-bit targets alike.
        let half = 1usize << (usize::BITS / 2);
        assert_eq!(bytes_of(&[half, half], 4), None);
        assert_eq!(fmt_bytes(16 << 30), "16.0 GiB");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(7), "7 B");
    }

    #[test]
    fn reads_meminfo() {
        let m = "MemTotal:       16303428 kB\nMemFree:  1 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(meminfo_bytes(m), Some(8_000_000 * 1024));
        assert_eq!(meminfo_bytes("MemTotal: 2 kB\n"), Some(2048));
        assert_eq!(meminfo_bytes("nothing"), None);
    }
}
