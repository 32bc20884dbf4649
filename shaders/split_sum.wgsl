// Split-K's second pass: `C = Σ_s part[s]` (or `C += …`) over the `splits` (M, N) blocks that
// `matmul_vec4.wgsl` wrote. One invocation per element of C.

// Invocations per workgroup; mirrored in Rust as `kernels::matmul::SPLIT_SUM_WG`.
const WG: u32 = 64u;

// Add into C instead of overwriting it.
override ACCUMULATE: bool = false;

struct Params {
    len: u32,    // M·N
    splits: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;     // (splits, M, N)
@group(0) @binding(2) var<storage, read_write> c: array<f32>;  // (M, N)

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
    let idx = workgroup_index(wid, nwg) * WG + lid;
    if idx >= p.len {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s += 1u) {
        sum += part[s * p.len + idx];
    }
    if ACCUMULATE {
        c[idx] += sum;
    } else {
        c[idx] = sum;
    }
}
