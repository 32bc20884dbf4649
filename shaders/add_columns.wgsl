// In place `w[:, cols[c]] += delta[:, c]`: a column-sparse weight update.
//
// The columns are distinct, so each invocation owns one element of `delta` and its target.

// Invocations per workgroup; mirrored in Rust as `ops::rows::ADD_COLUMNS_WG`.
const WG: u32 = 256u;

struct Params {
    len: u32, // N·C elements of delta
    k: u32,   // row width K of w
    c: u32,   // columns C
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;  // (N, K)
@group(0) @binding(2) var<storage, read> cols: array<u32>;     // (C)
@group(0) @binding(3) var<storage, read> delta: array<f32>;    // (N, C)

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
    let e = workgroup_index(wid, nwg) * WG + lid;
    if e >= p.len {
        return;
    }
    let col = cols[e % p.c];
    if col < p.k {
        let row = e / p.c;
        w[row * p.k + col] += delta[e];
    }
}
