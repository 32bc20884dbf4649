// GPT-2's GELU ("gelu_new", the tanh approximation) `0.5 · x · (1 + tanh u)` with
// `u = √(2/π) · (x + 0.044715 · x³)`, and its gradient
// `dx = dy · (0.5 · (1 + t) + 0.5 · x · (1 − t²) · u′)`, `t = tanh u`,
// `u′ = √(2/π) · (1 + 3 · 0.044715 · x²)`, as `ops::elementwise`; four elements per invocation.
//
// WGSL's `tanh` is not called: an implementation may build it on exp(2u), which overflows to
// inf/inf = NaN once |u| passes about 44 (|x| ≈ 11). The halves `(1 ± t) / 2` are written as
// logistic functions of exp(−2|u|) ≤ 1 instead, which cannot overflow, and which also keep
// `1 + t` (x < 0) and `1 − t²` accurate where `t` is near ±1 and the tanh form cancels.
//
// Entry points: `forward` (out = gelu(x)) and `backward` (out = dx).
// Buffers are padded to whole vec4s; the padding is computed and never read as an element.

// Invocations per workgroup; mirrored in Rust as `gpu::kernels::elementwise::GELU_WG`.
const WG: u32 = 256u;

// √(2/π)
const SQRT_2_OVER_PI: f32 = 0.7978845608;
// The cubic coefficient of the approximation.
const CUBIC: f32 = 0.044715;
// Past this |u| (|x| ≈ 8.7), exp(−2|u|) < 1e-26: the halves are taken as exactly 0 and 1 (the
// left tail, below |x|·1e-26, becomes 0), so that an infinite u (x³ overflows past
// |x| ≈ 7e12) never reaches `exp`.
const U_TAIL: f32 = 30.0;

struct Params {
    n_vec4: u32, // vec4s covering the elements
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;         // (n / 4)
@group(0) @binding(2) var<storage, read> dy: array<vec4<f32>>;        // (n / 4), backward only
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>; // (n / 4): y, or dx

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// `(1 + tanh u) / 2` and `(1 − tanh u) / 2` at `x`.
struct Halves {
    plus: vec4<f32>,
    minus: vec4<f32>,
}

fn halves(xv: vec4<f32>) -> Halves {
    let u = SQRT_2_OVER_PI * (xv + CUBIC * xv * xv * xv);
    let a = select(exp(-2.0 * abs(u)), vec4(0.0), abs(u) > vec4(U_TAIL));
    let large = 1.0 / (1.0 + a); // (1 + |t|) / 2
    let small = a * large;       // (1 − |t|) / 2
    let up = u >= vec4(0.0);
    return Halves(select(small, large, up), select(large, small, up));
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
    let xv = x[i];
    out[i] = xv * halves(xv).plus;
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
    let xv = x[i];
    let h = halves(xv);
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * xv * xv);
    // 0.5 · x · (1 − t²) = 2 · x · plus · minus
    out[i] = dy[i] * (h.plus + 2.0 * xv * h.plus * h.minus * du);
}
