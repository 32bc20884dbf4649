// Matrix product `C = A · Bᵀ` (or `C += …`) for few rows of A: A (M, K) with M ≤ 8 (decoding,
// the z loop's prompts), B (N, K) a weight matrix, K % 4 = 0. The launcher picks it over
// `matmul_vec4.wgsl`'s `nt` when M ≤ 8.
//
// One workgroup computes COLS = 4 columns of C for all M rows. Its 64 invocations stride along
// K in vec4s, so neighbouring invocations read neighbouring 16-byte words of each weight row
// (coalesced loads, every invocation busy), and each weight vec4 is read once for all M rows.
// The 64 partial sums per output are then added in workgroup memory.

// Invocations per workgroup.
const WG: u32 = 64u;
// Columns of C (rows of B) per workgroup.
const COLS: u32 = 4u;
// The most rows of A.
const MAX_M: u32 = 8u;

// Rows of A (1 ..= 8), a pipeline constant so that the row loops unroll.
override M: u32 = 1u;
// Add into C instead of overwriting it.
override ACCUMULATE: bool = false;

struct Params {
    n: u32,
    k: u32,
    groups: u32, // workgroups in all: ceil(N / COLS)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;  // (M, K)
@group(0) @binding(2) var<storage, read> b: array<b_words>;  // (N, K), f32 or compact
// #include weights(b)

// The `i`-th vec4 of B's values.
fn b_at(i: u32) -> vec4<f32> {
    return b_vec4(4u * i, p.n * p.k);
}
@group(0) @binding(3) var<storage, read_write> c: array<f32>;  // (M, N)

// Partial sums: one vec4 (the COLS columns) per row of A per invocation.
var<workgroup> partial: array<vec4<f32>, 512>; // MAX_M · WG

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

@compute @workgroup_size(WG)
fn nt(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
// #if subgroups
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
// #endif
) {
    // Every invocation of a workgroup takes the same branch: barriers stay uniform.
    let group = workgroup_index(wid, nwg);
    if group >= p.groups {
        return;
    }
    let j0 = group * COLS;
    let k4 = p.k / 4u;
    let last = p.n - 1u;
    let r0 = min(j0, last) * k4;
    let r1 = min(j0 + 1u, last) * k4;
    let r2 = min(j0 + 2u, last) * k4;
    let r3 = min(j0 + 3u, last) * k4;
    var acc: array<vec4<f32>, MAX_M>;
    for (var i = 0u; i < M; i += 1u) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var kk = lid; kk < k4; kk += WG) {
        let b0 = b_at(r0 + kk);
        let b1 = b_at(r1 + kk);
        let b2 = b_at(r2 + kk);
        let b3 = b_at(r3 + kk);
        for (var i = 0u; i < M; i += 1u) {
            let x = a[i * k4 + kk];
            acc[i] += vec4<f32>(dot(x, b0), dot(x, b1), dot(x, b2), dot(x, b3));
        }
    }
// #if subgroups
    // A subgroupAdd per row, and lane 0 of the g-th subgroup writes the subgroup's sums at g.
    // Subgroups are taken to be runs of consecutive invocations, as implementations form them
    // for a 1-D workgroup; the backend checks it on the device before it uses this variant.
    for (var i = 0u; i < M; i += 1u) {
        let s = subgroupAdd(acc[i]);
        if sg_lane == 0u {
            partial[i * WG + lid / sg_size] = s;
        }
    }
    workgroupBarrier();
    let sums = max(WG / sg_size, 1u);
// #else
    for (var i = 0u; i < M; i += 1u) {
        partial[i * WG + lid] = acc[i];
    }
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if lid < half {
            for (var i = 0u; i < M; i += 1u) {
                partial[i * WG + lid] += partial[i * WG + lid + half];
            }
        }
        workgroupBarrier();
    }
    let sums = 1u;
// #endif
    // Invocation i < M writes row i's COLS columns.
    if lid < M {
        var sum = partial[lid * WG];
        for (var g = 1u; g < sums; g += 1u) {
            sum += partial[lid * WG + g];
        }
        for (var jj = 0u; jj < COLS; jj += 1u) {
            let j = j0 + jj;
            if j < p.n {
                let idx = lid * p.n + j;
                if ACCUMULATE {
                    c[idx] += sum[jj];
                } else {
                    c[idx] = sum[jj];
                }
            }
        }
    }
}
