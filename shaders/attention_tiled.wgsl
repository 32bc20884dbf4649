// Softmax attention with grouped KV heads over explicit per-query key ranges, for many query
// rows at once (prefill, and the z optimisation's recomputed rows). The launcher picks it over
// `attention_split.wgsl` from `TILED_MIN_ROWS` query rows on.
//
// One workgroup per (tile of consecutive query rows, KV head g, batch of up to GMAX of g's query
// heads); invocation t takes query row `tile · tq + t / nh` and head `t % nh` of the batch
// (`tq = WG / min(group, GMAX)` rows per tile). The workgroup walks the union of its rows' key
// ranges in tiles of TK keys: a tile's keys are loaded once into workgroup memory for every row
// and head of the workgroup, each invocation scores them, then the tile's values replace them
// and each invocation folds the keys inside its own range into its running softmax. Key and
// value rows are read from global memory once per workgroup, not once per query row as in
// `attention_split.wgsl`, whose partial buffers (Nq · Hq · Nk / 64 · hd floats) would also grow
// past any binding limit for a long prompt.
//
// The walk is cut into passes of CH keys, one dispatch each (`step` of `passes`), that keep each
// row's state (running max and sum in `ml`, the unnormalised output in `out`) in global memory
// between them: an invocation never loops more than a few ten thousand times. lavapipe's
// compiler (llvmpipe) ends any loop after 65,535 iterations, counting those of the loops inside
// it, without an error; a walk over 500 keys of width 64 in one loop passes that. The last pass
// normalises.
//
// Per query row and head, the keys are visited in order with an online softmax written without
// data-dependent branches: a key outside the row's range leaves the state as it was.
//
// An empty or out-of-range key range (a caller bug) yields a zero output row.

// Invocations per workgroup; mirrored in Rust as `ATTENTION_WG`.
const WG: u32 = 64u;
// Keys per tile in workgroup memory; mirrored in Rust as `TILED_KEYS`.
const TK: u32 = 16u;
// Keys per pass (a multiple of TK); mirrored in Rust as `TILED_PASS_KEYS`.
const CH: u32 = 128u;
// Query heads per workgroup; mirrored in Rust as `SPLIT_HEADS`.
const GMAX: u32 = 8u;
// Widest head; mirrored in Rust as `MAX_HEAD_DIM`.
const MAX_HEAD_DIM: u32 = 128u;
// Below every score.
const LOWEST: f32 = -3.0e38;

struct Params {
    nq: u32,       // query rows Nq
    nk: u32,       // key rows Nk
    n_heads: u32,  // Hq
    head_dim: u32, // hd
    group: u32,    // Hq / Hkv
    scale: f32,    // 1 / sqrt(hd)
    batches: u32,  // head batches per KV head: ceil(group / GMAX)
    tq: u32,       // query rows per tile: WG / min(group, GMAX)
    total: u32,    // workgroups
    step: u32,     // this pass: keys lo + step · CH .. lo + (step + 1) · CH of each tile
    passes: u32,   // ceil(Nk / CH)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;          // (Nq, Hq·hd)
@group(0) @binding(2) var<storage, read> k: array<f32>;          // (Nk, Hkv·hd)
@group(0) @binding(3) var<storage, read> v: array<f32>;          // (Nk, Hkv·hd)
@group(0) @binding(4) var<storage, read> ranges: array<u32>;     // (Nq, 2): key range of row i
@group(0) @binding(5) var<storage, read_write> out: array<f32>;  // (Nq, Hq·hd)
@group(0) @binding(6) var<storage, read_write> ml: array<f32>;   // (Nq, Hq, 2): max, sum

var<workgroup> tile_kv: array<f32, 2048>;  // TK · MAX_HEAD_DIM: a tile's keys, then its values
var<workgroup> span_lo: u32;               // the union of the tile rows' key ranges
var<workgroup> span_hi: u32;

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
    // Every invocation of a workgroup takes the same branches around the barriers.
    let w = workgroup_index(wid, nwg);
    if w >= p.total {
        return;
    }
    let hd = p.head_dim;
    let n_kv = p.n_heads / p.group;
    let b = w % p.batches;
    let g = (w / p.batches) % n_kv;
    let tile = w / p.batches / n_kv;
    let nh = min(GMAX, p.group - b * GMAX);
    let r = lid / nh;
    let i = tile * p.tq + r;
    let h = g * p.group + b * GMAX + lid % nh;
    let live = r < p.tq && i < p.nq;

