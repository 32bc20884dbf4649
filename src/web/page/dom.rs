//! Small DOM helpers: find the page's elements by `data-testid`, attach listeners, offer
//! downloads, read the page's URL and number boxes.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{Document, Element, Event, EventTarget, Window};

use crate::Error;
pub(crate) use crate::web::js::js_error;

pub(crate) fn window() -> Window {
    web_sys::window().expect("the page runs in a window")
}

pub(crate) fn document() -> Document {
    window().document().expect("the window has a document")
}

/// The element carrying `data-testid="{id}"`, as the type `T`.
///
/// Panics when `www/index.html` lacks it or it has another element type: the page and this
/// module are out of step, which is a bug, not something a user can cause.
pub(crate) fn by_testid<T: JsCast>(id: &str) -> T {
    document()
        .query_selector(&format!("[data-testid=\"{id}\"]"))
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("www/index.html has no element with data-testid=\"{id}\""))
        .dyn_into::<T>()
        .unwrap_or_else(|_| panic!("data-testid=\"{id}\" is not the element type nse expects"))
}

/// A new `<tag>` element.
pub(crate) fn create(tag: &str) -> Element {
    document()
        .create_element(tag)
        .unwrap_or_else(|_| panic!("cannot create a <{tag}> element"))
}

/// Sets an attribute; `data-*` attributes on our own elements cannot fail.
pub(crate) fn set_attr(el: &Element, name: &str, value: &str) {
    el.set_attribute(name, value)
        .unwrap_or_else(|_| panic!("cannot set attribute {name}"));
}

/// Runs `f` on every `event` of `target`, for the life of the page.
pub(crate) fn on(target: &EventTarget, event: &str, f: impl FnMut(Event) + 'static) {
    let callback = Closure::<dyn FnMut(Event)>::new(f);
    target
        .add_event_listener_with_callback(event, callback.as_ref().unchecked_ref())
        .unwrap_or_else(|_| panic!("cannot listen to `{event}`"));
    // The page's controls live as long as the page: the closure is never dropped.
    callback.forget();
}

/// A new SVG element `<tag>`.
pub(crate) fn svg(tag: &str) -> Element {
    document()
        .create_element_ns(Some("http://www.w3.org/2000/svg"), tag)
        .unwrap_or_else(|_| panic!("cannot create an SVG <{tag}> element"))
}

/// Offers `bytes` (as the engine handed them over, never copied into this thread's wasm memory)
/// as a file download named `name`.
///
/// # Errors
/// The browser refused to make the blob or its URL.
pub(crate) fn download(name: &str, bytes: &js_sys::Uint8Array, mime: &str) -> crate::Result<()> {
    let parts = js_sys::Array::of1(bytes);
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)
        .map_err(|e| js_error("cannot make the download", e))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob)
        .map_err(|e| js_error("cannot make the download's URL", e))?;
    let a: web_sys::HtmlAnchorElement = create("a").unchecked_into();
    a.set_href(&url);
    a.set_download(name);
    a.click();
    // The click has started the download; the URL can go once the browser has read it.
    let revoke = Closure::once_into_js(move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    let _ = window()
        .set_timeout_with_callback_and_timeout_and_arguments_0(revoke.unchecked_ref(), 60_000);
    Ok(())
}

/// The value of `?name=…` in the page's URL.
pub(crate) fn query_param(name: &str) -> Option<String> {
    let search = window().location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()?
        .get(name)
}

/// Removes every child of `el`.
pub(crate) fn clear(el: &Element) {
    el.set_text_content(None);
}

/// Appends a new `<tag>` child with `text` (and `data-testid` when given) and returns it.
pub(crate) fn child(parent: &Element, tag: &str, testid: Option<&str>, text: &str) -> Element {
    let el = create(tag);
    if let Some(id) = testid {
        set_attr(&el, "data-testid", id);
    }
    if !text.is_empty() {
        el.set_text_content(Some(text));
    }
    parent
        .append_child(&el)
        .expect("appending to our own element");
    el
}

/// A whole number from a number box, within `lo..=hi`.
pub(crate) fn int_input(
    input: &web_sys::HtmlInputElement,
    what: &str,
    lo: usize,
    hi: usize,
) -> crate::Result<usize> {
    let text = input.value();
    match text.trim().parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(Error::input(format!(
            "{what}: “{text}” is not a whole number from {lo} to {hi}"
        ))),
    }
}
