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
/// `// #if subgroups` blocks kept (and `enable subgroups;` in the browser), their `// #else`
/// blocks being the portable variant's. Launchers ask for it only on a device that runs
/// subgroups.
pub const SUBGROUPS: &str = "+subgroups";

/// The suffix of a shader's f16 variant (`gemv+f16`): its `// #if f16` blocks kept, under
/// `enable f16;`. In it every weight binding declared through `// #include weights(…)` holds F16
/// values read as `vec4<f16>` and widened to f32 (exactly), where the portable variant decodes
/// the bits by hand. Launchers ask for it only on a device with shader-f16 and only when every
/// weight the dispatch reads is F16 ([`GpuBackend::variant`]).
pub const F16: &str = "+f16";

/// Every variant a launcher may ask for: a pipeline is keyed by a `&'static str`, so
/// [`GpuBackend::variant`] returns one of these. `tests/shaders.rs` checks that each shader with
/// `#if` blocks has all its variants here, and that each compiles.
pub const VARIANTS: &[&str] = &[
    "embedding+f16",
    "gemv+subgroups",
    "gemv+f16",
    "gemv+subgroups+f16",
    "gemv_fused+subgroups",
    "gemv_fused+f16",
    "gemv_fused+subgroups+f16",
    "matmul_vec4+f16",
    "unpack+f16",
];

/// The variant flags a shader name carries in its suffixes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flags {
    subgroups: bool,
    f16: bool,
}

impl Flags {
    /// Whether the block `// #if NAME` is kept; panics for an unknown name (caught by
    /// tests/shaders.rs).
    fn has(self, name: &str, shader: &str) -> bool {
        match name {
            "subgroups" => self.subgroups,
            "f16" => self.f16,
            _ => panic!("{shader}.wgsl: unknown `#if {name}`"),
        }
    }
}

/// The shader file behind `name` (a variant's base) and its variant's flags.
fn base_of(name: &str) -> (&str, Flags) {
    let mut parts = name.split('+');
    let base = parts.next().unwrap_or(name);
    let mut flags = Flags::default();
    for part in parts {
        match part {
            "subgroups" => flags.subgroups = true,
            "f16" => flags.f16 = true,
            _ => panic!("shader `{name}`: unknown variant `+{part}`"),
        }
    }
    (base, flags)
}

/// Whether shader file `base` has `// #if NAME` blocks (so a variant of that name).
pub fn has_variant(base: &str, name: &str) -> bool {
    let line = format!("// #if {name}");
    expand_includes(base, source(base))
        .iter()
        .any(|l| l.trim() == line)
}

/// The lines of `raw` (shader `name`) with every `// #include NAME(ARG)` line replaced by the
/// snippet `NAME`, `$W` replaced by `ARG`.
fn expand_includes(name: &str, raw: &str) -> Vec<String> {
    let mut out = vec![];
    for line in raw.lines() {
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
                out.extend(snippet.replace("$W", arg.trim()).lines().map(String::from));
            }
            None => out.push(line.to_string()),
        }
    }
    out
}

/// The source of shader `name` as compiled: its file with every `// #include` expanded, then its
/// `// #if NAME … // #else … // #endif` blocks resolved for the variant (`NAME` is `subgroups`
/// or `f16`; blocks do not nest); panics for a name not in [`SHADERS`], an unknown include or
/// flag, or unbalanced blocks (bugs caught by tests/shaders.rs).
pub fn shader_source(name: &str) -> String {
    let (base, flags) = base_of(name);
    let lines = expand_includes(base, source(base));
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 32);
    if flags.f16 {
        out.push_str("enable f16;\n");
    }
    // The browser's WGSL compiler wants the extension enabled; naga (wgpu natively) takes the
    // subgroup builtins as they are and rejects the directive.
    if flags.subgroups && cfg!(target_arch = "wasm32") {
        out.push_str("enable subgroups;\n");
    }
    // Inside an `#if` block whose lines are kept (Some(true)) or dropped (Some(false)), or
    // neither; and whether that is its `#else` half.
    let mut block: Option<bool> = None;
    let mut in_else = false;
    for line in &lines {
        let trimmed = line.trim();
        if let Some(flag) = trimmed.strip_prefix("// #if ") {
            assert!(block.is_none(), "{name}.wgsl: nested #if");
            block = Some(flags.has(flag.trim(), base));
            in_else = false;
            continue;
        }
        match trimmed {
            "// #else" => {
                assert!(
                    block.is_some() && !in_else,
                    "{name}.wgsl: #else outside #if"
                );
                block = block.map(|kept| !kept);
                in_else = true;
                continue;
            }
            "// #endif" => {
                assert!(block.is_some(), "{name}.wgsl: #endif outside #if");
                block = None;
                continue;
            }
            _ => {}
        }
        if block == Some(false) {
            continue;
        }
        out.push_str(line);
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
    /// The variant of shader `base` to launch on this device, one of [`VARIANTS`] or `base`
    /// itself: with subgroup reductions where the device uses them, and reading weights as
    /// `f16` where the device does and every weight the dispatch reads (`weights`, in layouts;
    /// `None`: dense f32) is F16.
    pub fn variant(&self, base: &'static str, weights: &[Option<super::Packing>]) -> &'static str {
        let f16 = self.uses_f16()
            && !weights.is_empty()
            && weights
                .iter()
                .all(|w| w.is_some_and(|w| w.format == super::packed::PackedFormat::F16));
        let subgroups = self.uses_subgroups();
        if !f16 && !subgroups {
            return base;
        }
        let named = |sg: bool, f16: bool| {
            VARIANTS.iter().copied().find(|v| {
                v.strip_prefix(base)
                    .and_then(|rest| rest.strip_prefix(if sg { SUBGROUPS } else { "" }))
                    == Some(if f16 { F16 } else { "" })
            })
        };
        // The wanted flags where the shader has them, else fewer.
        named(subgroups, f16)
            .or_else(|| named(false, f16))
            .or_else(|| named(subgroups, false))
            .unwrap_or(base)
    }

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
