"""Parity fixtures from Hugging Face transformers for a GGUF model (the pinned models of `fetch-model`).

transformers loads the GGUF file itself (its own dequantisation and tokenizer conversion, float32,
sdpa attention) and runs the prompts the benchmark uses: items asked under the default system
prompt, with and without the prefill "Option", and a ~1,400-token few-shot prompt (the first
development person's 120 known answers in the system prompt, corrected keying).

Per prompt it records the rendered text, the token ids, the top-5, the logits of the option
letters and a sample of the last position's logits (the top 32 ids and every 64th id) in
`fixtures.json`, and for two prompts each layer's input of `o_proj` at the last position
(its norm and every 8th value per layer, in `fixtures.json`; no tensor files).

    python make_fixtures.py MODEL.gguf OUT_DIR
    # e.g. .cache/torch-venv/bin/python llm-burn/tests/data/make_fixtures.py \
    #   .cache/gguf/SmolLM2-135M-Instruct.gguf llm-burn/tests/data/smollm2-135m-instruct
"""
import csv, json, sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf = Path(sys.argv[1])
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
root = Path(__file__).resolve().parents[3]
papi = root / "data" / "papi"

torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="sdpa")
model.eval()
cfg = model.config

items = {int(r["Full#"]): r for r in csv.DictReader(open(papi / "IPIP-NEO-ItemKey.csv"))}
LABELS = ["Unknown", "Very Inaccurate", "Moderately Inaccurate", "Neither Accurate Nor Inaccurate", "Moderately Accurate", "Very Accurate"]
DEFAULT_SYSTEM = "You are a helpful, honest and concise assistant."


def question(text):
    return (f'Given a statement of you: "You {text.lower()}."\nPlease choose from the following options to identify how '
            "accurately this statement describes you.\nOptions:\n(A). Very Accurate\n(B). Moderately Accurate\n"
            "(C). Neither Accurate Nor Inaccurate\n(D). Moderately Inaccurate\n(E). Very Inaccurate\n")


def few_shot_system():
    split = json.load(open(papi / "mpi_300_split.json"))
    person = json.load(open(papi / "papi-dev-200.json"))[0]
    pairs = []
    for n in split["train_index"]:
        stored = int(person[f"i{n}"])
        if stored == 0:
            continue
        answer = 6 - stored if items[n]["Sign"].startswith("-") else stored
        pairs.append(f'{items[n]["Item"]}:{LABELS[answer]}')
    return "Here are some of your behaviors and your level of recognition towards them;" + ";".join(pairs)


prompts = [
    ("item1", DEFAULT_SYSTEM, question(items[1]["Item"]), "", True),
    ("item1_option", DEFAULT_SYSTEM, question(items[1]["Item"]), "Option", True),
    ("item2_option", DEFAULT_SYSTEM, question(items[2]["Item"]), "Option", False),
    ("item3_option_paren", DEFAULT_SYSTEM, question(items[3]["Item"]), "Option (", False),
    ("fewshot_item4_option", few_shot_system(), question(items[4]["Item"]), "Option", True),
]

HEAD_STRIDE = 8


def head_sample(h):
    """Each layer's head outputs [layers, width] as its norm and every HEAD_STRIDE-th value."""
    h = h.astype(np.float32)
    return {"shape": list(h.shape), "stride": HEAD_STRIDE, "norms": [float(np.sqrt((r * r).sum())) for r in h],
            "sample": [[float(v) for v in r[::HEAD_STRIDE]] for r in h]}


captured = {}
def hook(layer):
    def f(module, args):
        captured[layer] = args[0][0, -1].detach().clone()
    return f
for i, layer in enumerate(model.model.layers):
    layer.self_attn.o_proj.register_forward_pre_hook(hook(i))

letters = {c: tok.convert_tokens_to_ids(tok.tokenize(" " + c))[0] for c in "ABCDE"}
sample_ids = None
records = []
for name, system, user, prefill, heads in prompts:
    text = tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": user}], tokenize=False, add_generation_prompt=True) + prefill
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float().numpy()
    top = np.argsort(-logits)
    ids_sample = sorted(set(range(0, logits.size, 64)) | set(int(i) for i in top[:32]))
    logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    records.append({
        "name": name, "system": system, "user": user, "assistant_prefill": prefill, "prompt": text,
        "token_ids": ids,
        "top5": [{"id": int(i), "token": tok.convert_ids_to_tokens(int(i)), "logit": float(logits[i]), "logprob": float(logp[i])} for i in top[:5]],
        "option_letter_logits": {c: float(logits[i]) for c, i in letters.items()},
        "logit_sample_ids": ids_sample,
        "logit_sample": [float(logits[i]) for i in ids_sample],
        "head_outputs": head_sample(torch.stack([captured[l] for l in range(cfg.num_hidden_layers)]).numpy()) if heads else None,
    })
    print(name, len(ids), "tokens; top", records[-1]["top5"][0])

head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
meta = {
    "model": f"{gguf.name} loaded by transformers' GGUF support (float32, sdpa)",
    "torch": torch.__version__, "transformers": transformers.__version__,
    "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
    "num_key_value_heads": cfg.num_key_value_heads, "head_dim": head_dim, "hidden_size": cfg.hidden_size,
    "vocab_size": cfg.vocab_size, "rope_theta": getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"],
    "tie_word_embeddings": cfg.tie_word_embeddings, "option_letter_token_ids": letters,
    "head_outputs_layout": "[layer, head*head_dim + d]: input of self_attn.o_proj at the last position",
}
(out / "fixtures.json").write_text(json.dumps({"meta": meta, "prompts": records}, indent=1) + "\n")
