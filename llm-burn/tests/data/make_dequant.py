"""Reference dequantisation values for llm-burn's GGUF block types, from the `gguf` package.

For each block type, 64 blocks of deterministic pseudo-random bytes (SplitMix64 from seed
0x5EED + the type's number, the half-precision scale fields masked to finite values: the same
bytes llm-burn's test `dequantisation_matches_the_gguf_package` builds) are dequantised by the
`gguf` Python package; `dequant.json` records, per type, the SHA-256 of those bytes and of the
float32 values, and the first 8 values. No tensor data is stored: real tensors are checked whole
where a model is fetched (`--whole`).

    python make_dequant.py OUT_DIR
    python make_dequant.py --whole model.gguf    # writes model.dequant-check.json beside it:
                                                 # each tensor's SHA-256 of its float32 values
"""
import hashlib, json, sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

BLOCKS = 64
# Byte offsets of each type's float16 fields within a block.
HALVES = {"Q4_1": [0, 2], "Q5_0": [0], "Q8_0": [0], "Q4_K": [0, 2], "Q6_K": [208]}
M64 = (1 << 64) - 1


def splitmix(state):
    while True:
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        yield z ^ (z >> 31)


def blocks(kind):
    _, type_size = GGML_QUANT_SIZES[kind]
    rng = splitmix(0x5EED + kind.value)
    raw = bytearray(next(rng) & 0xFF for _ in range(BLOCKS * type_size))
    for b in range(BLOCKS):
        for off in HALVES[kind.name]:
            i = b * type_size + off
            raw[i + 1] &= 0xBB  # exponent below all-ones: finite
    return bytes(raw)


if sys.argv[1] == "--whole":
    path = Path(sys.argv[2])
    sums = {}
    for t in GGUFReader(path).tensors:
        values = dequantize(np.asarray(t.data), t.tensor_type).astype("<f4")
        sums[t.name] = hashlib.sha256(values.tobytes()).hexdigest()
    path.with_suffix(".dequant-check.json").write_text(json.dumps(sums, indent=1) + "\n")
    sys.exit(0)

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
manifest = {}
for name in HALVES:
    kind = GGMLQuantizationType[name]
    raw = blocks(kind)
    values = dequantize(np.frombuffer(raw, dtype=np.uint8), kind).astype("<f4").reshape(-1)
    assert np.isfinite(values).all()
    manifest[name] = {"type": kind.value, "blocks": BLOCKS, "bytes_sha256": hashlib.sha256(raw).hexdigest(),
                      "values_sha256": hashlib.sha256(values.tobytes()).hexdigest(),
                      "first": [float(v) for v in values[:8]]}
(out / "dequant.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
print(json.dumps(manifest, indent=1))
