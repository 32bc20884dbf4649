//! GGUF metadata values and the bounds-checked little-endian reader the parser is built on.

use crate::{Error, Result};

/// Arrays nest at most this deep; a file that nests deeper is corrupt (and could otherwise
/// exhaust the stack).
const MAX_ARRAY_DEPTH: usize = 8;

/// One GGUF metadata value (`gguf_type`).
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    /// Elements all of one type (arrays of arrays are allowed).
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The GGUF type name, for messages (`"u32"`, `"string"`, `"array"`).
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F32(_) => "f32",
            MetaValue::F64(_) => "f64",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
        }
    }

    /// Any integer type holding a value ≥ 0.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type, as `i64` (a `u64` above `i64::MAX` gives `None`).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// `f32` or `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl std::fmt::Display for MetaValue {
    /// Scalars as themselves, strings quoted and cut at 80 characters, arrays as their length,
    /// element type and first three elements (a vocabulary has 50,000 of them).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
            MetaValue::F32(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::String(s) if s.chars().count() > 80 => {
                write!(f, "{:?}…", s.chars().take(80).collect::<String>())
            }
            MetaValue::String(s) => write!(f, "{s:?}"),
            MetaValue::Array(a) => {
                let ty = a.first().map_or("?", MetaValue::type_name);
                write!(f, "[{} × {ty}", a.len())?;
                for (i, v) in a.iter().take(3).enumerate() {
                    write!(f, "{}{v}", if i == 0 { ": " } else { ", " })?;
                }
                write!(f, "{}]", if a.len() > 3 { ", …" } else { "" })
            }
        }
    }
}

/// A position in the file bytes; every read checks the bounds and names what it was reading.
pub(super) struct Cursor<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
    pub path: &'a str,
    /// Bytes of memory the values read so far take once parsed: a 1-byte `u8` in the file
    /// becomes a 32-byte [`MetaValue`], so the file's length alone does not bound it.
    pub in_memory: u64,
}

impl<'a> Cursor<'a> {
    /// Adds `n` items of `each` bytes to [`Cursor::in_memory`] and checks the total against
    /// the memory budget before they are allocated.
    pub fn charge(&mut self, n: usize, each: usize, what: &dyn Fn() -> String) -> Result<()> {
        let total =
            crate::budget::bytes_of(&[n], each as u64).and_then(|b| b.checked_add(self.in_memory));
        crate::budget::check(total, || {
            format!("{}: {} as parsed in memory", self.path, what())
        })?;
        self.in_memory = total.expect("checked");
        Ok(())
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// A [`Error::Format`] for this file.
    pub fn error(&self, msg: impl Into<String>) -> Error {
        Error::format(self.path, msg)
    }

    /// The next `n` bytes; `what` names them for the truncation message.
    pub fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(format!(
                "{} at byte {} needs {n} bytes but the file has only {} bytes: the file is \
                 truncated or corrupt; download it again",
                what(),
                self.pos,
                self.bytes.len()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let b = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count that must be backed by at least `min_bytes_each` bytes per item, so a lying count
    /// errors here instead of driving a huge allocation or a long loop.
    pub fn count(&mut self, min_bytes_each: usize, what: &dyn Fn() -> String) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_bytes_each))
            .is_some_and(|need| need <= self.remaining());
        if !fits {
            return Err(self.error(format!(
                "{} at byte {at} is {n}, but only {} bytes follow (at least {min_bytes_each} per \
                 item): the file is truncated or corrupt; download it again",
                what(),
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    /// A GGUF string: `u64` length, then UTF-8 bytes.
    pub fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.count(1, &|| format!("length of {}", what()))?;
        self.charge(len, 1, what)?;
        let at = self.pos;
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| {
            self.error(format!(
                "{} at byte {at} is not valid UTF-8: the file is corrupt",
                what()
            ))
        })
    }

    /// A metadata value of GGUF type id `ty`; `key` names it for messages (already escaped).
    pub fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetaValue> {
        let what = || format!("value of metadata key `{key}`");
        Ok(match ty {
            0 => MetaValue::U8(u8::from_le_bytes(self.array(&what)?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(&what)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => MetaValue::Bool(self.array::<1>(&what)?[0] != 0),
            8 => MetaValue::String(self.string(&what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.error(format!(
                        "metadata key `{key}` nests arrays deeper than {MAX_ARRAY_DEPTH} levels: \
                         the file is corrupt"
                    )));
                }
                let elem = self.u32(&|| format!("element type of metadata array `{key}`"))?;
                let min = min_value_bytes(elem).ok_or_else(|| self.unknown_type(elem, key))?;
                let n = self.count(min, &|| format!("length of metadata array `{key}`"))?;
                self.charge(n, std::mem::size_of::<MetaValue>(), &|| {
                    format!("metadata array `{key}` of {n} values")
                })?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            _ => return Err(self.unknown_type(ty, key)),
        })
    }

    fn unknown_type(&self, ty: u32, key: &str) -> Error {
        self.error(format!(
            "metadata key `{key}` has unknown value type {ty} (GGUF defines 0..=12): the file is \
             corrupt or from a newer GGUF version"
        ))
    }
}

/// The fewest bytes one value of GGUF type `ty` occupies, `None` for an unknown type.
fn min_value_bytes(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}
