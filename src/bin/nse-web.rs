//! The browser page's entry point, built by Trunk for wasm32.

#[cfg(target_arch = "wasm32")]
fn main() {
    nse::web::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("nse-web is the browser page; build it with `trunk build` (see README.md)");
    std::process::exit(2);
}
