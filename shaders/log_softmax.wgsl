// Max-stabilised log-softmax over each row, `logp = x − max − log Σ exp(x − max)`, and its
// gradient `dx = dy − exp(logp) · Σ dy`. One workgroup per row; the max and the sums are
// workgroup tree reductions.
//
// Entry points: `forward` (reads x) and `backward` (reads logp as x, and dy).

// Invocations per workgroup (a power of two); mirrored in Rust as
// `ops::softmax::LOG_SOFTMAX_WG`.
const WG: u32 = 128u;

struct Params {
    rows: u32, // N
    v: u32,    // V (at least 1)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (N, V): logits, or logp
@group(0) @binding(2) var<storage, read> dy: array<f32>;         // (N, V), backward only
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // (N, V)

var<workgroup> red: array<f32, WG>;

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// Tree sum of every invocation's `value`; all invocations get the total.
fn workgroup_sum(lid: u32, value: f32) -> f32 {
    red[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            red[lid] += red[lid + stride];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier(); // everyone has read `red` before it is reused
    return total;
}

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = workgroup_index(wid, nwg);
    if row >= p.rows {
        return;
    }
    let base = row * p.v;
    // Start from an element every invocation has, so no infinity is needed.
    var m = x[base + min(lid, p.v - 1u)];
    for (var j = lid; j < p.v; j += WG) {
        m = max(m, x[base + j]);
    }
    red[lid] = m;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            red[lid] = max(red[lid], red[lid + stride]);
        }
        workgroupBarrier();
    }
    let row_max = red[0];
    workgroupBarrier();
    var s = 0.0;
    for (var j = lid; j < p.v; j += WG) {
        s += exp(x[base + j] - row_max);
    }
    let lse = row_max + log(workgroup_sum(lid, s));
    for (var j = lid; j < p.v; j += WG) {
        out[base + j] = x[base + j] - lse;
    }
}

@compute @workgroup_size(WG)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = workgroup_index(wid, nwg);
    if row >= p.rows {
        return;
    }
    let base = row * p.v;
    var s = 0.0;
    for (var j = lid; j < p.v; j += WG) {
        s += dy[base + j];
    }
    let total = workgroup_sum(lid, s);
    for (var j = lid; j < p.v; j += WG) {
        out[base + j] = dy[base + j] - exp(x[base + j]) * total;
    }
}
