// Decoding's fused products: `gemv.wgsl`'s GEMV (A (M, K) with M ≤ 8 rows times Bᵀ, 64
// invocations striding K in vec4s, a workgroup-memory reduction) with the ops around it folded
// in, so that a transformer block decodes in 4 dispatches plus attention's 2 instead of 14:
//
//   norm_nt      C = rms_norm(A, g) · Bᵀ                          (the final norm and LM head)
//   residual_nt  C = R + A · Bᵀ                                   (o_proj, down_proj)
//   gate_up      C = silu(X · Bᵀ) ⊙ (X · B2ᵀ), X = rms_norm(A, g)   (the MLP's key)
//   qkv          X = rms_norm(A, g); q = rope(X · Bᵀ) into C, k = rope(X · B2ᵀ) and
//                v = X · B3ᵀ into the KV caches at rows pos0 … pos0 + M − 1
//   qkv_bias     qkv with the projections' biases added before RoPE (Qwen2)
//
// Each entry computes the values of the unfused ops (`rms_norm.wgsl`, `gemv.wgsl`, `rope.wgsl`,
// `silu_mul.wgsl`, `add.wgsl`, the cache's row copy) with their formulas, up to rounding: the
// RMSNorm's factor r = 1 / sqrt(mean(a²) + eps) is a scalar per row, so it is taken out of the
// dot products, (r · g ⊙ a) · w = r · ((g ⊙ a) · w), and every workgroup sums a² in the same
// pass over K as the products (no prologue, no extra barrier), then scales its M results by r.
//
// qkv's workgroup owns 2 coordinate pairs of one head, columns {c, c+1, c+hd/2, c+hd/2+1}, so
// that RoPE's rotate-half partners meet in one invocation (hd % 4 = 0); K % 4 = 0 everywhere.

// Invocations per workgroup.
const WG: u32 = 64u;
// The most rows of A.
const MAX_M: u32 = 8u;

// Rows of A (1 ..= 8), a pipeline constant so that the row loops unroll.
override M: u32 = 1u;

