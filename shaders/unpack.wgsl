// A weight kept compact (src/gpu/packed.rs) decoded to dense f32, four values per invocation:
// for the ops that take only dense tensors, readback, and the first edit of a matrix.

// Invocations per workgroup; mirrored in Rust as `kernels::unpack::UNPACK_WG`.
const WG: u32 = 256u;

struct Params {
    len: u32, // values, a multiple of 4
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<w_words>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
// #include weights(w)

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
    let i = workgroup_index(wid, nwg) * WG + lid;
    if 4u * i >= p.len {
        return;
    }
    out[i] = w_vec4(4u * i, p.len);
}
