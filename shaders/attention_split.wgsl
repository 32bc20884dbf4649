// Softmax attention with grouped KV heads over explicit per-query key ranges, split along the
// keys (flash decoding). The launcher picks it over `attention.wgsl` when hd % 4 = 0.
//
// `split`: one workgroup per (query row i, KV head g, batch of up to GMAX of g's query heads,
// chunk of CHUNK keys counted from the row's range start). Its query heads are held in
// workgroup memory; invocation t scores key j0 + t against all of them, so each key row is read
// once for the whole group of query heads. The chunk's softmax statistics (max m, sum l) and
// unnormalised output Σ_j e^{s_j − m} v_j then go to the partial buffers, or, when the rows
// need a single chunk, the normalised output goes straight to `out`.
//
// `combine`: one invocation per output element merges the chunks of its (row, head):
// M = max m_c, L = Σ l_c e^{m_c − M}, out = Σ o_c e^{m_c − M} / L.
//
// An empty or out-of-range key range (a caller bug) yields a zero output row, as in
// `attention.wgsl`.

// Invocations per workgroup, and keys per chunk (one key per invocation when scoring).
const WG: u32 = 64u;
const CHUNK: u32 = 64u;
// Query heads per workgroup.
const GMAX: u32 = 8u;
// Widest head; mirrored in Rust as `ops::attention::MAX_HEAD_DIM`.
const MAX_HEAD_DIM: u32 = 128u;
// Below every score (an unused key's).
const LOWEST: f32 = -3.0e38;

