//! The `nse` command line (native only).

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    nse::cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
