//! CPU-only checks of the WGSL kernels: every shader in the registry parses and validates with
//! naga, every `shaders/*.wgsl` file is registered (with the same text), and the workgroup sizes
//! and array bounds the Rust launchers assume match the shaders' constants.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeSet;

use naga::valid::{Capabilities, ValidationFlags, Validator};
use nse::gpu::kernels::{
    attention, elementwise, embedding, layer_norm, matmul, rms_norm, rope, rows, softmax, unpack,
};
use nse::gpu::{F16, INCLUDES, SHADERS, SUBGROUPS, VARIANTS, has_variant, shader_source};

fn parse(name: &str, src: &str) -> naga::Module {
    naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(src)))
}

/// Validates `name` (a shader or one of its variants) as a device with the variant's features
/// compiles it.
fn validate(name: &str) {
    let src = &shader_source(name);
    let module = parse(name, src);
    assert!(
        !module.entry_points.is_empty(),
        "{name}.wgsl has no entry point"
    );
    let mut caps = Capabilities::empty();
    caps.set(Capabilities::SUBGROUP, name.contains(SUBGROUPS));
    caps.set(Capabilities::SHADER_FLOAT16, name.contains(F16));
    Validator::new(ValidationFlags::all(), caps)
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(naga::valid::SubgroupOperationSet::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
}

#[test]
fn every_registered_shader_and_variant_parses_and_validates() {
    assert!(!SHADERS.is_empty());
    let mut listed = BTreeSet::new();
    for (name, _) in SHADERS {
        validate(name);
        // Each combination of the variants the shader has is listed and compiles.
        let flags: Vec<&str> = [SUBGROUPS, F16]
            .into_iter()
            .filter(|f| has_variant(name, &f[1..]))
            .collect();
        for mask in 1..1usize << flags.len() {
            let suffix: String = (0..flags.len())
                .filter(|i| mask >> i & 1 == 1)
                .map(|i| flags[i])
                .collect();
            let variant = format!("{name}{suffix}");
            assert!(
                VARIANTS.contains(&variant.as_str()),
                "{variant} is not in gpu::VARIANTS"
            );
            validate(&variant);
            listed.insert(variant);
        }
    }
    let all: BTreeSet<String> = VARIANTS.iter().map(|v| v.to_string()).collect();
    assert_eq!(all, listed, "gpu::VARIANTS vs the shaders' #if blocks");
    // Every shader that decodes weights reads F16 ones as f16 where the device can.
    for (name, src) in SHADERS {
        assert_eq!(
            src.contains("// #include weights("),
            VARIANTS.contains(&format!("{name}{F16}").as_str()),
            "{name}: an f16 variant exactly where it decodes weights"
        );
    }
    assert_eq!(
        VARIANTS.iter().filter(|v| v.contains(SUBGROUPS)).count(),
        4,
        "gemv and gemv_fused have subgroup variants, with and without f16"
    );
}

#[test]
fn variant_sources_keep_their_own_blocks() {
    // The portable source has neither the subgroup builtins nor f16; each variant has its own.
    for name in ["gemv", "gemv_fused"] {
        let portable = shader_source(name);
        assert!(!portable.contains("subgroupAdd") && !portable.contains("<f16>"));
        let sg = shader_source(&format!("{name}{SUBGROUPS}"));
        assert!(
            sg.contains("subgroupAdd") && !sg.contains("<f16>"),
            "{name}"
        );
        let f16 = shader_source(&format!("{name}{F16}"));
        assert!(
            f16.starts_with("enable f16;") && f16.contains("vec4<f16>"),
            "{name}"
        );
        assert!(!f16.contains("subgroupAdd"), "{name}");
        let both = shader_source(&format!("{name}{SUBGROUPS}{F16}"));
        assert!(
            both.contains("subgroupAdd") && both.contains("vec4<f16>"),
            "{name}"
        );
    }
}

#[test]
fn every_shader_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let registered = SHADERS.iter().find(|(n, _)| *n == name);
            assert_eq!(
                registered.map(|(_, src)| *src),
                Some(text.as_str()),
                "{name}.wgsl is not in the registry as is"
            );
            on_disk.insert(name);
        }
    }
    let registered: BTreeSet<String> = SHADERS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(registered, on_disk, "registry vs shaders/*.wgsl");
}

#[test]
fn every_include_file_is_registered_and_used() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders/include");
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let registered = INCLUDES.iter().find(|(n, _)| *n == name);
        assert_eq!(
            registered.map(|(_, src)| *src),
            Some(text.as_str()),
            "include/{name}.wgsl is not in the registry as is"
        );
        assert!(
            SHADERS
                .iter()
                .any(|(_, src)| src.contains(&format!("// #include {name}("))),
            "include/{name}.wgsl is included by no shader"
        );
        on_disk.insert(name);
    }
    let registered: BTreeSet<String> = INCLUDES.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(registered, on_disk, "INCLUDES vs shaders/include/");
}

/// The value of the u32 `const` named `name` in `module`.
fn const_u32(module: &naga::Module, shader: &str, name: &str) -> u32 {
    let (_, c) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{shader}.wgsl has no const {name}"));
    match module.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v,
        ref e => panic!("{shader}.wgsl: const {name} is {e:?}, expected a u32 literal"),
    }
}

