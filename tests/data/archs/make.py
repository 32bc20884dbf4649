"""Tiny random Qwen2, Llama 3 and GPT-2 checkpoints, each as a Hugging Face directory
(config.json, tokenizer.json, model.safetensors) and as a GGUF file, with the outputs of Hugging
Face transformers on them (tests/formats/archs.rs and tests/edit_archs.rs compare against these).

The oracle is transformers itself (4.46.3 on Debian's python3-torch 1.13); the GGUF files are
written by gguf-py (0.19.0) following llama.cpp's converter: Q/K rows permuted for `llama`,
not for `qwen2`, Llama 3's RoPE scaling as the per-frequency `rope_freqs.weight`, and GPT-2's
`Conv1D` weights transposed with `output.weight` a copy of `token_embd.weight`.

    apt-get install python3-torch
    python3 -m venv --system-site-packages /tmp/tfenv
    /tmp/tfenv/bin/pip install transformers==4.46.3 gguf==0.19.0
    /tmp/tfenv/bin/python tests/data/archs/make.py [qwen2 llama3 gpt2]

With names, only those models are written (all three without).

Weights are stored as F16 (norms and biases F32 in the GGUF) to keep each file under 1 MB; every
parameter is rounded to f16 first, so that the reference logits are computed in f32 from exactly
the stored values.
"""

import base64
import copy
import json
import math
import os
import sys

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers, Regex
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM)
import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))

LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

PROMPTS = [
    "The Eiffel Tower is located in the city of",
    "The mother tongue of Danielle Darrieux is",
    "In 1889, 12345 visitors said: it's big!\nThen",
]
TOKEN_TESTS = PROMPTS + ["Qwen2.5-0.5B has 494,032,768 weights", "  two  spaces\n\nand  lines", "they'll've"]


def corpus():
    with open(os.path.join(ROOT, "data/wikitext/wikitext-2-raw_wiki.test.raw"), encoding="utf-8") as f:
        text = f.read()[:60000]
    # Repeated numbers, so that digit merges exist and the two split rules (digits one by one
    # for Qwen2, runs of three for Llama 3) give different ids.
    numbers = ["1889 12345 2024 494,032,768 123 1889"] * 300
    return [line for line in text.split("\n") if line.strip()] + PROMPTS + numbers


def train_tokenizer(split, specials, bos):
    tok = Tokenizer(models.BPE())
    if split is None:
        # GPT-2's own: the byte-level pre-tokenizer with its built-in regex.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def random_model(cls, cfg, seed):
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    conv1d = cls is GPT2LMHeadModel  # weights stored (in, out)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or ".ln_" in name) and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.dim() == 1:  # biases
                p.copy_(0.5 * torch.randn_like(p))
            elif p.dim() == 1 and ".ln_" in name:  # GPT-2's LayerNorm biases
                p.copy_(0.1 * torch.randn_like(p))
            elif p.dim() == 1:  # biases
                p.copy_(0.5 * torch.randn_like(p))
            elif "embed_tokens" in name or "lm_head" in name or "wte" in name or "wpe" in name:
                # Unit entries: logits of a few units, so that an edit can move them.
                p.copy_(torch.randn_like(p) * 0.5)
            else:
                fan_in = p.shape[0] if conv1d else p.shape[-1]
                p.copy_(torch.randn_like(p) / math.sqrt(fan_in) * 1.2)
            # Stored as f16: compute with exactly those values (norms and biases too, which the
            # GGUF keeps as F32 but the f16 safetensors rounds).
            p.copy_(p.half().float())
    return model


