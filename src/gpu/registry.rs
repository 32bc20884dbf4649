//! The single list of shaders and the pipeline cache.
//!
//! Pipelines use the layout wgpu derives from each entry point, so one file may hold several
//! entry points that bind different subsets of its resources.

use std::collections::HashMap;

use super::GpuBackend;
use super::context::lock;

/// Every WGSL kernel, by name (the file name in `shaders/` without `.wgsl`), with its source.
pub const SHADERS: &[(&str, &str)] = &[
    ("add", include_str!("../../shaders/add.wgsl")),
    ("add_bias", include_str!("../../shaders/add_bias.wgsl")),
    (
        "add_columns",
        include_str!("../../shaders/add_columns.wgsl"),
    ),
    ("add_rows", include_str!("../../shaders/add_rows.wgsl")),
    ("argmax", include_str!("../../shaders/argmax.wgsl")),
    ("attention", include_str!("../../shaders/attention.wgsl")),
    (
        "attention_split",
        include_str!("../../shaders/attention_split.wgsl"),
    ),
    (
        "attention_tiled",
        include_str!("../../shaders/attention_tiled.wgsl"),
    ),
    (
        "attention_backward",
        include_str!("../../shaders/attention_backward.wgsl"),
    ),
    (
        "attention_backward_wg",
        include_str!("../../shaders/attention_backward_wg.wgsl"),
    ),
    ("embedding", include_str!("../../shaders/embedding.wgsl")),
    ("gelu", include_str!("../../shaders/gelu.wgsl")),
    ("gemv", include_str!("../../shaders/gemv.wgsl")),
    ("gemv_fused", include_str!("../../shaders/gemv_fused.wgsl")),
    (
        "gather_rows",
        include_str!("../../shaders/gather_rows.wgsl"),
    ),
    (
        "log_softmax",
        include_str!("../../shaders/log_softmax.wgsl"),
    ),
    ("layer_norm", include_str!("../../shaders/layer_norm.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    (
        "matmul_vec4",
        include_str!("../../shaders/matmul_vec4.wgsl"),
    ),
    ("rms_norm", include_str!("../../shaders/rms_norm.wgsl")),
    ("rope", include_str!("../../shaders/rope.wgsl")),
    (
        "sample_top_k",
        include_str!("../../shaders/sample_top_k.wgsl"),
    ),
    ("silu_mul", include_str!("../../shaders/silu_mul.wgsl")),
    ("split_sum", include_str!("../../shaders/split_sum.wgsl")),
    ("unpack", include_str!("../../shaders/unpack.wgsl")),
    ("z_adam", include_str!("../../shaders/z_adam.wgsl")),
    ("z_loss", include_str!("../../shaders/z_loss.wgsl")),
];

/// WGSL included by shaders: a line `// #include NAME(ARG)` is replaced by the snippet `NAME`
/// with `$W` replaced by `ARG` (WGSL has no includes of its own; module-scope declarations may
/// come in any order, so the snippet goes at the line's place).
pub const INCLUDES: &[(&str, &str)] = &[(
    "weights",
    include_str!("../../shaders/include/weights.wgsl"),
)];

/// The suffix of a shader's subgroup variant (`gemv+subgroups`): its file compiled with its
/// `// #if subgroups` blocks kept (and `enable subgroups;` in the browser) (their `// #else` blocks are the
/// portable variant's). Launchers ask for it only on a device that runs subgroups.
pub const SUBGROUPS: &str = "+subgroups";

/// The shader file behind `name` (a variant's base), and whether `name` is the subgroup variant.
fn base_of(name: &str) -> (&str, bool) {
    match name.strip_suffix(SUBGROUPS) {
        Some(base) => (base, true),
        None => (name, false),
    }
}

/// The source of shader `name` as compiled: its file with every `// #include` expanded and its
/// `// #if subgroups … // #else … // #endif` blocks resolved for the variant; panics for a name
/// not in [`SHADERS`], an unknown include or unbalanced blocks (bugs caught by
/// tests/shaders.rs).
pub fn shader_source(name: &str) -> String {
    let (base, subgroups) = base_of(name);
    let raw = source(base);
    let mut out = String::with_capacity(raw.len() * 2);
    // The browser's WGSL compiler wants the extension enabled; naga (wgpu natively) takes the
    // subgroup builtins as they are and rejects the directive.
    if subgroups && cfg!(target_arch = "wasm32") {
        out.push_str("enable subgroups;\n");
    }
    // Inside an `#if subgroups` block (Some(true)), its `#else` block (Some(false)), or neither.
    let mut block: Option<bool> = None;
    for line in raw.lines() {
        match line.trim() {
            "// #if subgroups" => {
                assert!(block.is_none(), "{name}.wgsl: nested #if");
                block = Some(true);
                continue;
            }
            "// #else" => {
                assert_eq!(block, Some(true), "{name}.wgsl: #else outside #if");
                block = Some(false);
                continue;
            }
            "// #endif" => {
                assert!(block.is_some(), "{name}.wgsl: #endif outside #if");
                block = None;
                continue;
            }
            _ => {}
        }
        if block.is_some_and(|kept_when| kept_when != subgroups) {
            continue;
        }
        match line.trim().strip_prefix("// #include ") {
            Some(call) => {
                let (inc, arg) = call
                    .strip_suffix(')')
                    .and_then(|c| c.split_once('('))
                    .unwrap_or_else(|| panic!("{name}.wgsl: a bad include line `{line}`"));
                let snippet = INCLUDES
                    .iter()
                    .find(|(n, _)| *n == inc)
                    .unwrap_or_else(|| panic!("{name}.wgsl includes an unknown `{inc}`"))
                    .1;
                out.push_str(&snippet.replace("$W", arg.trim()));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    assert!(block.is_none(), "{name}.wgsl: #if without #endif");
    out
}

/// Bytes of workgroup memory each shader declares (all its entry points together), checked
/// against the adapter's `max_compute_workgroup_storage_size` before a dispatch; shaders not
/// listed declare none. `tests/shaders.rs` recomputes the table from the WGSL.
pub const WORKGROUP_BYTES: &[(&str, u32)] = &[
    ("argmax", 1024),
    ("attention_backward_wg", 1552),
    ("attention_split", 6208),
    ("attention_tiled", 8200),
    ("gemv", 8192),
    ("gemv_fused", 10240),
    ("layer_norm", 512),
    ("log_softmax", 512),
    ("rms_norm", 512),
    ("sample_top_k", 1024),
    ("z_adam", 256),
    ("z_loss", 512),
];

/// Bytes of workgroup memory `shader` declares.
pub fn workgroup_bytes(shader: &str) -> u32 {
    let (base, _) = base_of(shader);
    WORKGROUP_BYTES
        .iter()
        .find(|(n, _)| *n == base)
        .map_or(0, |&(_, b)| b)
}

/// The source of shader `name`; panics for a name not in [`SHADERS`] (a bug in a launcher).
fn source(name: &str) -> &'static str {
    SHADERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, src)| *src)
        .unwrap_or_else(|| panic!("shader `{name}` is not in the registry"))
}

/// A pipeline: shader, entry point, override constants (as bit patterns, so they hash), and
/// the storage bindings of an explicit layout (`None`: the layout wgpu derives).
type Key = (
    &'static str,
    &'static str,
    Vec<(&'static str, u64)>,
    Option<Vec<u32>>,
);

/// Compiled modules and pipelines, created on first use.
#[derive(Default)]
pub(crate) struct Pipelines {
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    pipelines: HashMap<Key, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>,
}

/// The storage bindings that `source` declares `read_write` (every other one is read-only).
fn read_write_bindings(source: &str) -> Vec<u32> {
    source
        .lines()
        .filter(|l| l.contains("var<storage, read_write>"))
        .filter_map(|l| {
            let rest = &l[l.find("@binding(")? + "@binding(".len()..];
            rest[..rest.find(')')?].trim().parse().ok()
        })
        .collect()
}

impl GpuBackend {
    /// The pipeline for `shader`'s `entry` with `overrides`, and its bind group layout.
    ///
    /// With `storage`, the layout is explicit: binding 0 a uniform block bound with a dynamic
    /// offset, then those storage bindings (read-only unless the shader declares them
    /// `read_write`). Without, it is the layout wgpu derives from the entry point.
    pub(crate) fn pipeline(
        &self,
        shader: &'static str,
        entry: &'static str,
        overrides: &[(&'static str, f64)],
        storage: Option<&[u32]>,
    ) -> (wgpu::ComputePipeline, wgpu::BindGroupLayout) {
        let key: Key = (
            shader,
            entry,
            overrides.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
            storage.map(<[u32]>::to_vec),
        );
        let mut cache = lock(&self.ctx.pipelines);
        if let Some(found) = cache.pipelines.get(&key) {
            return found.clone();
        }
        let device = &self.ctx.device;
        let module = cache
            .modules
            .entry(shader)
            .or_insert_with(|| {
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(shader),
                    source: wgpu::ShaderSource::Wgsl(shader_source(shader).into()),
                })
            })
            .clone();
        let explicit = storage.map(|bindings| {
            let writable = read_write_bindings(source(base_of(shader).0));
            let mut entries = vec![wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: None,
                },
                count: None,
            }];
            entries.extend(bindings.iter().map(|&b| wgpu::BindGroupLayoutEntry {
                binding: b,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: !writable.contains(&b),
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }));
            let group = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(entry),
                entries: &entries,
            });
            let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &[Some(&group)],
                immediate_size: 0,
            });
            (group, layout)
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: explicit.as_ref().map(|(_, l)| l),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: overrides,
                // Every kernel writes its workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let layout = match explicit {
            Some((group, _)) => group,
            None => pipeline.get_bind_group_layout(0),
        };
        cache
            .pipelines
            .insert(key, (pipeline.clone(), layout.clone()));
        (pipeline, layout)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn read_write_bindings_are_found() {
        let src = "@group(0) @binding(1) var<storage, read> a: array<f32>;\n\
                   @group(0) @binding(3) var<storage, read_write> c: array<f32>;\n\
                   @group(0) @binding(12) var<storage, read_write> d: array<u32>;";
        assert_eq!(super::read_write_bindings(src), vec![3, 12]);
    }
}