#[test]
fn launcher_constants_mirror_the_shaders() {
    let wg = [
        ("add", elementwise::ADD_WG),
        ("add_bias", elementwise::ADD_BIAS_WG),
        ("silu_mul", elementwise::SILU_MUL_WG),
        ("gelu", elementwise::GELU_WG),
        ("embedding", embedding::EMBEDDING_WG),
        ("gather_rows", rows::GATHER_ROWS_WG),
        ("add_rows", rows::ADD_ROWS_WG),
        ("add_columns", rows::ADD_COLUMNS_WG),
        ("rope", rope::ROPE_WG),
        ("rms_norm", rms_norm::RMS_NORM_WG),
        ("layer_norm", layer_norm::LAYER_NORM_WG),
        ("log_softmax", softmax::LOG_SOFTMAX_WG),
        ("argmax", softmax::ARGMAX_WG),
        ("sample_top_k", softmax::SAMPLE_TOP_K_WG),
        ("attention", attention::ATTENTION_WG),
        ("attention_backward", attention::ATTENTION_WG),
        ("attention_backward_wg", attention::ATTENTION_WG),
        ("matmul", matmul::MATMUL_WG),
        ("matmul_vec4", matmul::MATMUL_WG),
        ("gemv", matmul::GEMV_WG),
        ("gemv_fused", matmul::GEMV_WG),
        ("split_sum", matmul::SPLIT_SUM_WG),
        ("z_loss", softmax::Z_LOSS_WG),
        ("z_adam", nse::ops::adam::Z_ADAM_WG),
        ("unpack", unpack::UNPACK_WG),
        ("attention_split", attention::ATTENTION_WG),
        ("attention_tiled", attention::ATTENTION_WG),
    ];
    let mut checked = BTreeSet::new();
    for (shader, want) in wg {
        assert!(
            SHADERS.iter().any(|(n, _)| *n == shader),
            "{shader} not registered"
        );
        let module = parse(shader, &shader_source(shader));
        for ep in &module.entry_points {
            let size: u32 = ep.workgroup_size.iter().product();
            assert_eq!(
                size, want,
                "{shader}.wgsl `{}`: workgroup size vs the Rust launcher",
                ep.name
            );
        }
        assert_eq!(
            const_u32(&module, shader, "WG"),
            want,
            "{shader}.wgsl: const WG"
        );
        if shader.starts_with("attention") {
            assert_eq!(
                const_u32(&module, shader, "MAX_HEAD_DIM") as usize,
                attention::MAX_HEAD_DIM,
                "{shader}"
            );
        }
        if shader == "attention_split" {
            let chunk = const_u32(&module, shader, "CHUNK") as usize;
            assert_eq!(chunk, attention::SPLIT_CHUNK, "{shader}: CHUNK");
            assert_eq!(chunk, want as usize, "{shader}: one key per invocation");
            let heads = const_u32(&module, shader, "GMAX") as usize;
            assert_eq!(heads, attention::SPLIT_HEADS, "{shader}: GMAX");
        }
        if shader == "attention_tiled" {
            let keys = const_u32(&module, shader, "TK") as usize;
            assert_eq!(keys, attention::TILED_KEYS, "{shader}: TK");
            let pass = const_u32(&module, shader, "CH") as usize;
            assert_eq!(pass, attention::TILED_PASS_KEYS, "{shader}: CH");
            assert!(pass.is_multiple_of(keys), "{shader}: CH is whole tiles");
            let heads = const_u32(&module, shader, "GMAX") as usize;
            assert_eq!(heads, attention::SPLIT_HEADS, "{shader}: GMAX");
        }
        if shader == "gemv" {
            let cols = const_u32(&module, shader, "COLS") as usize;
            assert_eq!(cols, matmul::GEMV_COLS, "{shader}: COLS");
        }
        if shader.starts_with("gemv") {
            let rows = const_u32(&module, shader, "MAX_M") as usize;
            assert_eq!(rows, matmul::GEMV_MAX_ROWS, "{shader}: MAX_M");
        }
        if shader.starts_with("matmul") {
            assert_eq!(const_u32(&module, shader, "TILE"), matmul::TILE, "{shader}");
            assert_eq!(
                const_u32(&module, shader, "BLOCK"),
                matmul::BLOCK,
                "{shader}"
            );
        }
        checked.insert(shader);
    }
    let all: BTreeSet<&str> = SHADERS.iter().map(|(n, _)| *n).collect();
    assert_eq!(checked, all, "every shader's workgroup size is mirrored");
}

/// Bytes of the workgroup-memory variables of `module` (scalars, and arrays of scalars and
/// vectors).
fn workgroup_memory(module: &naga::Module, shader: &str) -> u32 {
    module
        .global_variables
        .iter()
        .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
        .map(|(_, v)| match module.types[v.ty].inner {
            naga::TypeInner::Array {
                size: naga::ArraySize::Constant(n),
                stride,
                ..
            } => n.get() * stride,
            naga::TypeInner::Scalar(s) => u32::from(s.width),
            ref other => panic!("{shader}.wgsl: workgroup variable of type {other:?}"),
        })
        .sum()
}

#[test]
fn workgroup_memory_table_matches_the_shaders() {
    for (name, _) in SHADERS {
        let bytes = workgroup_memory(&parse(name, &shader_source(name)), name);
        assert_eq!(
            nse::gpu::workgroup_bytes(name),
            bytes,
            "{name}.wgsl declares {bytes} bytes of workgroup memory: update WORKGROUP_BYTES"
        );
        // WebGPU guarantees 16 KiB: every kernel runs on every adapter.
        assert!(bytes <= 16384, "{name}.wgsl: {bytes} bytes");
    }
}
