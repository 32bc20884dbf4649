// Matrix product `C = op(A) · op(B)` (or `C += …`), the vectorised paths, chosen by the
// launcher when the contiguous dimensions allow whole-vec4 loads:
//
// `nt` — A (M, K) · B (N, K)ᵀ with K % 4 = 0 (the hot linear layer `x · Wᵀ`): 4 + 4 vec4 loads
//        along K feed 16 dot products.
// `nn` — A (M, K) · B (K, N) with N % 4 = 0: vec4s of B's rows times scalars of A, which
//        come four at a time when K % 4 = 0 too.
// `tn` — A (K, M)ᵀ · B (K, N) with M % 4 = 0 and N % 4 = 0 (Gram matrices, weight gradients):
//        an outer product of a vec4 of A and a vec4 of B.
//
// As in `matmul.wgsl`: a 4×4 block of C per invocation, 8×8 invocations per workgroup, edge
// rows and columns clamped for loading and skipped when storing.
//
// Split-K (`splits` > 1, for long K and few tiles, such as the LM head's backward with
// K = 49,152): workgroup w computes tile w % tiles over the K slice w / tiles and writes its
// own (M, N) block of C, which `split_sum.wgsl` then adds up.

// Invocations per side of the workgroup; mirrored in Rust as `ops::matmul::TILE`.
const TILE: u32 = 8u;
// Outputs per invocation per side; mirrored in Rust as `ops::matmul::BLOCK`.
const BLOCK: u32 = 4u;
// Invocations per workgroup (TILE·TILE); mirrored in Rust as `ops::matmul::MATMUL_WG`.
const WG: u32 = 64u;

// Add into C instead of overwriting it.
override ACCUMULATE: bool = false;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    tiles_n: u32, // 32-wide tiles across N
    tiles: u32,   // tiles in all (per split)
    k_chunk: u32, // split-K: elements of K per split, a multiple of 4 (≥ K when unsplit)
    splits: u32,  // split-K: slices; slice s writes C's (M, N) block at s·M·N
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;  // (M, K) `nt` `nn`; (K, M) `tn`
// (N, K) `nt`; (K, N) `nn` `tn`: f32, or a weight kept compact (`nt`, `nn`), read through `b_at`.
@group(0) @binding(2) var<storage, read> b: array<b_words>;
// #include weights(b)

// The `i`-th vec4 of B's values.
fn b_at(i: u32) -> vec4<f32> {
    return b_vec4(4u * i, p.n * p.k);
}
@group(0) @binding(3) var<storage, read_write> c: array<f32>;  // (M, N)

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// The K slice of this workgroup: `[lo, hi)` in elements, and the offset of its block of C.
struct Slice {
    lo: u32,
    hi: u32,
    out: u32,
}

fn slice_of(wid: vec3<u32>, nwg: vec3<u32>) -> Slice {
    let s = workgroup_index(wid, nwg) / p.tiles;
    let lo = s * p.k_chunk;
    return Slice(lo, min(p.k, lo + p.k_chunk), s * p.m * p.n);
}

// Writes (or adds) the up to four in-range values of `value` at row `i`, columns `j0..j0+4`,
// of the block at `out`.
fn store(i: u32, j0: u32, value: vec4<f32>, out: u32) {
    if i >= p.m {
        return;
    }
    for (var jj = 0u; jj < BLOCK; jj += 1u) {
        let j = j0 + jj;
        if j < p.n {
            let idx = out + i * p.n + j;
            if ACCUMULATE {
                c[idx] += value[jj];
            } else {
                c[idx] = value[jj];
            }
        }
    }
}

