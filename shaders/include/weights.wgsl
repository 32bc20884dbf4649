// A weight binding that may be kept compact (src/gpu/packed.rs), instantiated for the binding
// named $W by a line `// #include weights($W)` in a shader, which declares
// `$W: array<$W_words>`. The launcher sets the layout with pipeline constants.

// 0 dense f32; 1 f16 pairs; 2 bf16 pairs; 3 (scale, offset) groups of signed 8-bit codes;
// 4 the same with unsigned 4-bit codes.
override $W_FMT: u32 = 0u;
// Values per (scale, offset) group of layouts 3 and 4.
override $W_GROUP: u32 = 32u;

// #if f16
// The f16 variant (a device with shader-f16, every weight of the dispatch F16): the same words
// read as f16 values, four at a time, and widened to f32 exactly (the layout constants unused).
alias $W_words = vec4<f16>;

// Values `e .. e + 3` (e % 4 = 0) of the weight.
fn $W_vec4(e: u32, len: u32) -> vec4<f32> {
    return vec4<f32>($W[e >> 2u]);
}
// #else
alias $W_words = vec4<u32>;

fn $W_word(i: u32) -> u32 {
    return $W[i >> 2u][i & 3u];
}

// The f16 with bits `h` as f32, exactly (by hand: `unpack2x16float` needs a capability that
// some native adapters lack, and it would be required by every pipeline of the shader).
fn $W_half(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if e == 0u {
        // Zero and subnormals: m · 2⁻²⁴, exact in f32.
        return bitcast<f32>(sign | bitcast<u32>(f32(m) * 5.9604645e-8));
    }
    if e == 31u {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// Values `e .. e + 3` (e % 4 = 0) of the weight, which holds `len` values.
fn $W_vec4(e: u32, len: u32) -> vec4<f32> {
    switch $W_FMT {
        case 1u: {
            let w0 = $W_word(e >> 1u);
            let w1 = $W_word((e >> 1u) + 1u);
            return vec4<f32>(
                $W_half(w0 & 0xffffu), $W_half(w0 >> 16u),
                $W_half(w1 & 0xffffu), $W_half(w1 >> 16u));
        }
        case 2u: {
            let w0 = $W_word(e >> 1u);
            let w1 = $W_word((e >> 1u) + 1u);
            return bitcast<vec4<f32>>(
                vec4<u32>(w0 << 16u, w0 & 0xffff0000u, w1 << 16u, w1 & 0xffff0000u));
        }
        case 3u: {
            let g = 2u * (e / $W_GROUP);
            let scale = bitcast<f32>($W_word(g));
            let offset = bitcast<f32>($W_word(g + 1u));
            let w = bitcast<i32>($W_word(2u * (len / $W_GROUP) + (e >> 2u)));
            let q = vec4<i32>(
                extractBits(w, 0u, 8u), extractBits(w, 8u, 8u),
                extractBits(w, 16u, 8u), extractBits(w, 24u, 8u));
            return scale * vec4<f32>(q) + offset;
        }
        case 4u: {
            let g = 2u * (e / $W_GROUP);
            let scale = bitcast<f32>($W_word(g));
            let offset = bitcast<f32>($W_word(g + 1u));
            let w = $W_word(2u * (len / $W_GROUP) + (e >> 3u));
            let s = 4u * (e & 7u);
            let q = vec4<u32>(
                extractBits(w, s, 4u), extractBits(w, s + 4u, 4u),
                extractBits(w, s + 8u, 4u), extractBits(w, s + 12u, 4u));
            return scale * vec4<f32>(q) + offset;
        }
        default: {
            return bitcast<vec4<f32>>($W[e >> 2u]);
        }
    }
}
// #endif
