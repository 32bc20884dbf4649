// Index of the largest value of each row, the lowest index on ties. One workgroup per row:
// each invocation scans a strided subset in increasing index order (keeping the first of
// equal values), then a tree reduction keeps the larger value, or the lower index on a tie.

// Invocations per workgroup (a power of two); mirrored in Rust as `ops::softmax::ARGMAX_WG`.
const WG: u32 = 128u;

// "No candidate" index, beaten by any real one.
const NONE: u32 = 0xffffffffu;

struct Params {
    rows: u32, // N
    v: u32,    // V
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (N, V)
@group(0) @binding(2) var<storage, read_write> out: array<u32>;  // (N)

var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// Whether candidate (v2, i2) beats (v1, i1).
fn beats(v2: f32, i2: u32, v1: f32, i1: u32) -> bool {
    return i2 != NONE && (i1 == NONE || v2 > v1 || (v2 == v1 && i2 < i1));
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = workgroup_index(wid, nwg);
    if row >= p.rows {
        return;
    }
    let base = row * p.v;
    var bv = 0.0;
    var bi = NONE;
    for (var j = lid; j < p.v; j += WG) {
        let value = x[base + j];
        if bi == NONE || value > bv {
            bv = value;
            bi = j;
        }
    }
    best_value[lid] = bv;
    best_index[lid] = bi;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lid < stride && beats(best_value[lid + stride], best_index[lid + stride], best_value[lid], best_index[lid]) {
            best_value[lid] = best_value[lid + stride];
            best_index[lid] = best_index[lid + stride];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        out[row] = select(best_index[0], 0u, best_index[0] == NONE);
    }
}
