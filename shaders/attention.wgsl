// Softmax attention with grouped KV heads over explicit per-query key ranges. One invocation
// per (query row i, query head h): it walks the keys `ranges[i].0 .. ranges[i].1` of kv head
// `g = h / group` once, with an online (running-max) softmax, and accumulates `Σ_j p_j v_j` in a
// private array.
//
// An empty or out-of-range key range (a caller bug) yields a zero output row.

// Invocations per workgroup; mirrored in Rust as `ops::attention::ATTENTION_WG`.
const WG: u32 = 64u;
// Widest head the private accumulator holds; mirrored in Rust as
// `ops::attention::MAX_HEAD_DIM`.
const MAX_HEAD_DIM: u32 = 128u;

struct Params {
    len: u32,      // Nq·Hq (row, head) pairs
    nk: u32,       // key rows Nk
    n_heads: u32,  // Hq
    head_dim: u32, // hd
    group: u32,    // Hq / Hkv
    scale: f32,    // 1 / sqrt(hd)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;          // (Nq, Hq·hd)
@group(0) @binding(2) var<storage, read> k: array<f32>;          // (Nk, Hkv·hd)
@group(0) @binding(3) var<storage, read> v: array<f32>;          // (Nk, Hkv·hd)
@group(0) @binding(4) var<storage, read> ranges: array<u32>;     // (Nq, 2): key range of row i
@group(0) @binding(5) var<storage, read_write> out: array<f32>;  // (Nq, Hq·hd)

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// `q[qo..qo+hd] · k[ko..ko+hd] · scale`.
fn score(qo: u32, ko: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < p.head_dim; c += 1u) {
        s += q[qo + c] * k[ko + c];
    }
    return s * p.scale;
}

@compute @workgroup_size(WG)
fn main(
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
    let qo = t * hd; // = i·Hq·hd + h·hd
    let start = ranges[2u * i];
    let end = min(ranges[2u * i + 1u], p.nk);
    if start >= end {
        for (var c = 0u; c < hd; c += 1u) {
            out[qo + c] = 0.0;
        }
        return;
    }
    // The first key sets the running max, so no infinity is needed.
    var acc: array<f32, MAX_HEAD_DIM>;
    var ko = start * kv_width + kv_off;
    var m = score(qo, ko);
    var l = 1.0;
    for (var c = 0u; c < hd; c += 1u) {
        acc[c] = v[ko + c];
    }
    for (var j = start + 1u; j < end; j += 1u) {
        ko = j * kv_width + kv_off;
        let s = score(qo, ko);
        if s > m {
            let corr = exp(m - s);
            l = l * corr + 1.0;
            for (var c = 0u; c < hd; c += 1u) {
                acc[c] = acc[c] * corr + v[ko + c];
            }
            m = s;
        } else {
            let e = exp(s - m);
            l += e;
            for (var c = 0u; c < hd; c += 1u) {
                acc[c] += e * v[ko + c];
            }
        }
    }
    let inv = 1.0 / l;
    for (var c = 0u; c < hd; c += 1u) {
        out[qo + c] = acc[c] * inv;
    }
}
