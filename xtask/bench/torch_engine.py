"""The PyTorch side of `cargo xtask engine-bench`: runs the same work units as our engine on
the same converted model folder with transformers, and writes timings and outputs.

Usage (the xtask runs it; by hand for debugging):
    python torch_engine.py --model DIR --work WORK.json --out OUTDIR

WORK.json (written by the xtask): {"threads": N, "units": [...]}, each unit one of
  {"name", "kind": "prefill", "rows": [[ids]], "repeats": R}
  {"name", "kind": "score", "prefix": [ids], "rows": [[ids]...], "batch": B,
   "choices": [ids], "steer": null | [[row's layers*width floats]...]}
  {"name", "kind": "capture", "rows": [[ids]...], "batch": B}
  {"name", "kind": "train-step", "prompts": [[ids]...], "choices": [5 ids], "pairs": [[c, r]...],
   "rank": R, "alpha": A, "beta": b, "learning_rate": lr, "repeats": N}
Writes OUTDIR/torch.json ({"versions": {...}, "units": {name: {"seconds", "tokens"}}}) and
OUTDIR/torch-<name>.f32 (raw little-endian float32 outputs: last-position logits for prefill,
[rows, choices] log-probabilities for score, [rows, layers, width] head outputs for capture,
[loss, grad_norm] of the first step for train-step).

Every forward runs under torch.inference_mode in float32 with sdpa attention, the KV cache of
the shared prefix computed once and repeated per batch (as transformers' own generation does),
and vocabulary logits computed only where they are read.
"""

import argparse
import copy
import json
import math
import os
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def right_pad(rows):
    """Rows right-padded with 0 to one length, their attention mask and lengths."""
    n = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), n), dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask, torch.tensor([len(r) for r in rows])


class HeadHooks:
    """Forward pre-hooks on every layer's o_proj: add a per-row displacement to its input
    (the head outputs) and/or record the input at each row's last real position."""

    def __init__(self, model):
        self.add = None  # [layers] of [b, 1, width] tensors or None
        self.capture_at = None  # [b] positions
        self.captured = []
        self.handles = [
            layer.self_attn.o_proj.register_forward_pre_hook(self._hook(l))
            for l, layer in enumerate(model.model.layers)
        ]

    def _hook(self, l):
        def hook(_module, args):
            x = args[0]
            if self.capture_at is not None:
                self.captured.append(x[torch.arange(x.shape[0]), self.capture_at].clone())
            if self.add is not None and self.add[l] is not None:
                return (x + self.add[l],)
            return None

        return hook


def prefill(model, unit):
    ids = torch.tensor([unit["rows"][0]])
    best, logits = None, None
    for _ in range(unit.get("repeats", 1)):
        t = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
        logits = out.logits[0, -1]
    return best, ids.numel(), logits


def score(model, hooks, unit, layers, width):
    """The prefix once (unsteered, cached), then the rows in batches continuing it, each row
    with its own steering if the unit has one; log-probabilities of the choices after each row."""
    choices = torch.tensor(unit["choices"])
    prefix = torch.tensor([unit["prefix"]])
    p = prefix.shape[1]
    steer = unit.get("steer")
    t = time.perf_counter()
    cache = model.model(input_ids=prefix, use_cache=True).cache
    out = []
    tokens = p
    rows = unit["rows"]
    for start in range(0, len(rows), unit["batch"]):
        chunk = rows[start : start + unit["batch"]]
        b = len(chunk)
        ids, mask, lens = right_pad(chunk)
        c = copy.deepcopy(cache)
        c.batch_repeat_interleave(b)
        am = torch.cat([torch.ones((b, p), dtype=torch.long), mask], 1)
        pos = (p + torch.arange(ids.shape[1])).unsqueeze(0).expand(b, -1)
        if steer is not None:
            d = torch.tensor(steer[start : start + b]).view(b, layers, width)
            hooks.add = [d[:, l].unsqueeze(1) for l in range(layers)]
        h = model.model(input_ids=ids, attention_mask=am, position_ids=pos, cache=c, use_cache=True).last_hidden_state
        hooks.add = None
        tokens += int(mask.sum())
        last = h[torch.arange(b), lens - 1]
        lp = torch.log_softmax(model.lm_head(last), -1)[:, choices]
        out.append(lp)
    return time.perf_counter() - t, tokens, torch.cat(out)


def capture(model, hooks, unit):
    rows = unit["rows"]
    t = time.perf_counter()
    out = []
    tokens = 0
    for start in range(0, len(rows), unit["batch"]):
        chunk = rows[start : start + unit["batch"]]
        ids, mask, lens = right_pad(chunk)
        hooks.capture_at = lens - 1
        hooks.captured = []
        model.model(input_ids=ids, attention_mask=mask, use_cache=False)
        hooks.capture_at = None
        out.append(torch.stack(hooks.captured, 1))  # [b, layers, width]
        tokens += int(mask.sum())
    return time.perf_counter() - t, tokens, torch.cat(out)


