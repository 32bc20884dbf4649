#!/usr/bin/python3
"""PyTorch reference for `nse bench forward`: the same work on the same CPU.

Loads the default model exported by `nse export` (model.safetensors + config.json, F32, Hugging
Face layout), and times what `nse bench forward` times: prefill of the same 128-token prompt
(last-position logits), then 64 greedy decode steps with a KV cache, plus load time and peak RSS.
The model code is a plain Llama (rotate-half RoPE, grouped KV heads, RMSNorm, SwiGLU), the same
maths as Hugging Face's, written out here because transformers is not installable on this machine.

Needs Debian's python3-torch (torch 1.13.1, the version the golden files were made with):
    apt-get install python3-torch
    cargo run --release -- export --out artifacts/export
    cargo run --release -- bench forward --backend cpu      # writes the prompt ids it used
    /usr/bin/python3 scripts/torch_reference_bench.py artifacts/export artifacts/bench/prompt-ids.json [threads]
It prints JSON; docs/results/torch-reference.json holds the committed result.
"""
import json
import resource
import struct
import sys
import time

import numpy as np
import torch


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        assert info["dtype"] == "F32"
        arr = np.frombuffer(data, dtype="<f4", count=(b - a) // 4, offset=base + a).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


class Llama:
    def __init__(self, w, cfg):
        self.w, self.cfg = w, cfg
        self.L = cfg["num_hidden_layers"]
        self.h, self.kvh = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.hd = cfg["hidden_size"] // self.h
        self.eps = cfg["rms_norm_eps"]
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, self.hd, 2).float() / self.hd))
        pos = torch.arange(cfg["max_position_embeddings"]).float()
        freqs = torch.outer(pos, inv)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.cos, self.sin = emb.cos(), emb.sin()
        self.head = w.get("lm_head.weight", w["model.embed_tokens.weight"])

    def norm(self, x, wt):
        return wt * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rope(self, x, pos):  # x (T, H, hd)
        c, s = self.cos[pos][:, None, :], self.sin[pos][:, None, :]
        x1, x2 = x[..., : self.hd // 2], x[..., self.hd // 2 :]
        return x * c + torch.cat([-x2, x1], dim=-1) * s

    def forward(self, ids, cache):
        """ids: list of new tokens; cache: list of (k, v) per layer, appended in place. Returns last logits."""
        w = self.w
        t0 = cache[0][0].shape[0] if cache[0][0] is not None else 0
        pos = torch.arange(t0, t0 + len(ids))
        x = w["model.embed_tokens.weight"][torch.tensor(ids)]
        T = len(ids)
        for l in range(self.L):
            p = f"model.layers.{l}."
            h = self.norm(x, w[p + "input_layernorm.weight"])
            q = (h @ w[p + "self_attn.q_proj.weight"].T).view(T, self.h, self.hd)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(T, self.kvh, self.hd)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, self.kvh, self.hd)
            q, k = self.rope(q, pos), self.rope(k, pos)
            if cache[l][0] is not None:
                k, v = torch.cat([cache[l][0], k]), torch.cat([cache[l][1], v])
            cache[l] = (k, v)
            g = self.h // self.kvh
            kk, vv = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
            att = torch.einsum("thd,shd->hts", q, kk) / self.hd**0.5
            S = kk.shape[0]
            mask = torch.arange(S)[None, :] > (pos[:, None])
            att = att.masked_fill(mask[None], float("-inf")).softmax(-1)
            o = torch.einsum("hts,shd->thd", att, vv).reshape(T, -1)
            x = x + o @ w[p + "self_attn.o_proj.weight"].T
            h = self.norm(x, w[p + "post_attention_layernorm.weight"])
            m = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)
            x = x + m @ w[p + "mlp.down_proj.weight"].T
        x = self.norm(x[-1:], w["model.norm.weight"])
        return x @ self.head.T


def main():
    export_dir, prompt_path = sys.argv[1], sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    torch.set_num_threads(threads)
    prompt = json.load(open(prompt_path))["prompt_ids"]
    decode = 64
    t0 = time.perf_counter()
    w = load_safetensors(f"{export_dir}/model.safetensors")
    cfg = json.load(open(f"{export_dir}/config.json"))
    model = Llama(w, cfg)
    load_s = time.perf_counter() - t0
    best_prefill, best_decode = float("inf"), float("inf")
    with torch.no_grad():
        for rnd in range(4):  # one warm-up round, three timed
            cache = [(None, None)] * model.L
            t0 = time.perf_counter()
            nxt = int(model.forward(prompt, cache).argmax())
            prefill = time.perf_counter() - t0
            t1 = time.perf_counter()
            for _ in range(decode):
                nxt = int(model.forward([nxt], cache).argmax())
            dec = time.perf_counter() - t1
            if rnd > 0:
                best_prefill, best_decode = min(best_prefill, prefill), min(best_decode, dec)
    print(json.dumps({
        "what": f"PyTorch {torch.__version__} (Debian python3-torch, CPU, float32, {threads} thread(s)), "
                "plain Llama forward with KV cache, same prompt and token counts, scripts/torch_reference_bench.py",
        "threads": threads,
        "prefill_tokens": len(prompt), "decode_tokens": decode,
        "results": {
            "prefill_tokens_per_s": len(prompt) / best_prefill,
            "decode_tokens_per_s": decode / best_decode,
            "load_seconds": load_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
    }, indent=2))


if __name__ == "__main__":
    main()
