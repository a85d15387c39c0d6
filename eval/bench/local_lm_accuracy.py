"""GSM8K accuracy of a local model's int4 ONNX build against its fp32 weights (``local_lm.py --accuracy N``).

The int4 answer is the onnx engine's greedy generation. The fp32 answer is the transformers
engine's greedy generation, computed by speculative verification, because fp32 decoding on the
CPU runs at ~1 token/s for the 1.5B: the int4 engine drafts ``chunk`` tokens greedily after the
fp32 tokens so far; one fp32 forward (KV cache kept) over the last fp32 token and the draft gives
fp32's greedy choice at every drafted position; the longest agreeing prefix is accepted plus
fp32's own next token, the fp32 cache is cropped to it and the drafter rewinds to it
(``rewind_to``). Every output token is fp32's argmax after the fp32 prefix, so the result is the
fp32 greedy decode (up to float rounding between a chunked and a one-token forward; ``--check-exact``
decodes the first question token by token as well and compares). The drafted positions also give
``top1_agreement``: how often int4's greedy token equals fp32's, on fp32's own trajectory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Step-by-step on purpose (the token router's GSM8K prompt asks for brevity instead).
#: "No code": the Qwen coder models otherwise often switch to a Python program and hit the token cap.
STEP_PROMPT = ("Solve the math problem step by step: write each calculation on its own line (no code), "
               "then finish with 'The answer is N.'")


@dataclass
class Verified:
    tokens: list[int] = field(default_factory=list)  # fp32 greedy tokens, end-of-turn excluded
    compared: int = 0  # drafted positions checked against fp32
    agreed: int = 0
    forwards: int = 0  # fp32 forwards after the prompt


def _sync(drafter: Any, dec: Any, target: list[int]) -> np.ndarray:
    """Make the drafter's generator hold ``target`` (rewinding to the shared prefix); next-token logits."""
    common = 0
    for x, y in zip(dec.ids, target, strict=False):
        if x != y:
            break
        common += 1
    common = min(common, len(target) - 1)  # append at least one token to get logits
    if common < len(dec.ids):
        dec.generator.rewind_to(common)
        del dec.ids[common:]
    return drafter._append(dec, target[common:])


def fp32_greedy(drafter: Any, verifier: Any, ids: list[int], max_tokens: int, chunk: int) -> Verified:
    """The verifier's greedy decode of the prompt ``ids`` (see the module docstring)."""
    import torch

    eos = verifier.eos_ids
    res = Verified()
    with torch.inference_mode():
        o = verifier.model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
    cache = o.past_key_values
    out = [int(o.logits[0, -1].argmax())]  # invariant: the cache holds ids + out[:-1]
    dec = drafter._new_decoder()
    while out[-1] not in eos and len(out) < max_tokens:
        logits = _sync(drafter, dec, ids + out)
        budget = min(chunk, max_tokens - len(out))
        draft: list[int] = []
        while True:
            tok = int(np.argmax(logits))
            draft.append(tok)
            if tok in eos or len(draft) == budget:
                break
            logits = drafter._append(dec, [tok])
        with torch.inference_mode():  # all positions' logits: no logits_to_keep
            o = verifier.model(input_ids=torch.tensor([[out[-1], *draft]]), past_key_values=cache, use_cache=True)
        cache = o.past_key_values
        greedy = o.logits[0].argmax(-1).tolist()  # greedy[i]: fp32's choice after out + draft[:i]
        n = 0
        while n < len(draft) and draft[n] == greedy[n]:
            n += 1
        res.agreed += n
        res.compared += n + (1 if n < len(draft) else 0)
        res.forwards += 1
        out += [*draft[:n], greedy[n]]
        if n < len(draft):  # drop the rejected draft tokens (crop takes a negative count here)
            cache.crop(-(len(draft) - n))
        assert cache.get_seq_length() == len(ids) + len(out) - 1, "fp32 cache out of step"
    for i, tok in enumerate(out):
        if tok in eos:
            out = out[:i]
            break
    res.tokens = out[:max_tokens]
    return res