    if lid == 0u {
        var lo = 0xffffffffu;
        var hi = 0u;
        for (var rr = 0u; rr < p.tq; rr += 1u) {
            let ii = tile * p.tq + rr;
            if ii < p.nq {
                let s0 = ranges[2u * ii];
                let e0 = min(ranges[2u * ii + 1u], p.nk);
                if s0 < e0 {
                    lo = min(lo, s0);
                    hi = max(hi, e0);
                }
            }
        }
        span_lo = lo;
        span_hi = hi;
    }
    let lo = workgroupUniformLoad(&span_lo);
    let hi = workgroupUniformLoad(&span_hi);
    // This pass's keys; a tile whose rows need fewer passes has nothing to do until the last,
    // which normalises.
    var j_from = hi;
    if lo < hi && (hi - lo - 1u) / CH >= p.step {
        j_from = lo + p.step * CH;
    }
    let j_to = min(hi, j_from + CH);
    let first = p.step == 0u;
    let last = p.step + 1u == p.passes;
    if j_from >= j_to && !first && !last {
        return;
    }

    var start = 0u;
    var end = 0u;
    let qo = (i * p.n_heads + h) * hd;
    let so = 2u * (i * p.n_heads + h);
    var qv: array<f32, MAX_HEAD_DIM>;
    var acc: array<f32, MAX_HEAD_DIM>;
    var m = LOWEST;
    var l = 0.0;
    if live {
        start = ranges[2u * i];
        end = min(ranges[2u * i + 1u], p.nk);
        for (var c = 0u; c < hd; c += 1u) {
            qv[c] = q[qo + c];
        }
        if !first {
            m = ml[so];
            l = ml[so + 1u];
            for (var c = 0u; c < hd; c += 1u) {
                acc[c] = out[qo + c];
            }
        }
    }
    let kv_width = n_kv * hd;
    var sc: array<f32, TK>;
    for (var j0 = j_from; j0 < j_to; j0 += TK) {
        let n = min(TK, j_to - j0);
        for (var t = lid; t < n * hd; t += WG) {
            tile_kv[(t / hd) * MAX_HEAD_DIM + t % hd] = k[(j0 + t / hd) * kv_width + g * hd + t % hd];
        }
        workgroupBarrier();
        for (var jj = 0u; jj < n; jj += 1u) {
            var s = 0.0;
            for (var c = 0u; c < hd; c += 1u) {
                s += qv[c] * tile_kv[jj * MAX_HEAD_DIM + c];
            }
            sc[jj] = s * p.scale;
        }
        workgroupBarrier();
        for (var t = lid; t < n * hd; t += WG) {
            tile_kv[(t / hd) * MAX_HEAD_DIM + t % hd] = v[(j0 + t / hd) * kv_width + g * hd + t % hd];
        }
        workgroupBarrier();
        for (var jj = 0u; jj < n; jj += 1u) {
            let j = j0 + jj;
            let inside = j >= start && j < end;
            let m_new = select(m, max(m, sc[jj]), inside);
            let corr = exp(m - m_new);
            let e = select(0.0, exp(sc[jj] - m_new), inside);
            l = l * corr + e;
            let vo = jj * MAX_HEAD_DIM;
            for (var c = 0u; c < hd; c += 1u) {
                acc[c] = acc[c] * corr + e * tile_kv[vo + c];
            }
            m = m_new;
        }
        workgroupBarrier();
    }
    if !live {
        return;
    }
    if last {
        let inv = select(0.0, 1.0 / l, l > 0.0);
        for (var c = 0u; c < hd; c += 1u) {
            out[qo + c] = acc[c] * inv;
        }
    } else {
        ml[so] = m;
        ml[so + 1u] = l;
        for (var c = 0u; c < hd; c += 1u) {
            out[qo + c] = acc[c];
        }
    }
}
