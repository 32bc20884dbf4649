// RMSNorm `y = x · r · w` with `r = 1 / sqrt(mean(x²) + eps)`, and its gradient with respect to
// x: `dx_j = r·w_j·dy_j − r³·x_j·(Σ_i w_i·dy_i·x_i) / D`. One workgroup per row; the sums are a
// workgroup tree reduction.
//
// Entry points: `forward` (out = y) and `backward` (out = dx).

// Invocations per workgroup (a power of two); mirrored in Rust as `ops::rms_norm::RMS_NORM_WG`.
const WG: u32 = 64u;

struct Params {
    rows: u32, // N
    d: u32,    // D
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (N, D)
@group(0) @binding(2) var<storage, read> w: array<f32>;          // (D)
@group(0) @binding(3) var<storage, read> dy: array<f32>;         // (N, D), backward only
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // (N, D)

var<workgroup> sum_sq: array<f32, WG>;
var<workgroup> sum_dot: array<f32, WG>;

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
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
    var s = 0.0;
    for (var c = lid; c < p.d; c += WG) {
        let v = x[base + c];
        s += v * v;
    }
    sum_sq[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            sum_sq[lid] += sum_sq[lid + stride];
        }
        workgroupBarrier();
    }
    let r = 1.0 / sqrt(sum_sq[0] / f32(p.d) + p.eps);
    for (var c = lid; c < p.d; c += WG) {
        out[base + c] = w[c] * (x[base + c] * r);
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
    var s = 0.0;
    var t = 0.0;
    for (var c = lid; c < p.d; c += WG) {
        let v = x[base + c];
        s += v * v;
        t += w[c] * dy[base + c] * v;
    }
    sum_sq[lid] = s;
    sum_dot[lid] = t;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            sum_sq[lid] += sum_sq[lid + stride];
            sum_dot[lid] += sum_dot[lid + stride];
        }
        workgroupBarrier();
    }
    let r = 1.0 / sqrt(sum_sq[0] / f32(p.d) + p.eps);
    let k = r * r * r * sum_dot[0] / f32(p.d);
    for (var c = lid; c < p.d; c += WG) {
        out[base + c] = r * (w[c] * dy[base + c]) - k * x[base + c];
    }
}
