// Gradients of `attention`: Nq query rows, each attending to its own range of the Nk key rows
// (any ranges). No float atomics exist, so two passes each own their outputs:
//
// `dq`  — one invocation per (row i, query head h). A first walk over the keys gets the
//         log-sum-exp `lse` and `delta = Σ_j p_j dp_j` (online, running max); a second gets
//         `dq = scale Σ_j p_j (dp_j − delta) k_j`. `(lse, delta)` go to `stats` for pass two.
// `dkv` — one invocation per (key row j, kv head g). It walks every query i whose range holds
//         j, and the query heads of group g, recomputing
//         `p = exp(q_i·k_j·scale − lse)`: `dk_j = scale Σ p (dp − delta) q_i`, `dv_j = Σ p dout_i`.
//
// with `dp_j = dout_i · v_j`. Run `dq` before `dkv`.

// Invocations per workgroup; mirrored in Rust as `ops::attention::ATTENTION_WG`.
const WG: u32 = 64u;
// Widest head the private accumulators hold; mirrored in Rust as
// `ops::attention::MAX_HEAD_DIM`.
const MAX_HEAD_DIM: u32 = 128u;

struct Params {
    len: u32,      // invocations: Nq·Hq for `dq`, Nk·Hkv for `dkv`
    nq: u32,       // query rows Nq
    nk: u32,       // key rows Nk
    n_heads: u32,  // Hq
    head_dim: u32, // hd
    group: u32,    // Hq / Hkv
    scale: f32,    // 1 / sqrt(hd)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;            // (Nq, Hq·hd)
@group(0) @binding(2) var<storage, read> k: array<f32>;            // (Nk, Hkv·hd)
@group(0) @binding(3) var<storage, read> v: array<f32>;            // (Nk, Hkv·hd)
@group(0) @binding(4) var<storage, read> ranges: array<u32>;       // (Nq, 2)
@group(0) @binding(5) var<storage, read> dout: array<f32>;         // (Nq, Hq·hd)
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;  // (Nq, Hq, 2): lse, delta
@group(0) @binding(7) var<storage, read_write> dq: array<f32>;     // (Nq, Hq·hd), `dq` only
@group(0) @binding(8) var<storage, read_write> dk: array<f32>;     // (Nk, Hkv·hd), `dkv` only
@group(0) @binding(9) var<storage, read_write> dv: array<f32>;     // (Nk, Hkv·hd), `dkv` only

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// `a[ao..ao+hd] · b[bo..bo+hd]` for (q, k) and (dout, v).
fn qk(qo: u32, ko: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < p.head_dim; c += 1u) {
        s += q[qo + c] * k[ko + c];
    }
    return s * p.scale;
}

fn dout_v(qo: u32, ko: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < p.head_dim; c += 1u) {
        s += dout[qo + c] * v[ko + c];
    }
    return s;
}

@compute @workgroup_size(WG)
fn dq_pass(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = workgroup_index(wid, nwg) * WG + lid;
    if t >= p.len {
        return;
    }
    let hd = p.head_dim;
    let h = t % p.n_heads;
    let i = t / p.n_heads;
    let kv_width = p.n_heads / p.group * hd;
    let kv_off = h / p.group * hd;
    let qo = t * hd;
    let start = ranges[2u * i];
    let end = min(ranges[2u * i + 1u], p.nk);
    if start >= end {
        for (var c = 0u; c < hd; c += 1u) {
            dq[qo + c] = 0.0;
        }
        stats[2u * t] = 0.0;
        stats[2u * t + 1u] = 0.0;
        return;
    }
    var ko = start * kv_width + kv_off;
    var m = qk(qo, ko);
    var l = 1.0;
    var pd = dout_v(qo, ko);
    for (var j = start + 1u; j < end; j += 1u) {
        ko = j * kv_width + kv_off;
        let s = qk(qo, ko);
        let dp = dout_v(qo, ko);
        if s > m {
            let corr = exp(m - s);
            l = l * corr + 1.0;
            pd = pd * corr + dp;
            m = s;
        } else {
            let e = exp(s - m);
            l += e;
            pd += e * dp;
        }
    }
    let lse = m + log(l);
    let delta = pd / l;
    var acc: array<f32, MAX_HEAD_DIM>;
    for (var c = 0u; c < hd; c += 1u) {
        acc[c] = 0.0;
    }
    for (var j = start; j < end; j += 1u) {
        ko = j * kv_width + kv_off;
        let pj = exp(qk(qo, ko) - lse);
        let ds = pj * (dout_v(qo, ko) - delta) * p.scale;
        for (var c = 0u; c < hd; c += 1u) {
            acc[c] += ds * k[ko + c];
        }
    }
    for (var c = 0u; c < hd; c += 1u) {
        dq[qo + c] = acc[c];
    }
    stats[2u * t] = lse;
    stats[2u * t + 1u] = delta;
}

@compute @workgroup_size(WG)
fn dkv_pass(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = workgroup_index(wid, nwg) * WG + lid;
    if t >= p.len {
        return;
    }
    let hd = p.head_dim;
    let n_kv = p.n_heads / p.group;
    let g = t % n_kv;
    let j = t / n_kv;
    let ko = t * hd; // = j·Hkv·hd + g·hd
    var acc_k: array<f32, MAX_HEAD_DIM>;
    var acc_v: array<f32, MAX_HEAD_DIM>;
    for (var c = 0u; c < hd; c += 1u) {
        acc_k[c] = 0.0;
        acc_v[c] = 0.0;
    }
    for (var i = 0u; i < p.nq; i += 1u) {
        if j < ranges[2u * i] || j >= ranges[2u * i + 1u] {
            continue;
        }
        for (var h = g * p.group; h < (g + 1u) * p.group; h += 1u) {
            let row_head = i * p.n_heads + h;
            let qo = row_head * hd;
            let pj = exp(qk(qo, ko) - stats[2u * row_head]);
            let ds = pj * (dout_v(qo, ko) - stats[2u * row_head + 1u]) * p.scale;
            for (var c = 0u; c < hd; c += 1u) {
                acc_k[c] += ds * q[qo + c];
                acc_v[c] += pj * dout[qo + c];
            }
        }
    }
    for (var c = 0u; c < hd; c += 1u) {
        dk[ko + c] = acc_k[c];
        dv[ko + c] = acc_v[c];
    }
}
