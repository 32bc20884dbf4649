// Row gather `out[r, :] = x[rows[r], :]`, one element per invocation.
//
// A row index outside `x` (a caller bug) yields a zero row rather than a wild read.

// Invocations per workgroup; mirrored in Rust as `ops::rows::GATHER_ROWS_WG`.
const WG: u32 = 256u;

struct Params {
    len: u32,    // R·D output elements
    d: u32,      // row width D
    n_rows: u32, // rows N of x
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (N, D)
@group(0) @binding(2) var<storage, read> rows: array<u32>;       // (R)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // (R, D)

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
    let row = rows[e / p.d];
    var value = 0.0;
    if row < p.n_rows {
        value = x[row * p.d + e % p.d];
    }
    out[e] = value;
}