def run_accuracy(name: str, n: int, *, max_tokens: int = 256, chunk: int = 8, check_exact: bool = False) -> dict[str, Any]:
    """int4 vs fp32 accuracy on GSM8K test questions 0..n-1 of ``name``."""
    import sys

    from triage.lm.models import get_local_lm
    from triage.settings import get_settings
    from triage.token_router.gsm8k import extract_answer, load_problems, same_answer

    problems = load_problems(get_settings().data_dir / "gsm8k" / "test.jsonl", 0, n)
    int4 = get_local_lm(name, engine="onnx")
    fp32 = get_local_lm(name, engine="transformers")
    rows: list[dict[str, Any]] = []
    exact: dict[str, Any] | None = None
    totals = Verified()
    t_start = time.perf_counter()
    for p in problems:
        msgs = [{"role": "system", "content": STEP_PROMPT}, {"role": "user", "content": p.question}]
        t0 = time.perf_counter()
        g = int4.generate(msgs, max_tokens=max_tokens, temperature=0)
        t1 = time.perf_counter()
        ids, _ = fp32.encode_chat(msgs)
        v = fp32_greedy(int4, fp32, ids, max_tokens, chunk)
        t2 = time.perf_counter()
        text32 = fp32.tokenizer.decode(v.tokens, skip_special_tokens=True)
        a4, a32 = extract_answer(g.text), extract_answer(text32)
        totals.compared += v.compared
        totals.agreed += v.agreed
        totals.forwards += v.forwards
        rows.append({"index": p.index, "reference": p.answer, "int4": a4, "fp32": a32,
                     "int4_correct": same_answer(a4, p.answer), "fp32_correct": same_answer(a32, p.answer),
                     "same_text": g.text == text32, "int4_tokens": len(g.tokens), "fp32_tokens": len(v.tokens),
                     "int4_hit_cap": g.finish_reason == "length", "fp32_hit_cap": len(v.tokens) >= max_tokens,
                     "fp32_forwards": v.forwards, "top1_agreement": round(v.agreed / max(v.compared, 1), 4),
                     "same_prompt_ids": list(int4.encode_chat(msgs)[0]) == ids,
                     "int4_s": round(t1 - t0, 1), "fp32_s": round(t2 - t1, 1),
                     "int4_tail": g.text[-160:], "fp32_tail": text32[-160:]})
        print(f"[accuracy] q{p.index}: ref {p.answer} int4 {a4} fp32 {a32} "
              f"agree {rows[-1]['top1_agreement']} ({t2 - t0:.0f} s)", file=sys.stderr, flush=True)
        if check_exact and exact is None:
            ref = fp32.generate(msgs, max_tokens=max_tokens, temperature=0)
            plain = [t.token_id for t in ref.tokens]
            diff = next((i for i, (x, y) in enumerate(zip(plain, v.tokens, strict=False)) if x != y), None)
            if diff is None and len(plain) != len(v.tokens):
                diff = min(len(plain), len(v.tokens))
            exact = {"index": p.index, "identical": diff is None, "first_difference": diff,
                     "tokens": len(plain), "plain_decode_s": round(ref.seconds, 1)}
    c4 = sum(r["int4_correct"] for r in rows)
    c32 = sum(r["fp32_correct"] for r in rows)
    out_tokens = sum(r["fp32_tokens"] for r in rows)
    return {
        "model": name, "questions": len(rows), "max_tokens": max_tokens, "draft_chunk": chunk,
        "prompt": STEP_PROMPT, "int4_quantization": int4.card.data.get("quantization"),
        "int4_accuracy": round(c4 / len(rows), 4), "fp32_accuracy": round(c32 / len(rows), 4),
        "accuracy_difference": round((c4 - c32) / len(rows), 4),  # int4 - fp32
        "top1_agreement": round(totals.agreed / max(totals.compared, 1), 4),
        "same_answer_rate": round(sum(same_answer(r["int4"], r["fp32"]) for r in rows) / len(rows), 4),
        "same_text_rate": round(sum(r["same_text"] for r in rows) / len(rows), 4),
        "fp32_tokens_per_forward": round(out_tokens / max(totals.forwards, 1), 2),
        "exact_check": exact, "seconds": round(time.perf_counter() - t_start, 1), "rows": rows,
    }
