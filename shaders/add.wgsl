// Elementwise sum `out = a + b`, four elements per invocation.
//
// Tensor buffers are padded to whole vec4s, so the last vec4 may cover padding: it is computed
// like the rest and never read as an element.

// Invocations per workgroup; mirrored in Rust as `ops::elementwise::ADD_WG`.
const WG: u32 = 256u;

struct Params {
    n_vec4: u32, // vec4s covering the N·D elements
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;          // (N·D / 4)
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;          // (N·D / 4)
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;  // (N·D / 4)

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = workgroup_index(wid, nwg) * WG + lid;
    if i >= p.n_vec4 {
        return;
    }
    out[i] = a[i] + b[i];
}
