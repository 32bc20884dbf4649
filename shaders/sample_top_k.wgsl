// Seeded top-k sampling, exactly as `ops::softmax::sample_top_k_forward`: the k largest logits
// of each row in descending order (ties to the lower index, values ordered like Rust's
// `f32::total_cmp`), their softmax, and the first token whose running probability exceeds the
// row's uniform (the last of the k if rounding leaves the sum below it).
//
// One workgroup per row. Round r is an argmax over the elements that come after the previous
// pick in the (value descending, index ascending) order, so no exclusion list is needed; the
// picks go to a scratch buffer that invocation 0 then walks sequentially, in the reference's
// order of operations.

// Invocations per workgroup (a power of two); mirrored in Rust as
// `ops::softmax::SAMPLE_TOP_K_WG`.
const WG: u32 = 128u;

// "No candidate" index, beaten by any real one.
const NONE: u32 = 0xffffffffu;

struct Params {
    rows: u32, // N
    v: u32,    // V
    k: u32,    // k, already clamped to 1..=V
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;       // (N, V)
@group(0) @binding(2) var<storage, read> uniforms: array<f32>;     // (N), in [0, 1)
@group(0) @binding(3) var<storage, read_write> picks: array<u32>;  // (N, k) scratch
@group(0) @binding(4) var<storage, read_write> out: array<u32>;    // (N)

var<workgroup> red_key: array<i32, WG>;
var<workgroup> red_index: array<u32, WG>;

// Linear workgroup index of a dispatch folded into up to three dimensions.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// An integer that orders like `f32::total_cmp` (flip the magnitude bits of negatives).
fn order_key(value: f32) -> i32 {
    let b = bitcast<i32>(value);
    return b ^ bitcast<i32>(bitcast<u32>(b >> 31u) >> 1u);
}

// Whether candidate (k2, i2) beats (k1, i1): larger key, or equal key and lower index.
fn beats(k2: i32, i2: u32, k1: i32, i1: u32) -> bool {
    return i2 != NONE && (i1 == NONE || k2 > k1 || (k2 == k1 && i2 < i1));
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = workgroup_index(wid, nwg);
    if row >= p.rows {
        return;
    }
    let base = row * p.v;
    var prev_key = 0;
    var prev_index = NONE;
    for (var r = 0u; r < p.k; r += 1u) {
        var bk = 0;
        var bi = NONE;
        for (var j = lid; j < p.v; j += WG) {
            let key = order_key(logits[base + j]);
            let after_prev = prev_index == NONE || key < prev_key || (key == prev_key && j > prev_index);
            if after_prev && beats(key, j, bk, bi) {
                bk = key;
                bi = j;
            }
        }
        red_key[lid] = bk;
        red_index[lid] = bi;
        workgroupBarrier();
        for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
            if lid < stride && beats(red_key[lid + stride], red_index[lid + stride], red_key[lid], red_index[lid]) {
                red_key[lid] = red_key[lid + stride];
                red_index[lid] = red_index[lid + stride];
            }
            workgroupBarrier();
        }
        prev_key = red_key[0];
        prev_index = red_index[0];
        workgroupBarrier(); // everyone has read the winner before the next round reuses `red_*`
        if lid == 0u {
            picks[row * p.k + r] = prev_index;
        }
    }
    if lid != 0u {
        return;
    }
    let first = row * p.k;
    let max_logit = logits[base + picks[first]];
    var sum = 0.0;
    for (var t = 0u; t < p.k; t += 1u) {
        sum += exp(logits[base + picks[first + t]] - max_logit);
    }
    let u = uniforms[row];
    var chosen = picks[first + p.k - 1u];
    var acc = 0.0;
    for (var t = 0u; t < p.k; t += 1u) {
        acc += exp(logits[base + picks[first + t]] - max_logit) / sum;
        if acc > u {
            chosen = picks[first + t];
            break;
        }
    }
    out[row] = chosen;
}
