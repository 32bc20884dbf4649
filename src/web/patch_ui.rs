//! Export and import: the ledger as a `.nsepatch` download, a patch file replayed onto the
//! loaded model (refused, with Patch::apply's message, when it was made for another model), and
//! the edited model as Hugging Face safetensors + config.json + tokenizer.json.

use std::rc::Rc;

use wasm_bindgen::JsCast;
use web_sys::{HtmlAnchorElement, HtmlButtonElement, HtmlElement, HtmlInputElement};

use super::dom::{self, by_testid, child, set_attr};
use super::session::{Session, fmt_bytes};
use super::{App, apply_flow, compare_ui, ledger_ui, loader};
use crate::edit::patch::Patch;
use crate::model::export::hf_config_json;
use crate::{Error, Result};

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

/// The model file's name without its extension, for download names.
fn stem(s: &Session) -> String {
    let name = &s.source.name;
    name.rsplit_once('.')
        .map_or(name.as_str(), |(a, _)| a)
        .to_string()
}

/// Downloads the ledger as a patch, with the digest of the edited weights recorded so that the
/// command line (or another page) can prove its replay reproduced them.
async fn export_patch(app: &Rc<App>) {
    if !app.begin() {
        return;
    }
    app.status.clear_error();
    let Some(s) = app.take_session() else {
        app.end();
        return;
    };
    let result = async {
        let patch = s.export_patch().await?;
        let bytes = patch.to_bytes();
        let name = format!("{}-{}-edits.nsepatch", stem(&s), patch.entries.len());
        dom::download(&name, &bytes, "application/octet-stream")?;
        Ok::<_, Error>((name, bytes.len()))
    }
    .await;
    app.put_session(s);
    app.end();
    match result {
        Ok((name, n)) => app
            .patch
            .status
            .set_inner_text(&format!("Exported {name} ({n} bytes).")),
        Err(e) => app
            .status
            .show_error(&format!("Could not export the ledger: {e}")),
    }
}

async fn import_patch(app: &Rc<App>, file: web_sys::File) {
    if !app.begin() {
        return;
    }
    app.status.clear_error();
    let Some(mut s) = app.take_session() else {
        app.end();
        return;
    };
    let name = file.name();
    let result = async {
        let bytes = loader::read_file(&file, |_, _| {}).await?;
        let patch = Patch::from_bytes(&bytes, &name)?;
        let before = s.n_entries();
        s.import_patch(&patch, &format!("imported from {name}"))
            .await?;
        Ok::<_, Error>((patch.entries.len(), before))
    }
    .await;
    match result {
        Ok((n, before)) => {
            let replaced = if before > 0 {
                format!(", replacing the {before} edit(s) that were here")
            } else {
                String::new()
            };
            let text = format!(
                "Imported {n} edit(s) from {name}{replaced}: replayed bit for bit on the original weights."
            );
            app.patch.status.set_inner_text(&text);
            app.status.progress(Some(1.0), &text);
            apply_flow::save(app, &s, app.edit.method()).await;
            ledger_ui::render(app, &s);
            compare_ui::run(app, &mut s).await;
        }
        Err(e) => {
            let text = format!("Import refused, the ledger is unchanged: {e}");
            app.patch.status.set_inner_text(&text);
            app.status.show_error(&text);
        }
    }
    app.put_session(s);
    app.end();
}

async fn export_model(app: &Rc<App>) {
    if !app.begin() {
        return;
    }
    app.status.clear_error();
    let Some(s) = app.take_session() else {
        app.end();
        return;
    };
    app.status.progress(
        None,
        "Reading the weights back and writing model.safetensors (F32)…",
    );
    dom::let_paint().await;
    let result = async {
        let bytes = s.export_model().await?;
        let stem = stem(&s);
        dom::download(
            &format!("{stem}-edited.safetensors"),
            &bytes,
            "application/octet-stream",
        )?;
        let status = &app.patch.status;
        status.set_inner_text(&format!(
            "Downloaded {stem}-edited.safetensors ({}); save these beside it: ",
            fmt_bytes(bytes.len() as u64)
        ));
        let config = hf_config_json(s.config());
        let tokenizer = s.tokenizer.to_json()?;
        for (id, file, text) in [
            ("export-config-link", "config.json", config),
            ("export-tokenizer-link", "tokenizer.json", tokenizer),
        ] {
            let a: HtmlAnchorElement = child(status, "a", Some(id), file).unchecked_into();
            let blob = blob_url(&text)?;
            a.set_href(&blob);
            a.set_download(file);
            set_attr(&a, "class", "download");
            child(status, "span", None, " ");
        }
        Ok::<_, Error>(())
    }
    .await;
    match result {
        Ok(()) => app.status.progress(Some(1.0), "Exported the edited model."),
        Err(e) => app
            .status
            .show_error(&format!("Could not export the model: {e}")),
    }
    app.put_session(s);
    app.end();
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