struct Params {
    n: u32,        // columns of C (norm_nt, residual_nt, gate_up); q width Hq·hd (qkv)
    k: u32,        // K
    groups: u32,   // workgroups in all
    eps: f32,      // RMSNorm epsilon
    n_kv: u32,     // k and v width Hkv·hd (qkv)
    head_dim: u32, // hd (qkv)
    n_pos: u32,    // rows of the RoPE table (qkv)
    pos0: u32,     // position of A's first row, and its row in the caches (qkv)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;       // (M, K)
@group(0) @binding(2) var<storage, read> b: array<b_words>;       // (N, K), f32 or compact
@group(0) @binding(3) var<storage, read_write> c: array<f32>;       // (M, N)
@group(0) @binding(4) var<storage, read> g: array<vec4<f32>>;       // (K) RMSNorm weight
@group(0) @binding(5) var<storage, read> r: array<f32>;             // (M, N) residual
@group(0) @binding(6) var<storage, read> b2: array<b2_words>;      // up (N, K); k_proj
@group(0) @binding(7) var<storage, read> b3: array<b3_words>;      // v_proj
@group(0) @binding(8) var<storage, read> table: array<f32>;         // (P, hd): cos | sin
@group(0) @binding(9) var<storage, read_write> cache_k: array<f32>; // (capacity, Hkv·hd)
@group(0) @binding(10) var<storage, read_write> cache_v: array<f32>;
@group(0) @binding(11) var<storage, read> bias_q: array<f32>;
@group(0) @binding(12) var<storage, read> bias_k: array<f32>;
@group(0) @binding(13) var<storage, read> bias_v: array<f32>;
// The weights may be kept compact (src/gpu/packed.rs); each is read through its `_at`.
// #include weights(b)
// #include weights(b2)
// #include weights(b3)

// The `i`-th vec4 of `b` (N, K).
fn b_at(i: u32) -> vec4<f32> {
    return b_vec4(4u * i, p.n * p.k);
}

// The `i`-th vec4 of `b2`, which holds `len` values (up (N, K); k_proj (Hkv·hd, K)).
fn b2_at(i: u32, len: u32) -> vec4<f32> {
    return b2_vec4(4u * i, len);
}

// The `i`-th vec4 of `b3` (v_proj (Hkv·hd, K)).
fn b3_at(i: u32) -> vec4<f32> {
    return b3_vec4(4u * i, p.n_kv * p.k);
}

// Partial sums: one vec4 per row of A per invocation, and the row's sum of squares.
var<workgroup> partial: array<vec4<f32>, 512>; // MAX_M · WG
var<workgroup> partial_sq: array<f32, 512>; // MAX_M · WG

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// #if subgroups
// This invocation's subgroup: (lane, size), set first thing by every entry point.
var<private> sg: vec2<u32>;
// #endif

// Adds the WG partial sums of each row, partial[i · WG + lid] and partial_sq[i · WG + lid], for
// `total` and `total_sq`. Starts and ends at a barrier.
fn reduce(lid: u32) {
    workgroupBarrier();
// #if subgroups
    // A subgroupAdd of this invocation's own sums, then (once every invocation has read its
    // own) lane 0 of the g-th subgroup writes the subgroup's sums at g. Subgroups are taken to be
    // runs of consecutive invocations, as implementations form them for a 1-D workgroup;
    // the backend checks it on the device before it uses this variant.
    var s: array<vec4<f32>, MAX_M>;
    var q: array<f32, MAX_M>;
    for (var i = 0u; i < M; i += 1u) {
        s[i] = subgroupAdd(partial[i * WG + lid]);
        q[i] = subgroupAdd(partial_sq[i * WG + lid]);
    }
    workgroupBarrier();
    if sg.x == 0u {
        for (var i = 0u; i < M; i += 1u) {
            partial[i * WG + lid / sg.y] = s[i];
            partial_sq[i * WG + lid / sg.y] = q[i];
        }
    }
    workgroupBarrier();
// #else
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if lid < half {
            for (var i = 0u; i < M; i += 1u) {
                partial[i * WG + lid] += partial[i * WG + lid + half];
                partial_sq[i * WG + lid] += partial_sq[i * WG + lid + half];
            }
        }
        workgroupBarrier();
    }
// #endif
}

// Partial sums per row after `reduce`: 1, or one per subgroup.
fn sums_per_row() -> u32 {
// #if subgroups
    return max(WG / sg.y, 1u);
// #else
    return 1u;
// #endif
}

// Row i's products summed over the workgroup (after `reduce`).
fn total(i: u32) -> vec4<f32> {
    var t = partial[i * WG];
    for (var g = 1u; g < sums_per_row(); g += 1u) {
        t += partial[i * WG + g];
    }
    return t;
}

// Row i's sum of squares over the workgroup (after `reduce`).
fn total_sq(i: u32) -> f32 {
    var t = partial_sq[i * WG];
    for (var g = 1u; g < sums_per_row(); g += 1u) {
        t += partial_sq[i * WG + g];
    }
    return t;
}

// Row i's reduced products times its RMSNorm factor 1 / sqrt(mean(a_i²) + eps).
fn normed_sums(i: u32) -> vec4<f32> {
    return total(i) * (1.0 / sqrt(total_sq(i) / f32(p.k) + p.eps));
}

// The dot products of the rows of g ⊙ A with 4 rows of `b` (row offsets in vec4s), and the
// rows' sums of squares, reduced into partial[i · WG] and partial_sq[i · WG].
fn dots_b(lid: u32, r0: u32, r1: u32, r2: u32, r3: u32) {
    let k4 = p.k / 4u;
    var acc: array<vec4<f32>, MAX_M>;
    var sq: array<f32, MAX_M>;
    for (var i = 0u; i < M; i += 1u) {
        acc[i] = vec4<f32>(0.0);
        sq[i] = 0.0;
    }
    for (var kk = lid; kk < k4; kk += WG) {
        let w0 = b_at(r0 + kk);
        let w1 = b_at(r1 + kk);
        let w2 = b_at(r2 + kk);
        let w3 = b_at(r3 + kk);
        let gk = g[kk];
        for (var i = 0u; i < M; i += 1u) {
            let h = a[i * k4 + kk];
            let x = gk * h;
            acc[i] += vec4<f32>(dot(x, w0), dot(x, w1), dot(x, w2), dot(x, w3));
            sq[i] += dot(h, h);
        }
    }
    for (var i = 0u; i < M; i += 1u) {
        partial[i * WG + lid] = acc[i];
        partial_sq[i * WG + lid] = sq[i];
    }
    reduce(lid);
}

