"""Makes tests/data/kquants/: one small GGUF holding a tensor of every K-quant and 5-bit GGML
type nse reads (Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) beside an F32 one, as a Q4_K_M/Q5_K_M file mixes
them, and the f32 values the reference dequantiser gives for each: gguf-py's NumPy code (the
`gguf` package on PyPI), the oracle of `tests/formats/kquants.rs`.

The blocks are random bytes with valid scales: every f16 scale field is a finite value drawn
from a normal distribution, so that no block decodes to NaN or infinity.

    python3 -m venv /tmp/ggufenv && /tmp/ggufenv/bin/pip install gguf==0.19.0 numpy==2.4.6
    /tmp/ggufenv/bin/python tests/data/kquants/make.py

Writes mixture.gguf (about 12 kB) and expected.bin: for each tensor in file order, its name
length (u32 LE), name (UTF-8), value count (u32 LE) and values (f32 LE).
"""

import struct
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

HERE = Path(__file__).parent
rng = np.random.default_rng(20261203)

# (type, byte offsets of the f16 scale fields in a block, blocks)
TYPES = [
    (T.Q5_0, [0], 8),
    (T.Q5_1, [0, 2], 8),
    (T.Q4_K, [0, 2], 3),
    (T.Q5_K, [0, 2], 3),
    (T.Q6_K, [208], 3),
]


def blocks(qtype, scale_offsets, n_blocks):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in scale_offsets:
        scale = rng.normal(0.0, 0.05, size=n_blocks).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return raw, block_size * n_blocks


writer = GGUFWriter(str(HERE / "mixture.gguf"), arch="llama")
writer.add_name("nse k-quant mixture fixture")
expected = []
f32 = rng.normal(size=(2, 8)).astype(np.float32)
writer.add_tensor("f32.weight", f32)
expected.append(("f32.weight", f32.reshape(-1)))
for qtype, offsets, n_blocks in TYPES:
    raw, n = blocks(qtype, offsets, n_blocks)
    name = f"{qtype.name.lower()}.weight"
    # One row of n weights: GGUF dims [n], stored as the raw blocks.
    writer.add_tensor(name, raw.reshape(-1), raw_dtype=qtype)
    values = dequantize(raw.reshape(-1), qtype).reshape(-1).astype(np.float32)
    assert np.isfinite(values).all(), name
    expected.append((name, values))
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()

with open(HERE / "expected.bin", "wb") as out:
    for name, values in expected:
        encoded = name.encode()
        out.write(struct.pack("<I", len(encoded)) + encoded)
        out.write(struct.pack("<I", values.size) + values.astype("<f4").tobytes())
print({name: values.size for name, values in expected})
