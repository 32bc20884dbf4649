#!/usr/bin/env python3
"""A random-weight GGUF of Llama-3.2-1B's shape, for trying large models in the page.

    python3 scripts/make-large-gguf.py models/SmolLM2-135M-Instruct.Q4_1.gguf OUT.gguf

16 blocks, d 2048, d_ff 8192, 32/8 heads of 64, tied embeddings (Llama-3.2-1B's shape, without
its RoPE scaling), stored the way downloaded 1B files are: Q4_0 matrices and a Q8_0 embedding
(about 0.65 GB). The tokenizer is copied from the default model's GGUF given first (so prompts
have their real token counts; the vocabulary is its 49,152 tokens). The weights are random
blocks: 4-bit codes uniform in 1..15 (8-bit in -127..127: both zero-mean) under a scale that gives each matrix
the spread 1/sqrt(fan_in), so activations stay in a trained model's range; the norms are 1.
What a forward pass or an edit costs depends on the shape, not on the values.

Needs pip `gguf` (gguf-py) and NumPy. Deterministic (seeded).
"""
import sys

import numpy as np
import gguf

N_LAYERS, D, D_FF, HEADS, KV_HEADS = 16, 2048, 8192, 32, 8
HEAD_DIM = D // HEADS


def q4_0(rng, rows, cols):
    """Random Q4_0 blocks of a (rows, cols) matrix: per 32 values an f16 scale and 16 bytes of
    codes, value = scale * (code - 8). Codes uniform in 1..15 (values -7..7: mean zero, standard
    deviation 4.3 scales; with 0..15 every matrix would carry a mean of -0.5 scales, a rank-one
    part that makes the random model's output the same for every prompt)."""
    blocks = rows * cols // 32
    scale = np.float16(1.0 / (4.3 * np.sqrt(cols)))
    out = np.empty((blocks, 18), dtype=np.uint8)
    out[:, :2] = np.frombuffer(np.full(blocks, scale, dtype=np.float16).tobytes(), np.uint8).reshape(blocks, 2)
    lo = rng.integers(1, 16, size=(blocks, 16), dtype=np.uint8)
    hi = rng.integers(1, 16, size=(blocks, 16), dtype=np.uint8)
    out[:, 2:] = lo | (hi << 4)
    return out.reshape(rows, cols // 32 * 18)


def q8_0(rng, rows, cols):
    """Random Q8_0 blocks: an f16 scale and 32 signed codes, value = scale * code. Uniform codes
    have standard deviation ~73.3 scales; the spread 3/sqrt(cols) gives the tied head's logits
    a standard deviation of about 3."""
    blocks = rows * cols // 32
    scale = np.float16(3.0 / (73.3 * np.sqrt(cols)))
    out = np.empty((blocks, 34), dtype=np.uint8)
    out[:, :2] = np.frombuffer(np.full(blocks, scale, dtype=np.float16).tobytes(), np.uint8).reshape(blocks, 2)
    out[:, 2:] = rng.integers(-127, 128, size=(blocks, 32), dtype=np.int8).view(np.uint8)
    return out.reshape(rows, cols // 32 * 34)


def main(src, dst):
    reader = gguf.GGUFReader(src)
    field = lambda k: reader.fields[k].contents()
    vocab = len(field("tokenizer.ggml.tokens"))
    w = gguf.GGUFWriter(dst, "llama")
    w.add_name("random-llama-3.2-1b-shape")
    w.add_block_count(N_LAYERS)
    w.add_context_length(8192)
    w.add_embedding_length(D)
    w.add_feed_forward_length(D_FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    w.add_tokenizer_model(field("tokenizer.ggml.model"))
    w.add_tokenizer_pre(field("tokenizer.ggml.pre"))
    w.add_token_list(field("tokenizer.ggml.tokens"))
    w.add_token_types(field("tokenizer.ggml.token_type"))
    w.add_token_merges(field("tokenizer.ggml.merges"))
    w.add_bos_token_id(field("tokenizer.ggml.bos_token_id"))
    w.add_eos_token_id(field("tokenizer.ggml.eos_token_id"))
    w.add_add_bos_token(field("tokenizer.ggml.add_bos_token"))

    rng = np.random.default_rng(1)
    Q4, Q8 = gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q8_0
    w.add_tensor("token_embd.weight", q8_0(rng, vocab, D), raw_dtype=Q8)
    w.add_tensor("output_norm.weight", np.ones(D, dtype=np.float32))
    kv = KV_HEADS * HEAD_DIM
    for l in range(N_LAYERS):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", np.ones(D, dtype=np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(D, dtype=np.float32))
        for name, rows, cols in [
            ("attn_q", D, D), ("attn_k", kv, D), ("attn_v", kv, D), ("attn_output", D, D),
            ("ffn_gate", D_FF, D), ("ffn_up", D_FF, D), ("ffn_down", D, D_FF),
        ]:
            w.add_tensor(p + name + ".weight", q4_0(rng, rows, cols), raw_dtype=Q4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