struct Params {
    nq: u32,       // query rows Nq
    nk: u32,       // key rows Nk
    n_heads: u32,  // Hq
    head_dim: u32, // hd
    group: u32,    // Hq / Hkv
    scale: f32,    // 1 / sqrt(hd)
    chunks: u32,   // chunks per row: ceil(longest range / CHUNK)
    batches: u32,  // head batches per KV head: ceil(group / GMAX)
    total: u32,    // workgroups of `split`, or invocations of `combine`
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;               // (Nq, Hq·hd)
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;         // (Nk, Hkv·hd)
@group(0) @binding(3) var<storage, read> v: array<f32>;               // (Nk, Hkv·hd)
@group(0) @binding(4) var<storage, read> ranges: array<u32>;          // (Nq, 2)
@group(0) @binding(5) var<storage, read_write> out: array<f32>;       // (Nq, Hq·hd)
@group(0) @binding(6) var<storage, read_write> part_o: array<f32>;    // (Nq, Hq, chunks, hd)
@group(0) @binding(7) var<storage, read_write> part_ml: array<f32>;   // (Nq, Hq, chunks, 2)

var<workgroup> qs: array<f32, 1024>;   // GMAX · MAX_HEAD_DIM
var<workgroup> ps: array<f32, 512>;    // GMAX · CHUNK: scores, then e^{s − m}
var<workgroup> stats: array<f32, 16>;  // GMAX · (m, l)

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

@compute @workgroup_size(WG)
fn split(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Every invocation of a workgroup takes the same branches: barriers stay uniform.
    let w = workgroup_index(wid, nwg);
    if w >= p.total {
        return;
    }
    let hd = p.head_dim;
    let n_kv = p.n_heads / p.group;
    let c = w % p.chunks;
    let rest = w / p.chunks;
    let b = rest % p.batches;
    let g = (rest / p.batches) % n_kv;
    let i = rest / p.batches / n_kv;
    let h0 = g * p.group + b * GMAX;
    let nh = min(GMAX, p.group - b * GMAX);
    let start = ranges[2u * i];
    let end = min(ranges[2u * i + 1u], p.nk);
    let j0 = start + c * CHUNK;
    // Keys of this chunk inside the row's range.
    var n_valid = 0u;
    if start < end && j0 < end {
        n_valid = min(end - j0, CHUNK);
    }

    for (var t = lid; t < nh * hd; t += WG) {
        qs[(t / hd) * MAX_HEAD_DIM + t % hd] = q[(i * p.n_heads + h0) * hd + t];
    }
    workgroupBarrier();

    // Scores: invocation lid takes key j0 + lid against the nh query heads.
    let kv_width = n_kv * hd;
    let hd4 = hd / 4u;
    var s: array<f32, GMAX>;
    for (var hl = 0u; hl < GMAX; hl += 1u) {
        s[hl] = 0.0;
    }
    if lid < n_valid {
        let ko = ((j0 + lid) * kv_width + g * hd) / 4u;
        for (var d4 = 0u; d4 < hd4; d4 += 1u) {
            let kk = k[ko + d4];
            for (var hl = 0u; hl < nh; hl += 1u) {
                let qo = hl * MAX_HEAD_DIM + 4u * d4;
                s[hl] += dot(vec4<f32>(qs[qo], qs[qo + 1u], qs[qo + 2u], qs[qo + 3u]), kk);
            }
        }
    }
    for (var hl = 0u; hl < nh; hl += 1u) {
        ps[hl * CHUNK + lid] = select(LOWEST, s[hl] * p.scale, lid < n_valid);
    }
    workgroupBarrier();

    // Each head's max and sum over the chunk.
    if lid < nh {
        var m = LOWEST;
        for (var jj = 0u; jj < n_valid; jj += 1u) {
            m = max(m, ps[lid * CHUNK + jj]);
        }
        var l = 0.0;
        for (var jj = 0u; jj < n_valid; jj += 1u) {
            l += exp(ps[lid * CHUNK + jj] - m);
        }
        stats[2u * lid] = m;
        stats[2u * lid + 1u] = l;
    }
    workgroupBarrier();
    for (var t = lid; t < nh * CHUNK; t += WG) {
        let hl = t / CHUNK;
        ps[t] = select(0.0, exp(ps[t] - stats[2u * hl]), t % CHUNK < n_valid);
    }
    workgroupBarrier();

    // Σ_j e^{s_j − m} v_j, one output element per invocation (neighbours read neighbouring v).
    for (var t = lid; t < nh * hd; t += WG) {
        let hl = t / hd;
        let d = t % hd;
        var acc = 0.0;
        var vo = j0 * kv_width + g * hd + d;
        for (var jj = 0u; jj < n_valid; jj += 1u) {
            acc += ps[hl * CHUNK + jj] * v[vo];
            vo += kv_width;
        }
        let h = h0 + hl;
        if p.chunks == 1u {
            let l = stats[2u * hl + 1u];
            out[(i * p.n_heads + h) * hd + d] = select(0.0, acc / l, l > 0.0);
        } else {
            let pc = (i * p.n_heads + h) * p.chunks + c;
            part_o[pc * hd + d] = acc;
            if d == 0u {
                part_ml[2u * pc] = stats[2u * hl];
                part_ml[2u * pc + 1u] = stats[2u * hl + 1u];
            }
        }
    }
}

@compute @workgroup_size(WG)
fn combine(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = workgroup_index(wid, nwg) * WG + lid;
    if t >= p.total {
        return;
    }
    let hd = p.head_dim;
    let ih = t / hd; // i · Hq + h
    let d = t % hd;
    let base = ih * p.chunks;
    var m = LOWEST;
    for (var c = 0u; c < p.chunks; c += 1u) {
        if part_ml[2u * (base + c) + 1u] > 0.0 {
            m = max(m, part_ml[2u * (base + c)]);
        }
    }
    var l = 0.0;
    var acc = 0.0;
    for (var c = 0u; c < p.chunks; c += 1u) {
        let lc = part_ml[2u * (base + c) + 1u];
        if lc > 0.0 {
            let e = exp(part_ml[2u * (base + c)] - m);
            l += lc * e;
            acc += part_o[(base + c) * hd + d] * e;
        }
    }
    out[t] = select(0.0, acc / l, l > 0.0);
}
