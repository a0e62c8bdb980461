"""Reference dequantisation values for llm-burn's GGUF block types, from real tensors.

For each block type found in the given GGUF files, the first tensor of that type gives its
first BLOCKS blocks: the raw bytes (`<TYPE>.bin`) and the `gguf` Python package's
dequantisation of them (`<TYPE>.npy`, float32), plus `manifest.json` naming the file and
tensor each came from. llm-burn's test `dequantisation_matches_the_gguf_package` compares.

    python make_dequant.py OUT_DIR model-a.gguf [model-b.gguf ...]
    python make_dequant.py --whole model.gguf    # writes model.dequant-check.json beside it:
                                                 # each tensor's SHA-256 of its float32 values
"""
import hashlib, json, sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

BLOCKS = 64
WANTED = {"Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K"}

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
for path in sys.argv[2:]:
    reader = GGUFReader(path)
    for t in reader.tensors:
        name = t.tensor_type.name
        if name not in WANTED or name in manifest:
            continue
        block_size, type_size = GGML_QUANT_SIZES[t.tensor_type]
        raw = np.asarray(t.data).view(np.uint8).reshape(-1)[: BLOCKS * type_size].copy()
        values = dequantize(raw, t.tensor_type).astype(np.float32).reshape(-1)
        assert values.size == BLOCKS * block_size
        raw.tofile(out / f"{name}.bin")
        np.save(out / f"{name}.npy", values)
        manifest[name] = {"file": Path(path).name, "tensor": t.name, "blocks": BLOCKS,
                          "bin_sha256": hashlib.sha256(raw.tobytes()).hexdigest()}
(out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
print(json.dumps(manifest, indent=1))
