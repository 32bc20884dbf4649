// The z loss's per-row terms and their gradient with respect to log p (spec §4.2), so that
// only the terms come back to the host. One workgroup per row of `logp`:
//
// - a target row (`labels[r] < V`): `values[r] = logp[r, label]`, and `dlogp[r]` is
//   `weights[r]` at the label and 0 elsewhere;
// - a KL row (`labels[r]` = 0xFFFFFFFF), against reference row `refs[kl_rows[r]]`:
//   `values[r] = Σ_v p_v (logp_v − ref_v)` with `p = exp(logp[r])` (a tree sum), and
//   `dlogp[r] = kl_factor · p · (logp − ref + 1)`.

// Invocations per workgroup (a power of two); mirrored in Rust as `kernels::softmax::Z_LOSS_WG`.
const WG: u32 = 128u;
// The label of a KL row.
const KL_ROW: u32 = 0xFFFFFFFFu;

struct Params {
    rows: u32,      // R
    v: u32,         // V
    kl_factor: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logp: array<f32>;         // (R, V)
@group(0) @binding(2) var<storage, read> labels: array<u32>;       // (R)
@group(0) @binding(3) var<storage, read> weights: array<f32>;      // (R)
@group(0) @binding(4) var<storage, read> refs: array<f32>;         // (K, V)
@group(0) @binding(5) var<storage, read> kl_rows: array<u32>;      // (R)
@group(0) @binding(6) var<storage, read_write> dlogp: array<f32>;  // (R, V)
@group(0) @binding(7) var<storage, read_write> values: array<f32>; // (R)

var<workgroup> red: array<f32, WG>;

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
    // Every invocation of a workgroup takes the same branches: barriers stay uniform.
    let row = workgroup_index(wid, nwg);
    if row >= p.rows {
        return;
    }
    let base = row * p.v;
    let label = labels[row];
    if label != KL_ROW {
        let w = weights[row];
        for (var j = lid; j < p.v; j += WG) {
            dlogp[base + j] = select(0.0, w, j == label);
        }
        if lid == 0u {
            values[row] = select(0.0, logp[base + min(label, p.v - 1u)], label < p.v);
        }
        return;
    }
    let rbase = kl_rows[row] * p.v;
    var sum = 0.0;
    for (var j = lid; j < p.v; j += WG) {
        let lp = logp[base + j];
        let pr = exp(lp);
        let diff = lp - refs[rbase + j];
        sum += pr * diff;
        dlogp[base + j] = p.kl_factor * pr * (diff + 1.0);
    }
    red[lid] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            red[lid] += red[lid + stride];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        values[row] = red[0];
    }
}
