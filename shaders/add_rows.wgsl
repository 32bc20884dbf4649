// In place `x[rows[r], :] += v[r, :]` for r = 0, 1, … in order.
//
// Rows may repeat, so one invocation owns one column and walks the rows sequentially: no two
// invocations touch the same element, and repeated rows add up in the reference's order.

// Invocations per workgroup; mirrored in Rust as `ops::rows::ADD_ROWS_WG`.
const WG: u32 = 64u;

struct Params {
    d: u32,      // row width D
    n_rows: u32, // rows N of x
    r: u32,      // vectors R
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;  // (N, D)
@group(0) @binding(2) var<storage, read> rows: array<u32>;     // (R)
@group(0) @binding(3) var<storage, read> v: array<f32>;        // (R, D)

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
    let c = workgroup_index(wid, nwg) * WG + lid;
    if c >= p.d {
        return;
    }
    for (var r = 0u; r < p.r; r += 1u) {
        let row = rows[r];
        if row < p.n_rows {
            x[row * p.d + c] += v[r * p.d + c];
        }
    }
}

// `x[rows[r], :] = 0` for every r: the z loop's fixed keys and values with the edited prompts'
// rows cleared.
@compute @workgroup_size(WG)
fn zero(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = workgroup_index(wid, nwg) * WG + lid;
    if c >= p.d {
        return;
    }
    for (var r = 0u; r < p.r; r += 1u) {
        let row = rows[r];
        if row < p.n_rows {
            x[row * p.d + c] = 0.0;
        }
    }
}
