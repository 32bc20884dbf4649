// Gradients of `attention`, a workgroup per output row: the same two passes as
// `attention_backward.wgsl` (whose header gives the equations), with the work of one
// (row, head) spread over 64 invocations instead of walked by one. The launcher picks it unless
// the baseline design is asked for.
//
// `dq`  — a workgroup per (query row i, head h). q_i and dout_i sit in workgroup memory; the
//         keys go by in chunks of 64, one per invocation, for the scores and dp_j; a second
//         walk gets dq, one output element per invocation (neighbours read neighbouring k).
// `dkv` — a workgroup per (key row j, kv head g). k_j and v_j sit in workgroup memory; the
//         query rows go by in chunks of 64, one per invocation, for each head of the group;
//         then dk_j and dv_j, one output element per invocation.
//
// Run `dq` before `dkv`: it writes the (lse, delta) statistics that `dkv` reads.

// Invocations per workgroup, and keys or query rows per chunk.
const WG: u32 = 64u;
// Widest head; mirrored in Rust as `ops::attention::MAX_HEAD_DIM`.
const MAX_HEAD_DIM: u32 = 128u;
// Below every score.
const LOWEST: f32 = -3.0e38;

struct Params {
    len: u32,      // workgroups: Nq·Hq for `dq`, Nk·Hkv for `dkv`
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

// The row's (or key's) two vectors: q_i and dout_i for `dq`, k_j and v_j for `dkv`.
var<workgroup> a_vec: array<f32, MAX_HEAD_DIM>;
var<workgroup> b_vec: array<f32, MAX_HEAD_DIM>;
// Per chunk entry: the score (or p) and dp (or ds).
var<workgroup> s_buf: array<f32, WG>;
var<workgroup> d_buf: array<f32, WG>;
// Running statistics, written by invocation 0.
var<workgroup> run: array<f32, 4>;

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

@compute @workgroup_size(WG)
fn dq_pass(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Every invocation of a workgroup takes the same branches: barriers stay uniform.
    let t = workgroup_index(wid, nwg);
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
    for (var c = lid; c < hd; c += WG) {
        a_vec[c] = q[qo + c];
        b_vec[c] = dout[qo + c];
    }
    if lid == 0u {
        run[0] = LOWEST; // m
        run[1] = 0.0;    // l
        run[2] = 0.0;    // Σ e^{s − m} dp
    }
    workgroupBarrier();
    // First walk: lse and delta, chunk by chunk (online, running max).
    for (var j0 = start; j0 < end; j0 += WG) {
        let j = j0 + lid;
        var s = LOWEST;
        var dp = 0.0;
        if j < end {
            let ko = j * kv_width + kv_off;
            var acc_s = 0.0;
            for (var c = 0u; c < hd; c += 1u) {
                acc_s += a_vec[c] * k[ko + c];
                dp += b_vec[c] * v[ko + c];
            }
            s = acc_s * p.scale;
        }
        s_buf[lid] = s;
        d_buf[lid] = dp;
        workgroupBarrier();
        if lid == 0u {
            let n = min(end - j0, WG);
            var m = run[0];
            for (var jj = 0u; jj < n; jj += 1u) {
                m = max(m, s_buf[jj]);
            }
            let corr = exp(run[0] - m);
            var l = run[1] * corr;
            var pd = run[2] * corr;
            for (var jj = 0u; jj < n; jj += 1u) {
                let e = exp(s_buf[jj] - m);
                l += e;
                pd += e * d_buf[jj];
            }
            run[0] = m;
            run[1] = l;
            run[2] = pd;
        }
        workgroupBarrier();
    }
    var lse = 0.0;
    var delta = 0.0;
    if start < end {
        lse = run[0] + log(run[1]);
        delta = run[2] / run[1];
    }
    // Second walk: ds_j, then dq = Σ_j ds_j k_j.
    var acc0 = 0.0;
    var acc1 = 0.0;
    for (var j0 = start; j0 < end; j0 += WG) {
        let j = j0 + lid;
        var ds = 0.0;
        if j < end {
            let ko = j * kv_width + kv_off;
            var acc_s = 0.0;
            var dp = 0.0;
            for (var c = 0u; c < hd; c += 1u) {
                acc_s += a_vec[c] * k[ko + c];
                dp += b_vec[c] * v[ko + c];
            }
            ds = exp(acc_s * p.scale - lse) * (dp - delta) * p.scale;
        }
        s_buf[lid] = ds;
        workgroupBarrier();
        let n = min(end - j0, WG);
        for (var jj = 0u; jj < n; jj += 1u) {
            let ko = (j0 + jj) * kv_width + kv_off;
            if lid < hd {
                acc0 += s_buf[jj] * k[ko + lid];
            }
            if lid + WG < hd {
                acc1 += s_buf[jj] * k[ko + lid + WG];
            }
        }
        workgroupBarrier();
    }
    if lid < hd {
        dq[qo + lid] = acc0;
    }
    if lid + WG < hd {
        dq[qo + lid + WG] = acc1;
    }
    if lid == 0u {
        stats[2u * t] = lse;
        stats[2u * t + 1u] = delta;
    }
}

@compute @workgroup_size(WG)
fn dkv_pass(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = workgroup_index(wid, nwg);
    if t >= p.len {
        return;
    }
    let hd = p.head_dim;
    let n_kv = p.n_heads / p.group;
    let g = t % n_kv;
    let j = t / n_kv;
    let ko = t * hd; // = j·Hkv·hd + g·hd
    for (var c = lid; c < hd; c += WG) {
        a_vec[c] = k[ko + c];
        b_vec[c] = v[ko + c];
    }
    workgroupBarrier();
    var k0 = 0.0;
    var k1 = 0.0;
    var v0 = 0.0;
    var v1 = 0.0;
    for (var h = g * p.group; h < (g + 1u) * p.group; h += 1u) {
        for (var i0 = 0u; i0 < p.nq; i0 += WG) {
            // Invocation lid: query row i0 + lid, if its range holds key j.
            let i = i0 + lid;
            var pj = 0.0;
            var ds = 0.0;
            if i < p.nq && j >= ranges[2u * i] && j < min(ranges[2u * i + 1u], p.nk) {
                let row_head = i * p.n_heads + h;
                let qo = row_head * hd;
                var acc_s = 0.0;
                var dp = 0.0;
                for (var c = 0u; c < hd; c += 1u) {
                    acc_s += q[qo + c] * a_vec[c];
                    dp += dout[qo + c] * b_vec[c];
                }
                pj = exp(acc_s * p.scale - stats[2u * row_head]);
                ds = pj * (dp - stats[2u * row_head + 1u]) * p.scale;
            }
            s_buf[lid] = pj;
            d_buf[lid] = ds;
            workgroupBarrier();
            let n = min(p.nq - i0, WG);
            for (var ii = 0u; ii < n; ii += 1u) {
                let pi = s_buf[ii];
                let di = d_buf[ii];
                if pi != 0.0 || di != 0.0 {
                    let qo = ((i0 + ii) * p.n_heads + h) * hd;
                    if lid < hd {
                        k0 += di * q[qo + lid];
                        v0 += pi * dout[qo + lid];
                    }
                    if lid + WG < hd {
                        k1 += di * q[qo + lid + WG];
                        v1 += pi * dout[qo + lid + WG];
                    }
                }
            }
            workgroupBarrier();
        }
    }
    if lid < hd {
        dk[ko + lid] = k0;
        dv[ko + lid] = v0;
    }
    if lid + WG < hd {
        dk[ko + lid + WG] = k1;
        dv[ko + lid + WG] = v1;
    }
}