// The same with `b2`. (Three copies: WGSL cannot pass a storage array to a function, and a
// uniform branch on the matrix in the inner loop is not what the H200 figures measured.)
fn dots_b2(lid: u32, r0: u32, r1: u32, r2: u32, r3: u32) {
    let k4 = p.k / 4u;
    var acc: array<vec4<f32>, MAX_M>;
    var sq: array<f32, MAX_M>;
    for (var i = 0u; i < M; i += 1u) {
        acc[i] = vec4<f32>(0.0);
        sq[i] = 0.0;
    }
    for (var kk = lid; kk < k4; kk += WG) {
        let w0 = b2_at(r0 + kk, p.n_kv * p.k);
        let w1 = b2_at(r1 + kk, p.n_kv * p.k);
        let w2 = b2_at(r2 + kk, p.n_kv * p.k);
        let w3 = b2_at(r3 + kk, p.n_kv * p.k);
        let gk = g[kk];
        for (var i = 0u; i < M; i += 1u) {
            let h = a[i * k4 + kk];
            let x = gk * h;
            acc[i] += vec4<f32>(dot(x, w0), dot(x, w1), dot(x, w2), dot(x, w3));
            sq[i] += dot(h, h);
        }
    }
    for (var i = 0u; i < M; i += 1u) {
        partial[i * WG + lid] = acc[i];
        partial_sq[i * WG + lid] = sq[i];
    }
    reduce(lid);
}

// The same with `b3`.
fn dots_b3(lid: u32, r0: u32, r1: u32, r2: u32, r3: u32) {
    let k4 = p.k / 4u;
    var acc: array<vec4<f32>, MAX_M>;
    var sq: array<f32, MAX_M>;
    for (var i = 0u; i < M; i += 1u) {
        acc[i] = vec4<f32>(0.0);
        sq[i] = 0.0;
    }
    for (var kk = lid; kk < k4; kk += WG) {
        let w0 = b3_at(r0 + kk);
        let w1 = b3_at(r1 + kk);
        let w2 = b3_at(r2 + kk);
        let w3 = b3_at(r3 + kk);
        let gk = g[kk];
        for (var i = 0u; i < M; i += 1u) {
            let h = a[i * k4 + kk];
            let x = gk * h;
            acc[i] += vec4<f32>(dot(x, w0), dot(x, w1), dot(x, w2), dot(x, w3));
            sq[i] += dot(h, h);
        }
    }
    for (var i = 0u; i < M; i += 1u) {
        partial[i * WG + lid] = acc[i];
        partial_sq[i * WG + lid] = sq[i];
    }
    reduce(lid);
}

// Row offsets (in vec4s) of `b`'s rows j0 … j0 + 3, clamped to the last row.
fn rows4(j0: u32, n: u32) -> vec4<u32> {
    let k4 = p.k / 4u;
    let last = n - 1u;
    return vec4<u32>(min(j0, last), min(j0 + 1u, last), min(j0 + 2u, last), min(j0 + 3u, last)) * k4;
}

@compute @workgroup_size(WG)
fn norm_nt(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
// #if subgroups
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
// #endif
) {
// #if subgroups
    sg = vec2<u32>(sg_lane, sg_size);
// #endif
    // Every invocation of a workgroup takes the same branch: barriers stay uniform.
    let group = workgroup_index(wid, nwg);
    if group >= p.groups {
        return;
    }
    let j0 = group * 4u;
    let o = rows4(j0, p.n);
    dots_b(lid, o.x, o.y, o.z, o.w);
    if lid < M {
        let sum = normed_sums(lid);
        for (var jj = 0u; jj < 4u; jj += 1u) {
            let j = j0 + jj;
            if j < p.n {
                c[lid * p.n + j] = sum[jj];
            }
        }
    }
}