def llama_permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(cfg):
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.generate_extra_tensors (rope_freqs)."""
    rs = cfg.rope_scaling
    base = cfg.rope_theta
    dim = cfg.hidden_size // cfg.num_attention_heads
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def gguf_tokenizer(w, cfg, tok, pre, add_bos):
    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    special = {t.content for t in tok.get_added_tokens_decoder().values()}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    merges = json.loads(tok.to_str())["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    if cfg.bos_token_id is not None:
        w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_add_bos_token(add_bos)


def write_gguf_gpt2(path, cfg, model, tok):
    """llama.cpp's convert_hf_to_gguf.py GPT2Model: Conv1D weights transposed to (out, in),
    `output.weight` written as a copy of the token embedding."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    w = gguf.GGUFWriter(path, "gpt2")
    w.add_name(os.path.basename(path))
    w.add_block_count(cfg.n_layer)
    w.add_context_length(cfg.n_positions)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(4 * cfg.n_embd if cfg.n_inner is None else cfg.n_inner)
    w.add_head_count(cfg.n_head)
    w.add_layer_norm_eps(cfg.layer_norm_epsilon)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    gguf_tokenizer(w, cfg, tok, "gpt-2", False)

    def put(name, arr):
        arr = np.ascontiguousarray(arr)
        w.add_tensor(name, arr.astype(np.float16) if arr.ndim > 1 else arr.astype(np.float32))

    put("token_embd.weight", sd["transformer.wte.weight"])
    put("position_embd.weight", sd["transformer.wpe.weight"])
    for l in range(cfg.n_layer):
        p = f"transformer.h.{l}."
        for ours, theirs in [("attn_norm", "ln_1"), ("ffn_norm", "ln_2")]:
            put(f"blk.{l}.{ours}.weight", sd[p + theirs + ".weight"])
            put(f"blk.{l}.{ours}.bias", sd[p + theirs + ".bias"])
        for ours, theirs in [("attn_qkv", "attn.c_attn"), ("attn_output", "attn.c_proj"),
                             ("ffn_up", "mlp.c_fc"), ("ffn_down", "mlp.c_proj")]:
            put(f"blk.{l}.{ours}.weight", sd[p + theirs + ".weight"].T)
            put(f"blk.{l}.{ours}.bias", sd[p + theirs + ".bias"])
    put("output_norm.weight", sd["transformer.ln_f.weight"])
    put("output_norm.bias", sd["transformer.ln_f.bias"])
    put("output.weight", sd["transformer.wte.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_gguf(path, arch, cfg, model, tok, pre, add_bos):
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    w = gguf.GGUFWriter(path, arch)
    w.add_name(os.path.basename(path))
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    gguf_tokenizer(w, cfg, tok, pre, add_bos)

    def put(name, arr):
        arr = np.ascontiguousarray(arr)
        w.add_tensor(name, arr.astype(np.float16) if arr.ndim > 1 else arr.astype(np.float32))

    put("token_embd.weight", sd["model.embed_tokens.weight"])
    hd = cfg.hidden_size // cfg.num_attention_heads
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}."
        q, k = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
        if arch == "llama":
            q, k = llama_permute(q, cfg.num_attention_heads), llama_permute(k, cfg.num_key_value_heads)
        put(f"blk.{l}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        put(f"blk.{l}.attn_q.weight", q)
        put(f"blk.{l}.attn_k.weight", k)
        put(f"blk.{l}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        if arch == "qwen2":
            for x in "qkv":
                put(f"blk.{l}.attn_{x}.bias", sd[p + f"self_attn.{x}_proj.bias"])
        put(f"blk.{l}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        put(f"blk.{l}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        put(f"blk.{l}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        put(f"blk.{l}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        put(f"blk.{l}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    put("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        put("output.weight", sd["lm_head.weight"])
    if cfg.rope_scaling:
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(cfg))
    assert hd % 2 == 0
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make(name, arch, cls, cfg, split, specials, bos, pre, seed):
    if len(sys.argv) > 1 and name not in sys.argv[1:]:
        return
    out = os.path.join(HERE, name)
    os.makedirs(out, exist_ok=True)
    tok = train_tokenizer(split, specials, bos)
    cfg.vocab_size = tok.get_vocab_size()
    cfg.bos_token_id = tok.token_to_id(bos) if bos else None
    cfg.eos_token_id = tok.token_to_id(specials[-1])
    model = random_model(cls, cfg, seed)
    # A copy is halved for saving: halving the model itself would also round its RoPE
    # inv_freq buffer to f16, and the reference logits with it.
    half = copy.deepcopy(model).half()
    half.config.torch_dtype = torch.float16
    half.save_pretrained(out, safe_serialization=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=specials[-1])
    fast.save_pretrained(out)
    for extra in ["tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]:
        if os.path.exists(os.path.join(out, extra)):
            os.remove(os.path.join(out, extra))
    if arch == "gpt2":
        write_gguf_gpt2(os.path.join(HERE, f"{name}.gguf"), cfg, model, tok)
    else:
        write_gguf(os.path.join(HERE, f"{name}.gguf"), arch, cfg, model, tok, pre, bos is not None)

    golden = {"model": name, "transformers": __import__("transformers").__version__,
              "torch": torch.__version__, "tokens": {}, "prompts": []}
    for text in TOKEN_TESTS:
        golden["tokens"][text] = tok.encode(text).ids
    with torch.no_grad():
        for text in PROMPTS:
            ids = tok.encode(text).ids
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            # Greedy decoding by full forward passes (generate() needs torch.distributed, which
            # Debian's torch 1.13 cannot import on Python 3.11).
            seq = list(ids)
            for _ in range(8):
                seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
            golden["prompts"].append({"text": text, "ids": ids,
                                      "logits_shape": list(logits.shape),
                                      # f32 little-endian, base64: exact and small.
                                      "logits_f32le": base64.b64encode(logits.astype("<f4").tobytes()).decode(),
                                      "greedy": seq[len(ids):]})
    with open(os.path.join(HERE, f"{name}.golden.json"), "w") as f:
        json.dump(golden, f)


common = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6)
make("qwen2", "qwen2", Qwen2ForCausalLM,
     Qwen2Config(**common, rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False),
     QWEN2_SPLIT, ["<|endoftext|>"], None, "qwen2", seed=1)
make("llama3", "llama", LlamaForCausalLM,
     LlamaConfig(**common, rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu",
                 rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 256}),
     LLAMA3_SPLIT, ["<|begin_of_text|>", "<|end_of_text|>"], "<|begin_of_text|>", "llama-bpe", seed=2)
make("gpt2", "gpt2", GPT2LMHeadModel,
     GPT2Config(n_embd=64, n_layer=6, n_head=4, n_positions=128, n_inner=None,
                layer_norm_epsilon=1e-5, activation_function="gelu_new", resid_pdrop=0.0,
                embd_pdrop=0.0, attn_pdrop=0.0),
     None, ["<|endoftext|>"], None, "gpt-2", seed=3)
print("wrote", sorted(os.listdir(HERE)))
