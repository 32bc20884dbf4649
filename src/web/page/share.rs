//! A link to an edit, and the first-visit guide.
//!
//! "Copy a link to this edit" puts the model (when it was loaded from an address), the form's
//! request and its paraphrase and neighbourhood prompts into the page's address:
//! `?model=…&prompt=…&subject=…&target=…&true=…&method=…&para=…&neigh=…`. Opening such a link loads
//! that model and fills the form and says so; it never applies anything by itself.

use std::rc::Rc;

use js_sys::{Function, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{HtmlButtonElement, HtmlElement, HtmlInputElement};

use super::App;
use super::dom::{self, by_testid};
use crate::edit::{EditRequest, MethodKind};
use crate::session::RequestProbes;

/// localStorage key set when the first-visit guide is dismissed.
const GUIDE_DONE: &str = "nse-first-run-done";

/// Wires the share button and the guide's dismiss button; shows the guide on a first visit.
pub(crate) fn wire(app: &Rc<App>) {
    let button: HtmlButtonElement = by_testid("share-link-button");
    let a = Rc::clone(app);
    dom::on(&button, "click", move |_| share(&a));
    let guide: HtmlElement = by_testid("first-run");
    guide.set_hidden(storage_get(GUIDE_DONE).is_some());
    let dismiss: HtmlButtonElement = by_testid("first-run-dismiss");
    dom::on(&dismiss, "click", move |_| {
        storage_set(GUIDE_DONE, "1");
        guide.set_hidden(true);
    });
}

/// Fills the form from a shared link's parameters; returns whether the page was opened from one.
pub(crate) fn open_shared(app: &App) -> bool {
    let (Some(prompt), Some(subject), Some(target)) = (
        dom::query_param("prompt"),
        dom::query_param("subject"),
        dom::query_param("target"),
    ) else {
        return false;
    };
    let truth = dom::query_param("true").unwrap_or_default();
    // The form takes the text as given; its check says what is wrong with a bad link.
    app.edit.prompt.set_value(&prompt);
    app.edit.subject.set_value(&subject);
    app.edit.target.set_value(&target);
    app.edit.target_true.set_value(&truth);
    if let Some(kind) = dom::query_param("method").and_then(|m| MethodKind::parse(&m).ok()) {
        app.edit.method.set_value(kind.name());
    }
    let one = |p: &str| {
        dom::query_param(p)
            .filter(|s| !s.trim().is_empty())
            .into_iter()
            .collect()
    };
    app.compare.fill_probes(
        &subject,
        &RequestProbes {
            paraphrase: one("para"),
            neighborhood: one("neigh"),
        },
    );
    by_testid::<HtmlElement>("shared-note").set_hidden(false);
    true
}

/// The link to the form's edit, shown and copied to the clipboard.
fn share(app: &App) {
    let v = &app.edit;
    let r: Option<EditRequest> = v.request().ok();
    let probes = app.compare.form_probes();
    let Ok(search) = web_sys::UrlSearchParams::new() else {
        return;
    };
    let sentence = r
        .as_ref()
        .map_or_else(|| v.prompt.value(), |r| r.sentence());
    // A model picked from files has no address to share: the link then opens the default model.
    let model = app
        .last_load
        .borrow()
        .as_ref()
        .and_then(|l| l.url())
        .unwrap_or_default();
    let params = [
        ("model", model),
        ("prompt", sentence),
        ("subject", v.subject.value()),
        ("target", v.target.value()),
        ("true", v.target_true.value()),
        ("method", v.method().name().to_string()),
        (
            "para",
            probes.paraphrase.first().cloned().unwrap_or_default(),
        ),
        (
            "neigh",
            probes.neighborhood.first().cloned().unwrap_or_default(),
        ),
    ];
    for (k, value) in params {
        if !value.trim().is_empty() {
            search.append(k, &value);
        }
    }
    let location = dom::window().location();
    let base = format!(
        "{}{}",
        location.origin().unwrap_or_default(),
        location.pathname().unwrap_or_default()
    );
    let link = format!("{base}?{}", String::from(search.to_string()));
    let field: HtmlInputElement = by_testid("share-link");
    field.set_value(&link);
    field.set_hidden(false);
    field.select();
    // The clipboard may be refused (an insecure origin, a denied permission): the link stays in
    // the field, selected, to copy by hand.
    let clipboard = Reflect::get(&dom::window().navigator(), &"clipboard".into()).ok();
    let write = clipboard
        .as_ref()
        .and_then(|c| Reflect::get(c, &"writeText".into()).ok())
        .and_then(|f| f.dyn_into::<Function>().ok());
    let copied = match (clipboard, write) {
        (Some(c), Some(f)) => f.call1(&c, &JsValue::from_str(&link)).is_ok(),
        _ => false,
    };
    app.status.progress(
        Some(0.0),
        if copied {
            "Link copied: it opens this page with this edit in the form, not applied."
        } else {
            "Copy the link below: it opens this page with this edit in the form, not applied."
        },
    );
}

fn local_storage() -> Option<JsValue> {
    Reflect::get(&dom::window(), &"localStorage".into())
        .ok()
        .filter(|s| !s.is_null() && !s.is_undefined())
}

fn storage_get(key: &str) -> Option<String> {
    let s = local_storage()?;
    let get: Function = Reflect::get(&s, &"getItem".into()).ok()?.dyn_into().ok()?;
    get.call1(&s, &JsValue::from_str(key)).ok()?.as_string()
}

fn storage_set(key: &str, value: &str) {
    let Some(s) = local_storage() else { return };
    if let Some(set) = Reflect::get(&s, &"setItem".into())
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
    {
        let _ = set.call2(&s, &JsValue::from_str(key), &JsValue::from_str(value));
    }
}