@compute @workgroup_size(WG)
fn residual_nt(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
// #if subgroups
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
// #endif
) {
// #if subgroups
    sg = vec2<u32>(sg_lane, sg_size);
// #endif
    let group = workgroup_index(wid, nwg);
    if group >= p.groups {
        return;
    }
    let j0 = group * 4u;
    let o = rows4(j0, p.n);
    let k4 = p.k / 4u;
    var acc: array<vec4<f32>, MAX_M>;
    for (var i = 0u; i < M; i += 1u) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var kk = lid; kk < k4; kk += WG) {
        let w0 = b_at(o.x + kk);
        let w1 = b_at(o.y + kk);
        let w2 = b_at(o.z + kk);
        let w3 = b_at(o.w + kk);
        for (var i = 0u; i < M; i += 1u) {
            let x = a[i * k4 + kk];
            acc[i] += vec4<f32>(dot(x, w0), dot(x, w1), dot(x, w2), dot(x, w3));
        }
    }
    for (var i = 0u; i < M; i += 1u) {
        partial[i * WG + lid] = acc[i];
    }
    reduce(lid);
    if lid < M {
        let sum = total(lid);
        for (var jj = 0u; jj < 4u; jj += 1u) {
            let j = j0 + jj;
            if j < p.n {
                let idx = lid * p.n + j;
                c[idx] = r[idx] + sum[jj];
            }
        }
    }
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

@compute @workgroup_size(WG)
fn gate_up(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
// #if subgroups
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
// #endif
) {
// #if subgroups
    sg = vec2<u32>(sg_lane, sg_size);
// #endif
    let group = workgroup_index(wid, nwg);
    if group >= p.groups {
        return;
    }
    // Two columns: rows j0, j0 + 1 of the gate (b) and of up (b2), in one pass over K.
    let j0 = group * 2u;
    let k4 = p.k / 4u;
    let last = p.n - 1u;
    let g0 = min(j0, last) * k4;
    let g1 = min(j0 + 1u, last) * k4;
    var acc: array<vec4<f32>, MAX_M>;
    var sq: array<f32, MAX_M>;
    for (var i = 0u; i < M; i += 1u) {
        acc[i] = vec4<f32>(0.0);
        sq[i] = 0.0;
    }
    for (var kk = lid; kk < k4; kk += WG) {
        let wg0 = b_at(g0 + kk);
        let wg1 = b_at(g1 + kk);
        let wu0 = b2_at(g0 + kk, p.n * p.k);
        let wu1 = b2_at(g1 + kk, p.n * p.k);
        let gk = g[kk];
        for (var i = 0u; i < M; i += 1u) {
            let h = a[i * k4 + kk];
            let x = gk * h;
            acc[i] += vec4<f32>(dot(x, wg0), dot(x, wg1), dot(x, wu0), dot(x, wu1));
            sq[i] += dot(h, h);
        }
    }
    for (var i = 0u; i < M; i += 1u) {
        partial[i * WG + lid] = acc[i];
        partial_sq[i * WG + lid] = sq[i];
    }
    reduce(lid);
    if lid < M {
        let s = normed_sums(lid);
        if j0 < p.n {
            c[lid * p.n + j0] = silu(s.x) * s.z;
        }
        if j0 + 1u < p.n {
            c[lid * p.n + j0 + 1u] = silu(s.y) * s.w;
        }
    }
}

// Which projection a qkv workgroup computes (0 q, 1 k, 2 v), the first of its columns within
// that projection's output, and the column c (< hd/2) of its first pair within the head.
struct QkvTile {
    which: u32,
    col: u32,
    pair: u32,
}

