// Rotary position embedding, Hugging Face "rotate half" layout, one coordinate pair per
// invocation: within each head, coordinate c < hd/2 pairs with c + hd/2.
//
// `sign` is +1 for the forward rotation and −1 for its adjoint (the backward pass). A position
// past the table (a caller bug) reads the table's last row.

// Invocations per workgroup; mirrored in Rust as `ops::rope::ROPE_WG`.
const WG: u32 = 256u;

struct Params {
    len: u32,      // N·H·hd/2 coordinate pairs
    n_heads: u32,  // H
    head_dim: u32, // hd (even)
    n_pos: u32,    // table rows P
    sign: f32,     // +1 forward, −1 backward
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (N, H·hd)
@group(0) @binding(2) var<storage, read> positions: array<u32>;  // (N)
@group(0) @binding(3) var<storage, read> table: array<f32>;      // (P, hd): cos | sin halves
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // (N, H·hd)

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
    let half = p.head_dim / 2u;
    let c = e % half;
    let head = e / half; // over all rows: i·H + h
    let i = head / p.n_heads;
    let pos = min(positions[i], p.n_pos - 1u);
    let cos = table[pos * p.head_dim + c];
    let sin = p.sign * table[pos * p.head_dim + half + c];
    let base = head * p.head_dim;
    let x1 = x[base + c];
    let x2 = x[base + half + c];
    out[base + c] = x1 * cos - x2 * sin;
    out[base + half + c] = x2 * cos + x1 * sin;
}
