// Bias broadcast over rows: `out[r, c] = x[r, c] + b[c]`, one element per invocation (widths
// need not be multiples of 4).

// Invocations per workgroup; mirrored in Rust as `gpu::kernels::elementwise::ADD_BIAS_WG`.
const WG: u32 = 256u;

struct Params {
    n: u32,     // N·C elements
    width: u32, // C
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (N·C)
@group(0) @binding(2) var<storage, read> b: array<f32>;          // (C)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // (N·C)

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
    if i >= p.n {
        return;
    }
    out[i] = x[i] + b[i % p.width];
}
