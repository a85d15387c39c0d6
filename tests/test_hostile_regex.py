"""Hostile query text: long runs that once froze the server (the lexical regexes backtracked
quadratically: ``"a" * 40_000`` took ~10 s inside ``re``, holding the GIL).

* Every lexical pattern is linear: named pathological runs and hypothesis-generated runs of 100k+
  characters (letters, digits, punctuation, whitespace, mixed scripts) each take well under a second,
  uncapped; through the capped feature path and the default probe, 1 MB runs do too.
* The feature values did not change: the original patterns and the linear ones give identical
  lexical vectors on ~400 real prompts from the shared data (the default probe's heads read them).
* The probe-text cap (``triage.probes.features.base.cap_text``) leaves texts up to 32 KiB alone and is what
  every text feature reads.
* The local model refuses a prompt that cannot fit before the full tokenization; its floor and
  count never overshoot the exact token count.
* The real sidecar on loopback (policies/examples/local.yaml, SmolLM2): a ~1 MB single-token message
  is answered or refused with a JSON 4xx within 2 s while every /healthz answers within 100 ms.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triage.probes.features import lexical
from triage.probes.features.base import TEXT_HEAD_CHARS, TEXT_TAIL_CHARS, cap_text
from triage.probes.features.lexical import FEATURE_NAMES, LexicalFeature, lexical_vector

FUZZ_CHARS = 100_003  # "100k+": a length the old patterns needed minutes for
BIG_CHARS = 1_000_000
LINEAR_BUDGET_S = 1.0  # uncapped 100k chars; the old patterns took ~50 s on 100k digits
PROBE_BUDGET_S = 1.0  # 1 MB through the capped feature path / the default probe

# Named runs: each repeated to the wanted length and ended by "x", so that a pattern that could
# match at the very end (e.g. "[.!?]+$") has to fail and backtrack instead.
PATHOLOGICAL = {
    "letters": "a", "digits": "1", "decimal-dots": "1.", "open-calls": "a(", "empty-calls": "a()",
    "periods": ".", "punctuation": "!?.", "newlines": "\n", "spaces": " ", "tabs-crlf": "\t\r\n",
    "cjk": "日本語", "arabic-indic-digits": "٣", "emoji": "😀", "mixed-scripts": "aé日1٣Ж", "dollars": "$a",
    "commas": "1,", "signed": "-1", "fractions": "1/", "choices": "\n A) ", "latex": "\\frac",
    "code": "def f(): return x;", "arrows": "->=>", "url-ish": "a://b:", "nul": "\x00",
}

# The patterns as they were before they were made linear: the reference for the values test only
# (run on real prompts of a few KB, where they are fast).
ORIGINAL_PATTERNS = {
    "_NUMBER": re.compile(r"(?<![\w.])[-+]?\$?\d[\d,]*(?:\.\d+)?%?"),
    "_DECIMAL_OR_FRACTION": re.compile(r"\d+\.\d+|\d+/\d+"),
    "_SENTENCE_END": re.compile(r"[.!?]+(?:\s|$)"),
    "_LATEX": re.compile(
        r"\\(?:frac|sqrt|sum|int|cdot|times|le|ge|pi|alpha|beta|theta|mathbb|left|right)\b|\$[^$]+\$"),
    "_CODE_MARKERS": re.compile(
        r"```|\bdef\b|\bclass\b|\breturn\b|\bimport\b|\bfunction\b|\bwrite a (?:python )?function\b|"
        r"[{};]|\w+\(\)|==|!=|->|=>|\bprint\(", re.IGNORECASE),
    "_CHOICE_MARKERS": re.compile(r"(?m)^\s*\(?[A-Da-d][).:]\s+|\b[A-D]\)\s"),
}


def run_of(unit: str, n_chars: int) -> str:
    return unit * (n_chars // len(unit) + 1) + "x"


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


# ---- linear patterns --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_lexical_patterns_are_linear_on_long_runs(name, hostile):
    text = run_of(PATHOLOGICAL[name], FUZZ_CHARS)
    row, seconds = timed(lexical_vector, text)  # uncapped: the patterns alone must be linear
    case = hostile.case(f"lexical-{name}", hangs=int(seconds > LINEAR_BUDGET_S),
                        chars=len(text), seconds=round(seconds, 3))
    assert case.hangs == 0, f"{name}: {len(text)} chars took {seconds:.2f} s"
    assert len(row) == len(FEATURE_NAMES) and all(math.isfinite(v) for v in row)


_UNITS = st.one_of(
    st.sampled_from(sorted(PATHOLOGICAL.values())),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=4),
    st.text(st.sampled_from("aZ09.,;:!?()[]{}$%/\\-+=<>*^ \t\n\r日é٣Ж😀"), min_size=1, max_size=5),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(units=st.lists(_UNITS, min_size=1, max_size=3))
def test_lexical_fuzz_long_runs_are_fast(units):
    # A run of one unit, or of a mix that alternates between units every few thousand characters.
    block = "".join(u * (3000 // len(u) + 1) for u in units) if len(units) > 1 else units[0]
    text = run_of(block, FUZZ_CHARS)
    row, seconds = timed(lexical_vector, text)
    assert seconds < LINEAR_BUDGET_S, f"{units!r}: {len(text)} chars took {seconds:.2f} s"
    assert all(math.isfinite(v) for v in row)


@pytest.fixture(scope="module")
def default_probe():
    from triage.eval.default_probe import ensure_default_probe
    from triage.probes.runtime import load_probe

    probe = load_probe(ensure_default_probe())
    probe.predict(["warm up"])
    return probe


@pytest.mark.parametrize("name", ["letters", "digits", "decimal-dots", "empty-calls", "periods", "newlines",
                                  "cjk", "mixed-scripts", "choices", "code"])
def test_one_megabyte_through_the_feature_path_and_the_default_probe(name, default_probe, hostile):
    text = run_of(PATHOLOGICAL[name], BIG_CHARS)
    block, lex_s = timed(LexicalFeature().transform_checked, [text])
    out, probe_s = timed(default_probe.predict, [text])
    case = hostile.case(f"probe-1mb-{name}", hangs=int(max(lex_s, probe_s) > PROBE_BUDGET_S),
                        lexical_s=round(lex_s, 3), probe_s=round(probe_s, 3))
    assert case.hangs == 0, f"{name}: lexical {lex_s:.2f} s, probe {probe_s:.2f} s"
    assert block.shape == (1, len(FEATURE_NAMES))
    assert 0.0 <= out[0].success[default_probe.labels[0]] <= 1.0


# ---- values unchanged -------------------------------------------------------------------------


def _real_prompts() -> list[str]:
    from triage.eval.importers import import_source
    from triage.settings import get_settings

    data = get_settings().data_dir
    texts: list[str] = []
    for source, path, dataset, every in (("routellm", data / "routellm", "gsm8k", 13),
                                         ("routellm", data / "routellm", "mmlu", 140),
                                         ("routellm", data / "routellm", "mt_bench", 1),
                                         ("routerbench", data / "routerbench-subset", None, 30)):
        records = import_source(source, path, dataset=dataset)
        texts += [r.prompt_text() for r in records[::every]]
    return list(dict.fromkeys(texts))


HAND_WRITTEN = [
    "What is 12.5% of $1,200? Then divide by 3/4.",
    "Which is larger?\n(A) 3.14\n(B) 22/7\nC) pi\n  d. none of the above\n",
    "Write a python function `def f(x): return x**2` and call print(f(3)); compare a == b, a != b.",
    "Solve $x^2 + 3x = 10$ using \\frac{-b}{2a} and \\sqrt{b^2-4ac}... Why? Explain step by step!",
    "If the train leaves at 3 p.m. and travels 60 km/h, how many km until 5:30 p.m.?  Prove it.\r\n",
    "Résumé: 日本語のテキスト。 ١٢٣ + 456 = ? Ünïcödé… end",
    "\n\n  \n(a) first\n\n\nB. second\n",
]


def test_linear_patterns_give_the_original_values_on_real_prompts(monkeypatch):
    texts = _real_prompts() + HAND_WRITTEN
    assert len(texts) >= 350
    new = [lexical_vector(t) for t in texts]
    with monkeypatch.context() as m:
        for name, pattern in ORIGINAL_PATTERNS.items():
            m.setattr(lexical, name, pattern)
        old = [lexical_vector(t) for t in texts]
    differing = [t[:80] for t, a, b in zip(texts, old, new, strict=True) if a != b]
    assert not differing, f"{len(differing)} prompts changed, e.g. {differing[:3]}"
    # the reference really is the old code: it is quadratic (guards against testing new vs new)
    _, slow = timed(ORIGINAL_PATTERNS["_CHOICE_MARKERS"].findall, "\n" * 6000 + "x")
    _, fast = timed(lexical._CHOICE_MARKERS.findall, "\n" * 6000 + "x")
    assert slow > 10 * fast


# ---- the probe-text cap -----------------------------------------------------------------------


def test_cap_keeps_short_texts_and_bounds_long_ones():
    limit = TEXT_HEAD_CHARS + TEXT_TAIL_CHARS
    short = "x" * limit
    assert cap_text(short) is short
    long = "H" * TEXT_HEAD_CHARS + "m" * BIG_CHARS + "T" * TEXT_TAIL_CHARS
    capped = cap_text(long)
    assert capped == "H" * TEXT_HEAD_CHARS + "\n" + "T" * TEXT_TAIL_CHARS
    # every text feature reads the capped text: transform_checked is the runtime's and cache's entry
    feature = LexicalFeature()
    assert feature.transform_checked([long]).tolist() == feature.transform([capped]).tolist()
    assert feature.transform_checked(HAND_WRITTEN).tolist() == feature.transform(HAND_WRITTEN).tolist()


# ---- the local model: refuse before tokenizing what cannot fit ----------------------------------


@pytest.fixture(scope="module")
def smollm():
    from triage.lm.models import get_local_lm

    return get_local_lm("smollm2-135m")


@pytest.mark.slow
def test_local_model_token_floor_and_count_never_overshoot(smollm):
    from triage.lm.chat import count_tokens, token_floor

    floor = token_floor(smollm.tokenizer)
    assert floor is not None and floor.max_bytes >= 16  # SmolLM2 is byte-level BPE
    tok = smollm.tokenizer
    for unit in [*PATHOLOGICAL.values(), "the ", "                ", "<|im_start|>", "\x04", "\U00040000"]:
        for n in (1, 5, 700):
            text = unit * n
            exact = len(tok(text, add_special_tokens=False)["input_ids"])
            assert count_tokens(tok, text) == exact, repr(unit)
            assert floor.min_tokens(text) <= exact, repr(unit)


@pytest.mark.slow
@pytest.mark.parametrize("content", [run_of("a", BIG_CHARS), run_of("a b ", 300_000)], ids=["1mb-token", "300kb-words"])
def test_local_model_refuses_a_prompt_that_cannot_fit_at_once(smollm, content):
    from triage.lm.specs import PromptTooLongError

    t0 = time.perf_counter()
    with pytest.raises(PromptTooLongError, match="tokens; local model"):
        smollm.stream([{"role": "user", "content": content}], max_tokens=4)
    assert time.perf_counter() - t0 < 2.0


# ---- the real sidecar --------------------------------------------------------------------------

SIDECAR_BUDGET_S = 2.0
HEALTHZ_BUDGET_S = 0.1
ONE_MB = 1_000_000  # bytes of message content; the JSON body stays under max_body_bytes (1 MiB)

SIDECAR_CASES = {  # name -> (unit, expected statuses)
    "letters": ("a", {200, 400}),
    "digits": ("1", {200, 400}),
    "decimal-dots": ("1.", {200, 400}),
    "empty-calls": ("a()", {200, 400}),
    "cjk": ("日", {200, 400}),
    "mixed-scripts": ("aé日1٣Ж", {200, 400}),
    "newlines": ("\n", {413}),  # escaped as \n in JSON: 2 MB, over max_body_bytes
}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    from tests.support.sidecar import LOCAL_POLICY, SidecarProcess

    # the sidecar's default body limit (the shared helper lowers it to 64 KiB)
    proc = SidecarProcess(tmp_path_factory.mktemp("hostile-regex"), [LOCAL_POLICY],
                          extra={"max_body_bytes": 1_048_576})
    yield proc
    proc.stop()


def _healthz_poller(url: str, latencies: list[float], statuses: list[int], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            statuses.append(client.get("/healthz").status_code)
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.01)


def _one_mb_request(client: httpx.Client, url: str, headers: dict[str, str],
                    body: bytes) -> tuple[httpx.Response, float, list[float], list[int]]:
    """The response, its seconds, and /healthz's latencies and statuses polled meanwhile."""
    latencies: list[float] = []
    health: list[int] = []
    stop = threading.Event()
    poller = threading.Thread(target=_healthz_poller, args=(url, latencies, health, stop), daemon=True)
    poller.start()
    while not latencies:
        time.sleep(0.005)
    t0 = time.perf_counter()
    try:
        r = client.post("/v1/chat/completions", headers=headers, content=body)
        elapsed = time.perf_counter() - t0
        time.sleep(0.3)  # what the request leaves behind (ledger write) must not stall either
    finally:
        stop.set()
        poller.join(30)
    return r, elapsed, latencies, health


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SIDECAR_CASES))
def test_sidecar_answers_a_one_megabyte_token_while_healthz_stays_fast(name, sidecar, hostile):
    from tests.support.sidecar import CLIENT_KEY

    unit, expected = SIDECAR_CASES[name]
    content = unit * (ONE_MB // len(unit.encode()))
    body = json.dumps({"model": "triage/local", "max_tokens": 4, "messages": [{"role": "user", "content": content}]},
                      ensure_ascii=False).encode()
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    with httpx.Client(base_url=sidecar.url, timeout=120) as client:
        warm = client.post("/v1/chat/completions", headers=headers, json={
            "model": "triage/local", "max_tokens": 2, "messages": [{"role": "user", "content": "What is 2 + 2?"}]})
        assert warm.status_code == 200, warm.text  # the local model is loaded before the clock starts
        r, elapsed, latencies, health = _one_mb_request(client, sidecar.url, headers, body)
        if any(s > HEALTHZ_BUDGET_S for s in latencies):
            # One slow poll can be the machine (2 cores shared with the rest of the suite: a fresh-clone
            # CI run once saw one poll of 476 ms in 29 here, and 2-12 ms alone). An event loop the
            # request blocks is slow again on the same request, so the second measurement is judged.
            r, elapsed, latencies, health = _one_mb_request(client, sidecar.url, headers, body)
    slow_health = sum(1 for s in latencies if s > HEALTHZ_BUDGET_S)
    case = hostile.case(f"sidecar-1mb-{name}", statuses=[r.status_code], hangs=int(elapsed > SIDECAR_BUDGET_S) + slow_health,
                        body_bytes=len(body), seconds=round(elapsed, 3), healthz_polls=len(latencies),
                        healthz_max_ms=round(1000 * max(latencies), 1))
    assert r.status_code in expected, r.text[:300]
    assert case.count_5xx == 0
    if r.status_code != 200:
        assert r.json()["error"]["message"], r.text[:300]  # a JSON error body, OpenAI-shaped
    assert elapsed < SIDECAR_BUDGET_S, f"{name}: answered after {elapsed:.2f} s"
    assert set(health) == {200}
    assert slow_health == 0, f"{name}: /healthz max {max(latencies) * 1000:.0f} ms over {len(latencies)} polls"
    assert case.hangs == 0


@pytest.mark.parametrize("unit", ["a.", "a", "1 ", "://a:", "x://", "a@b:"])
def test_secret_scrubbing_is_linear_on_a_megabyte(unit: str) -> None:
    """The ledger and the logs scrub prompts and error texts; a URL-password pattern that searched
    for a scheme from every position took ~1 s per 20 KB of "a." (40 minutes for 1 MB)."""
    import time

    from triage.scrub import scrub_text

    text = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
    t0 = time.perf_counter()
    scrub_text(text)
    assert time.perf_counter() - t0 < 2.0
