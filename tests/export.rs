//! Exporting a model (edited or not) as Hugging Face files and reading them back gives the same
//! weights and the same logits.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::tiny::{tiny_config, tiny_weights};
use nse::backend::Backend;
use nse::cpu::CpuBackend;
use nse::model::export::{export_safetensors, hf_config_json};
use nse::model::load::load_safetensors;
use nse::model::{ForwardSpec, LogitRows, Model, Packed};

#[test]
fn safetensors_export_round_trips() {
    let tok = common::load_default_model().tokenizer;
    let c = tiny_config(tok.vocab_size());
    let mut model = Model::upload(CpuBackend, c.clone(), tiny_weights(&c, 3)).unwrap();
    // An "edited" weight, to be sure the export reads the live tensors.
    model.weights.layers[2].down_proj.f32_mut()[5] = 0.125;
    let bytes = pollster::block_on(export_safetensors(&model, &[("format", "pt")])).unwrap();
    let loaded = load_safetensors(
        &hf_config_json(&model.config).unwrap(),
        &tok.to_json().unwrap(),
        &[("model.safetensors", &bytes)],
    )
    .unwrap();
    assert_eq!(loaded.config.n_layers, c.n_layers);
    assert_eq!(
        &*loaded.weights.layers[2].down_proj.f32(),
        &*model.weights.layers[2].down_proj.f32_decoded()
    );
    assert_eq!(
        &*loaded.weights.embed_tokens.f32(),
        &*model.weights.embed_tokens.f32_decoded()
    );
    let back = Model::upload(CpuBackend, loaded.config, loaded.weights).unwrap();
    let batch = Packed::new(&[tok.encode("The capital of France is").unwrap()]);
    let spec = ForwardSpec {
        logits: LogitRows::Last,
        ..Default::default()
    };
    let a = pollster::block_on(
        model.backend().read(
            model
                .forward(&batch, &spec)
                .unwrap()
                .logits
                .as_ref()
                .unwrap(),
        ),
    )
    .unwrap();
    let b = pollster::block_on(
        back.backend().read(
            back.forward(&batch, &spec)
                .unwrap()
                .logits
                .as_ref()
                .unwrap(),
        ),
    )
    .unwrap();
    assert_eq!(a, b);
}

#[test]
fn gpt2_exports_in_its_own_layout_and_round_trips() {
    // The tiny GPT-2 of tests/data/archs, read from its GGUF (llama.cpp's layout), exported as
    // a Hugging Face GPT-2 (`transformer.h.{l}.…`, `Conv1D` weights `[in][out]`, `c_attn`
    // joined) and read back: the same weights and the same logits.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/archs");
    let loaded = nse::model::load::load_path(&dir.join("gpt2.gguf")).unwrap();
    let tok = loaded.tokenizer;
    let mut model = Model::upload(CpuBackend, loaded.config, loaded.weights).unwrap();
    model.weights.layers[2].down_proj.f32_mut()[5] = 0.125;
    let bytes = pollster::block_on(export_safetensors(&model, &[])).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let d = model.config.d_model;
    assert_eq!(
        st.tensor("transformer.h.2.attn.c_attn.weight")
            .unwrap()
            .shape(),
        [d, 3 * d]
    );
    assert_eq!(
        st.tensor("transformer.h.2.mlp.c_proj.weight")
            .unwrap()
            .shape(),
        [model.config.d_ff, d]
    );
    let back = load_safetensors(
        &hf_config_json(&model.config).unwrap(),
        &tok.to_json().unwrap(),
        &[("model.safetensors", &bytes)],
    )
    .unwrap();
    assert_eq!(back.config, model.config);
    assert_eq!(
        &*back.weights.layers[2].down_proj.f32(),
        &*model.weights.layers[2].down_proj.f32_decoded()
    );
    let back = Model::upload(CpuBackend, back.config, back.weights).unwrap();
    let batch = Packed::new(&[tok.encode("The Eiffel Tower is located in").unwrap()]);
    let spec = ForwardSpec {
        logits: LogitRows::All,
        ..Default::default()
    };
    let logits = |m: &Model<CpuBackend>| {
        let out = m.forward(&batch, &spec).unwrap();
        pollster::block_on(m.backend().read(out.logits.as_ref().unwrap())).unwrap()
    };
    assert_eq!(logits(&model), logits(&back));
}
