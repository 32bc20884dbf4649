// One Adam step of the z optimisation for some requests (`ops::adam::z_adam` is the
// specification), a workgroup per request row i = rows[w]:
//
//   g = grad_i + (coef[i,0] / ‖δ_i‖) · δ_i      (nothing added at δ = 0)
//   m = β₁m + (1 − β₁)g,  v = β₂v + (1 − β₂)g²,  δ −= step · m / (sqrt(v) / bc2_sqrt + ε)
//   δ_i scaled back to coef[i,1] when its norm is larger;  norms[i] = ‖δ_i‖
//
// The norms are workgroup tree sums in f32 (the reference sums in f64).

// Invocations per workgroup; mirrored in Rust as `ops::adam::Z_ADAM_WG`.
const WG: u32 = 64u;
const B1: f32 = 0.9;
const B2: f32 = 0.999;
const EPS: f32 = 1e-8;

struct Params {
    n_rows: u32, // R: workgroups
    d: u32,
    step: f32,
    bc2_sqrt: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> delta: array<f32>; // (N, d)
@group(0) @binding(2) var<storage, read_write> m: array<f32>;     // (N, d)
@group(0) @binding(3) var<storage, read_write> v: array<f32>;     // (N, d)
@group(0) @binding(4) var<storage, read> grad: array<f32>;        // (N, d)
@group(0) @binding(5) var<storage, read> rows: array<u32>;        // (R)
@group(0) @binding(6) var<storage, read> coef: array<f32>;        // (N, 2)
@group(0) @binding(7) var<storage, read_write> norms: array<f32>; // (N)

var<workgroup> partial: array<f32, WG>;

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// ‖δ_i‖ over the workgroup (every invocation gets it). Starts and ends at a barrier.
fn row_norm(base: u32, lid: u32) -> f32 {
    var s = 0.0;
    for (var j = lid; j < p.d; j += WG) {
        let x = delta[base + j];
        s += x * x;
    }
    workgroupBarrier();
    partial[lid] = s;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if lid < half {
            partial[lid] += partial[lid + half];
        }
        workgroupBarrier();
    }
    let n = sqrt(partial[0]);
    workgroupBarrier();
    return n;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = workgroup_index(wid, nwg);
    if w >= p.n_rows {
        return;
    }
    let i = rows[w];
    let base = i * p.d;
    let n0 = row_norm(base, lid);
    var c = 0.0;
    if n0 > 0.0 {
        c = coef[2u * i] / n0;
    }
    for (var j = lid; j < p.d; j += WG) {
        let x = delta[base + j];
        let g = grad[base + j] + c * x;
        let mj = m[base + j] * B1 + g * (1.0 - B1);
        let vj = v[base + j] * B2 + (1.0 - B2) * g * g;
        m[base + j] = mj;
        v[base + j] = vj;
        delta[base + j] = x - p.step * (mj / (sqrt(vj) / p.bc2_sqrt + EPS));
    }
    let n1 = row_norm(base, lid);
    let limit = coef[2u * i + 1u];
    if n1 > limit {
        let scale = limit / n1;
        for (var j = lid; j < p.d; j += WG) {
            delta[base + j] *= scale;
        }
    }
    let n2 = row_norm(base, lid);
    if lid == 0u {
        norms[i] = n2;
    }
}