LORA_TARGETS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def a_init(k, inputs, rank):
    """The k-th adapter's A ([in, rank]), the hash our engine uses (xtask/src/train_step.rs)."""
    e = torch.arange(inputs * rank, dtype=torch.int64)
    u = ((e * 2654435761 + (k + 1) * 40503) % (1 << 32)).to(torch.float64) / 4294967296.0
    return ((2.0 * u - 1.0) / math.sqrt(inputs)).to(torch.float32).view(inputs, rank)


class LoraLinear(torch.nn.Module):
    """A frozen linear layer plus a LoRA update: y = base(x) + (x A) B * alpha / rank."""

    def __init__(self, base, a, rank, scale):
        super().__init__()
        self.base, self.scale = base, scale
        self.a = torch.nn.Parameter(a.clone())
        self.b = torch.nn.Parameter(torch.zeros(rank, base.out_features))

    def forward(self, x):
        return self.base(x) + (x @ self.a) @ self.b * self.scale


def train_step(model, unit):
    """One DPO step (the prompts right-padded in one batch, as TRL runs them), best of
    `repeats`, each from the same adapters; the base weights have no gradient."""
    rank, scale = unit["rank"], unit["alpha"] / unit["rank"]
    wrapped = []
    for l, layer in enumerate(model.model.layers):
        for t, path in enumerate(LORA_TARGETS):
            parent_name, leaf = path.split(".")
            parent = getattr(layer, parent_name)
            base = getattr(parent, leaf)
            lora = LoraLinear(base, a_init(l * len(LORA_TARGETS) + t, base.in_features, rank), rank, scale)
            setattr(parent, leaf, lora)
            wrapped.append((parent, leaf, base, lora))
    params = [p for (_, _, _, m) in wrapped for p in (m.a, m.b)]
    ids, mask, lens = right_pad(unit["prompts"])
    n = len(unit["prompts"])
    rows = torch.arange(n)
    choices = torch.tensor(unit["choices"])
    chosen = torch.tensor([p[0] for p in unit["pairs"]])
    rejected = torch.tensor([p[1] for p in unit["pairs"]])

    def option_logprobs():
        h = model.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        return torch.log_softmax(model.lm_head(h[rows, lens - 1]), -1)[:, choices]

    with torch.no_grad():
        ref = option_logprobs()
    best, first = None, None
    for _ in range(unit["repeats"]):
        with torch.no_grad():
            for k, (_, _, base, m) in enumerate(wrapped):
                m.a.copy_(a_init(k, base.in_features, rank))
                m.b.zero_()
        opt = torch.optim.AdamW(params, lr=unit["learning_rate"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        t = time.perf_counter()
        lp = option_logprobs()
        margin = (lp[rows, chosen] - ref[rows, chosen]) - (lp[rows, rejected] - ref[rows, rejected])
        loss = -torch.nn.functional.logsigmoid(unit["beta"] * margin).mean()
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
        if first is None:
            first = torch.tensor([loss.item(), norm.item()])
    for parent, leaf, base, _ in wrapped:
        setattr(parent, leaf, base)
    return best, int(mask.sum()), first


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    work = json.load(open(args.work))
    torch.set_num_threads(work["threads"])
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    cfg = model.config
    layers, width = cfg.num_hidden_layers, cfg.num_attention_heads * (cfg.hidden_size // cfg.num_attention_heads)
    hooks = HeadHooks(model)
    results = {}
    with torch.inference_mode():
        model(input_ids=torch.tensor([[1, 2, 3, 4]]))  # warm-up
    for p in model.parameters():
        p.requires_grad_(False)
    for unit in work["units"]:
        kind = unit["kind"]
        with torch.inference_mode(kind != "train-step"):
            if kind == "train-step":
                secs, tokens, data = train_step(model, unit)
            elif kind == "prefill":
                secs, tokens, data = prefill(model, unit)
            elif kind == "score":
                secs, tokens, data = score(model, hooks, unit, layers, width)
            elif kind == "capture":
                secs, tokens, data = capture(model, hooks, unit)
            else:
                raise SystemExit(f"unknown unit kind {kind!r}")
            data.contiguous().to(torch.float32).numpy().tofile(os.path.join(args.out, f"torch-{unit['name']}.f32"))
            results[unit["name"]] = {"seconds": secs, "tokens": tokens}
            print(f"torch: {unit['name']}: {secs:.3f} s", file=sys.stderr, flush=True)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads()}
    json.dump({"versions": versions, "units": results}, open(os.path.join(args.out, "torch.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