fn qkv_tile(group: u32) -> QkvTile {
    let half = p.head_dim / 2u;
    // Pair index over q | k | v: each head holds hd/2 pairs, a workgroup takes 2.
    let u = group * 2u;
    let head = u / half;
    let pair = u % half;
    let q_heads = p.n / p.head_dim;
    let kv_heads = p.n_kv / p.head_dim;
    var t: QkvTile;
    t.pair = pair;
    if head < q_heads {
        t.which = 0u;
        t.col = head * p.head_dim + pair;
    } else if head < q_heads + kv_heads {
        t.which = 1u;
        t.col = (head - q_heads) * p.head_dim + pair;
    } else {
        t.which = 2u;
        t.col = (head - q_heads - kv_heads) * p.head_dim + pair;
    }
    return t;
}

// The projections of row i for the tile's 4 columns {col, col+1, col+hd/2, col+hd/2+1}.
fn qkv_dots(t: QkvTile, lid: u32) {
    let k4 = p.k / 4u;
    let half = p.head_dim / 2u;
    let o = vec4<u32>(t.col, t.col + 1u, t.col + half, t.col + half + 1u) * k4;
    if t.which == 0u {
        dots_b(lid, o.x, o.y, o.z, o.w);
    } else if t.which == 1u {
        dots_b2(lid, o.x, o.y, o.z, o.w);
    } else {
        dots_b3(lid, o.x, o.y, o.z, o.w);
    }
}

// RoPE on the two pairs (x1 = s.xy at c, c+1; x2 = s.zw at c+hd/2, c+hd/2+1) of row i, then the
// writes: q into C, k and v into the caches at row pos0 + i.
fn qkv_store(t: QkvTile, i: u32, s_in: vec4<f32>) {
    let half = p.head_dim / 2u;
    let pos = p.pos0 + i;
    var s = s_in;
    if t.which < 2u {
        let tp = min(pos, p.n_pos - 1u) * p.head_dim;
        let cos = vec2<f32>(table[tp + t.pair], table[tp + t.pair + 1u]);
        let sin = vec2<f32>(table[tp + half + t.pair], table[tp + half + t.pair + 1u]);
        let x1 = s.xy;
        let x2 = s.zw;
        s = vec4<f32>(x1 * cos - x2 * sin, x2 * cos + x1 * sin);
    }
    let cols = vec4<u32>(t.col, t.col + 1u, t.col + half, t.col + half + 1u);
    for (var jj = 0u; jj < 4u; jj += 1u) {
        if t.which == 0u {
            c[i * p.n + cols[jj]] = s[jj];
        } else if t.which == 1u {
            cache_k[pos * p.n_kv + cols[jj]] = s[jj];
        } else {
            cache_v[pos * p.n_kv + cols[jj]] = s[jj];
        }
    }
}

@compute @workgroup_size(WG)
fn qkv(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
// #if subgroups
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
// #endif
) {
// #if subgroups
    sg = vec2<u32>(sg_lane, sg_size);
// #endif
    let group = workgroup_index(wid, nwg);
    if group >= p.groups {
        return;
    }
    let t = qkv_tile(group);
    qkv_dots(t, lid);
    if lid < M {
        qkv_store(t, lid, normed_sums(lid));
    }
}

@compute @workgroup_size(WG)
fn qkv_bias(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
// #if subgroups
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
// #endif
) {
// #if subgroups
    sg = vec2<u32>(sg_lane, sg_size);
// #endif
    let group = workgroup_index(wid, nwg);
    if group >= p.groups {
        return;
    }
    let t = qkv_tile(group);
    qkv_dots(t, lid);
    if lid < M {
        let half = p.head_dim / 2u;
        let cols = vec4<u32>(t.col, t.col + 1u, t.col + half, t.col + half + 1u);
        var bias: vec4<f32>;
        for (var jj = 0u; jj < 4u; jj += 1u) {
            if t.which == 0u {
                bias[jj] = bias_q[cols[jj]];
            } else if t.which == 1u {
                bias[jj] = bias_k[cols[jj]];
            } else {
                bias[jj] = bias_v[cols[jj]];
            }
        }
        qkv_store(t, lid, normed_sums(lid) + bias);
    }
}
