//! Export and import: the ledger as a `.nsepatch` download, a patch file replayed onto the
//! loaded model (refused, with Patch::apply's message, when it was made for another model), and
//! the edited model as Hugging Face safetensors + config.json + tokenizer.json.

use std::rc::Rc;

use js_sys::{Array, Uint8Array};
use wasm_bindgen::JsCast;
use web_sys::{HtmlAnchorElement, HtmlButtonElement, HtmlElement, HtmlInputElement};

use super::dom::{self, by_testid, child, set_attr};
use super::{App, compare_ui};
use crate::Result;
use crate::session::fmt_bytes;
use crate::session::protocol::{Reply, Request};

/// Handles on the export controls.
pub(crate) struct PatchView {
    export: HtmlButtonElement,
    import: HtmlInputElement,
    export_model: HtmlButtonElement,
    status: HtmlElement,
}

impl PatchView {
    pub(crate) fn find() -> Self {
        PatchView {
            export: by_testid("export-button"),
            import: by_testid("import-input"),
            export_model: by_testid("export-model-button"),
            status: by_testid("export-status"),
        }
    }

    /// `editable`: the loaded model can be edited; `entries`: its ledger's length.
    pub(crate) fn set_enabled(&self, enabled: bool, editable: bool, entries: usize) {
        self.export.set_disabled(!(enabled && entries > 0));
        self.import.set_disabled(!(enabled && editable));
        self.export_model.set_disabled(!enabled);
    }
}

/// Wires the three controls.
pub(crate) fn wire(app: &Rc<App>) {
    let a = Rc::clone(app);
    dom::on(&app.patch.export, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { export_patch(&a).await });
    });
    let a = Rc::clone(app);
    dom::on(&app.patch.import, "change", move |_| {
        let input = &a.patch.import;
        let Some(file) = input.files().and_then(|l| l.get(0)) else {
            return;
        };
        input.set_value("");
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { import_patch(&a, file).await });
    });
    let a = Rc::clone(app);
    dom::on(&app.patch.export_model, "click", move |_| {
        let a = Rc::clone(&a);
        wasm_bindgen_futures::spawn_local(async move { export_model(&a).await });
    });
}

/// The bytes the engine attached to its answer.
fn attached_bytes(attach: &Array) -> Option<Uint8Array> {
    attach.get(0).dyn_into::<Uint8Array>().ok()
}

/// Downloads the ledger as a patch (the engine records the digest of the edited weights in it,
/// so that the command line or another page can prove its replay reproduced them).
async fn export_patch(app: &Rc<App>) {
    if !app.begin() {
        return;
    }
    let (outcome, attach) = app.call_with(Request::ExportPatch, Array::new()).await;
    let result = match (outcome, attached_bytes(&attach)) {
        (Ok(Reply::Exported { name, .. }), Some(bytes)) => {
            dom::download(&name, &bytes, "application/octet-stream")
                .map(|()| (name, bytes.length()))
        }
        (Ok(other), _) => Err(crate::Error::input(format!("unexpected answer {other:?}"))),
        (Err(f), _) => Err(crate::Error::input(f.message)),
    };
    match result {
        Ok((name, n)) => app
            .patch
            .status
            .set_inner_text(&format!("Exported {name} ({n} bytes).")),
        Err(e) => app
            .status
            .show_error(&format!("Could not export the ledger: {e}")),
    }
    app.end();
}

/// Hands a patch file to the engine, which replays it onto the original weights.
async fn import_patch(app: &Rc<App>, file: web_sys::File) {
    if !app.begin() {
        return;
    }
    let request = Request::ImportPatch {
        name: file.name(),
        method: app.edit.method(),
    };
    let (outcome, _) = app.call_with(request, Array::of1(&file)).await;
    match outcome {
        Ok(Reply::Edited { text, .. }) => {
            app.patch.status.set_inner_text(&text);
            compare_ui::run(app).await;
        }
        Ok(other) => app
            .status
            .show_error(&format!("unexpected answer {other:?}")),
        Err(f) => {
            app.patch.status.set_inner_text(&f.message);
            app.status.show_error(&f.message);
        }
    }
    app.end();
}

/// Downloads the edited model (safetensors) and offers its config and tokenizer beside it.
async fn export_model(app: &Rc<App>) {
    if !app.begin() {
        return;
    }
    let (outcome, attach) = app.call_with(Request::ExportModel, Array::new()).await;
    let result = match (outcome, attached_bytes(&attach)) {
        (
            Ok(Reply::Exported {
                name,
                config,
                tokenizer,
                ..
            }),
            Some(bytes),
        ) => show_model_export(app, &name, &bytes, config, tokenizer),
        (Ok(other), _) => Err(crate::Error::input(format!("unexpected answer {other:?}"))),
        (Err(f), _) => Err(crate::Error::input(f.message)),
    };
    if let Err(e) = result {
        app.status
            .show_error(&format!("Could not export the model: {e}"));
    }
    app.end();
}

fn show_model_export(
    app: &App,
    name: &str,
    bytes: &Uint8Array,
    config: Option<String>,
    tokenizer: Option<String>,
) -> Result<()> {
    dom::download(name, bytes, "application/octet-stream")?;
    let status = &app.patch.status;
    status.set_inner_text(&format!(
        "Downloaded {name} ({}); save these beside it: ",
        fmt_bytes(u64::from(bytes.length()))
    ));
    for (id, file, text) in [
        ("export-config-link", "config.json", config),
        ("export-tokenizer-link", "tokenizer.json", tokenizer),
    ] {
        let a: HtmlAnchorElement = child(status, "a", Some(id), file).unchecked_into();
        let blob = blob_url(&text.unwrap_or_default())?;
        a.set_href(&blob);
        a.set_download(file);
        set_attr(&a, "class", "download");
        child(status, "span", None, " ");
    }
    Ok(())
}

/// An object URL for a small text file (kept for the life of the page).
fn blob_url(text: &str) -> Result<String> {
    let parts = js_sys::Array::of1(&wasm_bindgen::JsValue::from_str(text));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("application/json");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options)
        .map_err(|e| dom::js_error("cannot make a blob", e))?;
    web_sys::Url::create_object_url_with_blob(&blob)
        .map_err(|e| dom::js_error("cannot make a URL", e))
}
