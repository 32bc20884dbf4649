// LayerNorm `y = x̂ · w + b` with `x̂ = (x − μ) · r`, `μ` the row's mean, `r = 1 / sqrt(var + eps)`
// and `var` the population variance, and its gradient with respect to x (w and b frozen):
// `dx = r · (g − mean(g) − x̂ · mean(g · x̂))` with `g = w · dy`, as `ops::layer_norm`. One
// workgroup per row; each sum is a workgroup tree reduction. The variance is a second pass
// around the mean: the one-pass `E[x²] − μ²` cancels when |μ| is large next to the spread.
//
// Entry points: `forward` (out = y) and `backward` (out = dx).

// Invocations per workgroup (a power of two); mirrored in Rust as
// `gpu::kernels::layer_norm::LAYER_NORM_WG`.
const WG: u32 = 64u;

struct Params {
    rows: u32, // N
    d: u32,    // D
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (N, D)
@group(0) @binding(2) var<storage, read> w: array<f32>;          // (D)
@group(0) @binding(3) var<storage, read> b: array<f32>;          // (D), forward only
@group(0) @binding(4) var<storage, read> dy: array<f32>;         // (N, D), backward only
@group(0) @binding(5) var<storage, read_write> out: array<f32>;  // (N, D)

// Each invocation's partial sums, two at a time (the backward's Σg and Σg·x̂ share a tree).
var<workgroup> partial: array<vec2<f32>, WG>;

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// The sum over the workgroup of every invocation's `v`, returned to all of them. Called in
// uniform control flow only (it holds barriers).
fn workgroup_sum(v: vec2<f32>, lid: u32) -> vec2<f32> {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Every invocation reads the total before the next call overwrites `partial`.
    workgroupBarrier();
    return total;
}

// `(μ, r)` of the row starting at `base`: the mean, then the variance around it.
fn row_stats(base: u32, lid: u32) -> vec2<f32> {
    var s = 0.0;
    for (var c = lid; c < p.d; c += WG) {
        s += x[base + c];
    }
    let mean = workgroup_sum(vec2(s, 0.0), lid).x / f32(p.d);
    var q = 0.0;
    for (var c = lid; c < p.d; c += WG) {
        let dev = x[base + c] - mean;
        q += dev * dev;
    }
    let variance = workgroup_sum(vec2(q, 0.0), lid).x / f32(p.d);
    return vec2(mean, 1.0 / sqrt(variance + p.eps));
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
    let base = row * p.d;
    let stats = row_stats(base, lid);
    for (var c = lid; c < p.d; c += WG) {
        out[base + c] = (x[base + c] - stats.x) * stats.y * w[c] + b[c];
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
    let base = row * p.d;
    let stats = row_stats(base, lid);
    var acc = vec2(0.0);
    for (var c = lid; c < p.d; c += WG) {
        let g = w[c] * dy[base + c];
        let x_hat = (x[base + c] - stats.x) * stats.y;
        acc += vec2(g, g * x_hat);
    }
    // (mean(g), mean(g · x̂))
    let means = workgroup_sum(acc, lid) / f32(p.d);
    for (var c = lid; c < p.d; c += WG) {
        let g = w[c] * dy[base + c];
        let x_hat = (x[base + c] - stats.x) * stats.y;
        out[base + c] = stats.y * (g - means.x - x_hat * means.y);
    }
}
