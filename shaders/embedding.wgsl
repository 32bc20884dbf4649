// Embedding lookup `out[i, :] = table[ids[i], :]`, one element per invocation.
//
// An id outside the vocabulary (a caller bug) yields a zero row rather than a wild read.

// Invocations per workgroup; mirrored in Rust as `ops::embedding::EMBEDDING_WG`.
const WG: u32 = 256u;

struct Params {
    len: u32,   // N·D output elements
    d: u32,     // row width D
    vocab: u32, // table rows V
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<table_words>; // (V, D), f32 or compact
// #include weights(table)
@group(0) @binding(2) var<storage, read> ids: array<u32>;        // (N)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // (N, D)

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
    let e = workgroup_index(wid, nwg) * WG + lid;
    if e >= p.len {
        return;
    }
    let id = ids[e / p.d];
    var value = 0.0;
    if id < p.vocab {
        let at = id * p.d + e % p.d;
        value = table_vec4(at & ~3u, p.vocab * p.d)[at & 3u];
    }
    out[e] = value;
}
