"""Rewrite a GGUF file with every 2-D weight quantized to Q8_0 (from its dequantized values), the
other tensors float32: a llama.cpp file of the type `--dtype q8_0` keeps (its blocks along the
input dimension, as llama.cpp's). Run with the PyTorch venv (it has the `gguf` package):

    .cache/torch-venv/bin/python xtask/bench/gguf_to_q8_0.py IN.gguf OUT.gguf
"""
import sys
import numpy as np
import gguf
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as Q
src, dst = sys.argv[1], sys.argv[2]
r = GGUFReader(src)
arch = r.fields["general.architecture"]
arch = bytes(arch.parts[arch.data[0]]).decode()
w = GGUFWriter(dst, arch)
for name, field in r.fields.items():
    if name.startswith("GGUF.") or name == "general.architecture":
        continue
    t = field.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        sub = field.types[1]
        if sub == gguf.GGUFValueType.STRING:
            vals = [bytes(field.parts[i]).decode("utf-8", errors="surrogateescape") for i in field.data]
        else:
            vals = [field.parts[i].tolist()[0] for i in field.data]
        w.add_key_value(name, vals, t, sub_type=sub)
    elif t == gguf.GGUFValueType.STRING:
        w.add_key_value(name, bytes(field.parts[field.data[0]]).decode("utf-8", errors="surrogateescape"), t)
    else:
        w.add_key_value(name, field.parts[field.data[0]].tolist()[0], t)
for t in r.tensors:
    shape = [int(x) for x in reversed(t.shape)]  # PyTorch order
    vals = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
    if len(shape) == 2 and shape[-1] % 32 == 0:
        q = gguf.quants.quantize(vals, Q.Q8_0)
        w.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=Q.Q8_0)
    else:
        w.add_tensor(t.name, vals)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print("wrote", dst)
