"""The llama.cpp side of `cargo xtask engine-bench --llamacpp`: the same work units on the
model's GGUF file (its own weight types), through xllamacpp's in-process server API, or
through a running llama-server (a native build) over HTTP on this machine: the same server
code, the same requests.

Usage (the xtask runs it; by hand for debugging):
    python llamacpp_engine.py --gguf FILE --work WORK.json --out OUTDIR --threads N
    python llamacpp_engine.py --server http://127.0.0.1:PORT --work WORK.json --out OUTDIR

Units it runs (the others, per-row steering and head capture, have no llama.cpp equivalent):
  prefill: one row from an empty cache (cache_prompt off), best of `repeats`; the time is
           llama.cpp's own prompt-evaluation time.
  score:   the prefix, then each row as prefix + row in one slot with cache_prompt on, so the
           prefix's KV cache is computed once and reused (llama.cpp's prompt cache); the time
           is the whole sequence, wall clock.
Writes OUTDIR/llamacpp.json ({"versions", "weights", "units": {name: {"seconds"}}}) and
OUTDIR/llamacpp-<name>.f32: for score units, the choices' log-probabilities where they are
among the 40 most probable next tokens (NaN otherwise).
"""

import argparse
import json
import math
import os
import struct
import time
import urllib.request


class Http:
    """A llama-server already running (started with the model), asked over HTTP."""

    def __init__(self, url):
        self.url = url.rstrip("/")

    def handle_completions(self, body):
        req = urllib.request.Request(self.url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.load(r)

    def versions(self):
        with urllib.request.urlopen(self.url + "/props", timeout=60) as r:
            props = json.load(r)
        return {"llama-server": str(props.get("build_info", "?"))}


def start(gguf, threads, n_ctx):
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = gguf
    p.n_parallel = 1
    p.n_ctx = n_ctx
    p.n_batch = 2048
    p.n_ubatch = 512
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    return xlc.Server(p)


def complete(server, ids, cache, n_probs=0):
    r = server.handle_completions({"prompt": ids, "n_predict": 1, "cache_prompt": cache, "n_probs": n_probs, "temperature": 0})
    if "error" in r:
        raise RuntimeError(r["error"])
    return r


def run_prefill(server, unit):
    best = math.inf
    for _ in range(unit["repeats"]):
        r = complete(server, unit["rows"][0], cache=False)
        best = min(best, r["timings"]["prompt_ms"] / 1000)
    return best, []


def run_score(server, unit):
    prefix, choices = unit["prefix"], unit["choices"]
    out = []
    t = time.perf_counter()
    complete(server, prefix, cache=True)
    for row in unit["rows"]:
        r = complete(server, prefix + row, cache=True, n_probs=40)
        top = {p["id"]: p["logprob"] for p in r["choices"][0]["logprobs"]["content"][0]["top_logprobs"]}
        out.extend(top.get(c, math.nan) for c in choices)
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf")
    ap.add_argument("--server", help="a running llama-server's address, instead of --gguf in process")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    work = json.load(open(a.work))
    longest = max(len(u.get("prefix", [])) + max(len(r) for r in u["rows"]) for u in work["units"])
    if a.server:
        server = Http(a.server)
        versions = server.versions()
    else:
        import xllamacpp as xlc

        server = start(a.gguf, a.threads, max(4096, longest + 64))
        versions = {"xllamacpp": xlc.__version__ if hasattr(xlc, "__version__") else "?", "build": str(getattr(xlc, "BUILD_INFO", ""))[:200]}
    complete(server, [1, 2, 3, 4], cache=False)  # warm-up
    units = {}
    for unit in work["units"]:
        if unit["kind"] == "prefill":
            secs, data = run_prefill(server, unit)
        elif unit["kind"] == "score" and unit.get("steer") is None:
            secs, data = run_score(server, unit)
        else:
            continue
        units[unit["name"]] = {"seconds": secs}
        with open(os.path.join(a.out, f"llamacpp-{unit['name']}.f32"), "wb") as f:
            f.write(struct.pack(f"<{len(data)}f", *data))
        print(f"llama.cpp: {unit['name']}: {secs:.3f} s", flush=True)
    info = {"versions": versions, "units": units}
    json.dump(info, open(os.path.join(a.out, "llamacpp.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
