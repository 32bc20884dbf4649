// Matrix product `C = op(A) · op(B)` (or `C += …`), the general path: any sizes, any of the
// transposes. Register blocking: each invocation computes a 4×4 block of C from scalar loads,
// and a workgroup of 8×8 invocations covers a 32×32 tile. No shared-memory tiling: on CPU
// adapters (lavapipe) barriers cost more than they save, while register blocking pays.
//
// Rows and columns past the edge of C are clamped for loading (so the inner loop has no
// branch) and skipped when storing.

// Invocations per side of the workgroup; mirrored in Rust as `ops::matmul::TILE`.
const TILE: u32 = 8u;
// Outputs per invocation per side; mirrored in Rust as `ops::matmul::BLOCK`.
const BLOCK: u32 = 4u;
// Invocations per workgroup (TILE·TILE); mirrored in Rust as `ops::matmul::MATMUL_WG`.
const WG: u32 = 64u;

// A is stored (K, M) and used transposed.
override TRANS_A: bool = false;
// B is stored (N, K) and used transposed.
override TRANS_B: bool = false;
// Add into C instead of overwriting it.
override ACCUMULATE: bool = false;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    tiles_n: u32, // 32-wide tiles across N
    tiles: u32,   // tiles in all
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;        // (M, K), or (K, M) if TRANS_A
@group(0) @binding(2) var<storage, read> b: array<f32>;        // (K, N), or (N, K) if TRANS_B
@group(0) @binding(3) var<storage, read_write> c: array<f32>;  // (M, N)

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

fn load_a(i: u32, kk: u32) -> f32 {
    if TRANS_A {
        return a[kk * p.m + i];
    }
    return a[i * p.k + kk];
}

fn load_b(kk: u32, j: u32) -> f32 {
    if TRANS_B {
        return b[j * p.k + kk];
    }
    return b[kk * p.n + j];
}

// Writes (or adds) the up to four in-range values of `value` at row `i`, columns `j0..j0+4`.
fn store(i: u32, j0: u32, value: vec4<f32>) {
    if i >= p.m {
        return;
    }
    for (var jj = 0u; jj < BLOCK; jj += 1u) {
        let j = j0 + jj;
        if j < p.n {
            let idx = i * p.n + j;
            if ACCUMULATE {
                c[idx] += value[jj];
            } else {
                c[idx] = value[jj];
            }
        }
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tile = workgroup_index(wid, nwg);
    if tile >= p.tiles {
        return;
    }
    let i0 = (tile / p.tiles_n) * TILE * BLOCK + (lid / TILE) * BLOCK;
    let j0 = (tile % p.tiles_n) * TILE * BLOCK + (lid % TILE) * BLOCK;
    let last_i = p.m - 1u;
    let last_j = p.n - 1u;
    let ri = vec4<u32>(min(i0, last_i), min(i0 + 1u, last_i), min(i0 + 2u, last_i), min(i0 + 3u, last_i));
    let cj = vec4<u32>(min(j0, last_j), min(j0 + 1u, last_j), min(j0 + 2u, last_j), min(j0 + 3u, last_j));
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k; kk += 1u) {
        let bv = vec4<f32>(load_b(kk, cj.x), load_b(kk, cj.y), load_b(kk, cj.z), load_b(kk, cj.w));
        acc0 += load_a(ri.x, kk) * bv;
        acc1 += load_a(ri.y, kk) * bv;
        acc2 += load_a(ri.z, kk) * bv;
        acc3 += load_a(ri.w, kk) * bv;
    }
    store(i0, j0, acc0);
    store(i0 + 1u, j0, acc1);
    store(i0 + 2u, j0, acc2);
    store(i0 + 3u, j0, acc3);
}
