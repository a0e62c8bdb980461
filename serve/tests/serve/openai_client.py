"""The official `openai` SDK against the server: argv[1] is its base URL.

Prints one JSON object: the whole and streamed answers of persona `alice`, and the SDK's
exception class for each refusal (a long stream holds the server's only place meanwhile).
"""
import json
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0)
messages = [{"role": "user", "content": "Hi"}]
out = {}

whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, extra_body={"persona": "alice"})
out["whole"] = whole.choices[0].message.content
out["whole_finish"] = whole.choices[0].finish_reason

parts, finish = [], None
for chunk in client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, stream=True, extra_body={"persona": "alice"}):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.choices and chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason
out["stream"] = "".join(parts)
out["stream_finish"] = finish


def refusal(**kwargs):
    try:
        client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, **kwargs)
    except openai.APIStatusError as e:
        return [type(e).__name__, e.status_code, (e.body or {}).get("code")]
    return None


out["bad_temperature"] = refusal(temperature=5)
out["no_persona"] = refusal(extra_body={"persona": "nobody"})
hold = client.chat.completions.create(model="tiny", messages=messages, max_tokens=1900, stream=True, extra_body={"ignore_eos": True})
next(iter(hold))
out["full"] = refusal()
hold.close()
print(json.dumps(out))