// First row and column of this invocation's block, or x = M for a spare workgroup.
fn block_origin(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> vec2<u32> {
    let w = workgroup_index(wid, nwg);
    if w >= p.tiles * p.splits {
        return vec2<u32>(p.m, 0u);
    }
    let tile = w % p.tiles;
    let i0 = (tile / p.tiles_n) * TILE * BLOCK + (lid / TILE) * BLOCK;
    let j0 = (tile % p.tiles_n) * TILE * BLOCK + (lid % TILE) * BLOCK;
    return vec2<u32>(i0, j0);
}

// Indices `x0 .. x0+3`, each clamped to `last`.
fn clamp4(x0: u32, last: u32) -> vec4<u32> {
    return vec4<u32>(min(x0, last), min(x0 + 1u, last), min(x0 + 2u, last), min(x0 + 3u, last));
}

fn store_block(
    o: vec2<u32>,
    acc0: vec4<f32>,
    acc1: vec4<f32>,
    acc2: vec4<f32>,
    acc3: vec4<f32>,
    out: u32,
) {
    store(o.x, o.y, acc0, out);
    store(o.x + 1u, o.y, acc1, out);
    store(o.x + 2u, o.y, acc2, out);
    store(o.x + 3u, o.y, acc3, out);
}

@compute @workgroup_size(WG)
fn nt(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let o = block_origin(wid, nwg, lid);
    if o.x >= p.m {
        return;
    }
    let k4 = p.k / 4u;
    let ri = clamp4(o.x, p.m - 1u) * k4;
    let cj = clamp4(o.y, p.n - 1u) * k4;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let sl = slice_of(wid, nwg);
    for (var kk = sl.lo / 4u; kk < sl.hi / 4u; kk += 1u) {
        let b0 = b_at(cj.x + kk);
        let b1 = b_at(cj.y + kk);
        let b2 = b_at(cj.z + kk);
        let b3 = b_at(cj.w + kk);
        let a0 = a[ri.x + kk];
        let a1 = a[ri.y + kk];
        let a2 = a[ri.z + kk];
        let a3 = a[ri.w + kk];
        acc0 += vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
        acc1 += vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
        acc2 += vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
        acc3 += vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
    }
    store_block(o, acc0, acc1, acc2, acc3, sl.out);
}

// Element `idx` of A, read through the vec4 binding.
fn a_at(idx: u32) -> f32 {
    return a[idx / 4u][idx % 4u];
}

@compute @workgroup_size(WG)
fn nn(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let o = block_origin(wid, nwg, lid);
    if o.x >= p.m {
        return;
    }
    let n4 = p.n / 4u;
    let cq = min(o.y / 4u, n4 - 1u);
    let sl = slice_of(wid, nwg);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    if p.k % 4u == 0u {
        // Rows of A start on vec4 boundaries: four of A's columns per load, against four
        // rows of B.
        let k4 = p.k / 4u;
        let ri = clamp4(o.x, p.m - 1u) * k4;
        for (var kq = sl.lo / 4u; kq < sl.hi / 4u; kq += 1u) {
            let kk = 4u * kq;
            let b0 = b_at(kk * n4 + cq);
            let b1 = b_at((kk + 1u) * n4 + cq);
            let b2 = b_at((kk + 2u) * n4 + cq);
            let b3 = b_at((kk + 3u) * n4 + cq);
            let a0 = a[ri.x + kq];
            let a1 = a[ri.y + kq];
            let a2 = a[ri.z + kq];
            let a3 = a[ri.w + kq];
            acc0 += a0.x * b0 + a0.y * b1 + a0.z * b2 + a0.w * b3;
            acc1 += a1.x * b0 + a1.y * b1 + a1.z * b2 + a1.w * b3;
            acc2 += a2.x * b0 + a2.y * b1 + a2.z * b2 + a2.w * b3;
            acc3 += a3.x * b0 + a3.y * b1 + a3.z * b2 + a3.w * b3;
        }
    } else {
        let ri = clamp4(o.x, p.m - 1u) * p.k;
        for (var kk = sl.lo; kk < sl.hi; kk += 1u) {
            let bv = b_at(kk * n4 + cq);
            acc0 += a_at(ri.x + kk) * bv;
            acc1 += a_at(ri.y + kk) * bv;
            acc2 += a_at(ri.z + kk) * bv;
            acc3 += a_at(ri.w + kk) * bv;
        }
    }
    store_block(o, acc0, acc1, acc2, acc3, sl.out);
}

@compute @workgroup_size(WG)
fn tn(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let o = block_origin(wid, nwg, lid);
    if o.x >= p.m {
        return;
    }
    let m4 = p.m / 4u;
    let n4 = p.n / 4u;
    let rq = min(o.x / 4u, m4 - 1u);
    let cq = min(o.y / 4u, n4 - 1u);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let sl = slice_of(wid, nwg);
    for (var kk = sl.lo; kk < sl.hi; kk += 1u) {
        let av = a[kk * m4 + rq];
        let bv = b_at(kk * n4 + cq);
        acc0 += av.x * bv;
        acc1 += av.y * bv;
        acc2 += av.z * bv;
        acc3 += av.w * bv;
    }
    store_block(o, acc0, acc1, acc2, acc3, sl.out);
}
