// SwiGLU gate `silu(gate) · up` and its gradients, four elements per invocation.
//
// Entry points: `forward` (out = silu(gate)·up) and `backward`
// (out = d gate = dy·up·σ(g)(1 + g(1 − σ(g))), d_up = dy·silu(g)), as `ops::elementwise`.
// Buffers are padded to whole vec4s; the padding is computed and never read as an element.

// Invocations per workgroup; mirrored in Rust as `ops::elementwise::SILU_MUL_WG`.
const WG: u32 = 256u;

struct Params {
    n_vec4: u32, // vec4s covering the N·F elements
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<vec4<f32>>;       // (N·F / 4)
@group(0) @binding(2) var<storage, read> up: array<vec4<f32>>;         // (N·F / 4)
@group(0) @binding(3) var<storage, read> dy: array<vec4<f32>>;         // (N·F / 4), backward only
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;  // (N·F / 4): y, or d gate
@group(0) @binding(5) var<storage, read_write> d_up: array<vec4<f32>>; // (N·F / 4), backward only

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = workgroup_index(wid, nwg) * WG + lid;
    if i >= p.n_vec4 {
        return;
    }
    let g = gate[i];
    out[i] = g / (1.0 + exp(-g)) * up[i];
}

@compute @workgroup_size(WG)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = workgroup_index(wid, nwg) * WG + lid;
    if i >= p.n_vec4 {
        return;
    }
    let g = gate[i];
    let d = dy[i];
    let s = 1.0 / (1.0 + exp(-g));
    out[i] = d * up[i] * s * (1.0 + g * (1.0 - s));
    d_up[i] = d * g * s;
}
