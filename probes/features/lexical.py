"""Cheap lexical features of a query: lengths, numbers, math/code markers, question shape.

Pure Python + numpy (a few microseconds per query). Counts are ``log1p``-squashed so that a
linear head sees comparable scales; ratios stay in 0..1.
"""

from __future__ import annotations

import math
import re

import numpy as np

from triage.probes.features.base import Feature, register_feature

# Every pattern is linear in the text length (``re`` holds the GIL for a whole findall, so one
# quadratic pattern on a long run froze the server): a run that a pattern scans (digits, word
# characters, [.!?], leading spaces) is tried only from its start (a look-behind) and consumed
# possessively (``++``), and leading whitespace never crosses a newline. Each rewrite gives the same
# counts (and numbers) as the plain pattern it replaced (``tests/test_hostile_regex.py`` checks real
# prompts), so the feature version and trained heads stay valid.
_NUMBER = re.compile(r"(?<![\w.])[-+]?\$?\d[\d,]*+(?:\.\d++)?%?")
_DECIMAL_OR_FRACTION = re.compile(r"(?<!\d)\d++(?:\.\d++|/\d++)")
_SENTENCE_END = re.compile(r"(?<![.!?])[.!?]++(?:\s|$)")
_MATH_OPERATORS = re.compile(r"[+\-*/=^<>×÷√∑∫]")
_LATEX = re.compile(r"\\(?:frac|sqrt|sum|int|cdot|times|le|ge|pi|alpha|beta|theta|mathbb|left|right)\b|\$[^$]++\$")
_MATH_WORDS = re.compile(
    r"\b(?:total|each|per|percent|percentage|times|twice|half|thrice|triple|double|ratio|average|"
    r"sum|difference|product|remainder|fraction|rate|profit|discount|interest|how many|how much|"
    r"more than|less than|fewer|left|remaining|altogether|cost|price|equation|solve|integer|prime|"
    r"probability|area|volume|perimeter|radius|angle)\b",
    re.IGNORECASE,
)
_CODE_MARKERS = re.compile(
    r"```|\bdef\b|\bclass\b|\breturn\b|\bimport\b|\bfunction\b|\bwrite a (?:python )?function\b|"
    r"[{};]|(?<!\w)\w++\(\)|==|!=|->|=>|\bprint\(",
    re.IGNORECASE,
)
_CHOICE_MARKERS = re.compile(r"(?m)^[^\S\n]*+\(?[A-Da-d][).:]\s++|\b[A-D]\)\s")
_CONDITION_WORDS = re.compile(r"\b(?:if|then|unless|otherwise|after|before|while|until|except|but)\b", re.IGNORECASE)
_REASONING_WORDS = re.compile(
    r"\b(?:prove|explain|why|derive|compare|analy[sz]e|justify|step by step|evaluate|design|optimi[sz]e)\b",
    re.IGNORECASE,
)

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_sentences",
    "log_lines",
    "log_digits",
    "digit_ratio",
    "log_numbers",
    "log_distinct_numbers",
    "log_decimals_fractions",
    "log10_max_number",
    "log_math_operators",
    "log_latex",
    "log_math_words",
    "log_code_markers",
    "log_choice_markers",
    "log_condition_words",
    "log_reasoning_words",
    "question_marks",
    "upper_ratio",
    "non_ascii_ratio",
    "mean_word_len",
    "long_word_ratio",
)


def _parse_number(token: str) -> float | None:
    cleaned = token.replace(",", "").replace("$", "").rstrip("%")
    try:
        return abs(float(cleaned))
    except ValueError:
        return None


_ASCII_DIGITS = b"0123456789"
_ASCII_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LETTERS = _ASCII_UPPER + _ASCII_UPPER.lower()


def _char_counts(text: str) -> tuple[int, int, int, int]:
    """(digits, letters, upper-case, non-ASCII) characters, by ``str.isdigit``/``isalpha``/``isupper``.

    On ASCII text those are exactly 0-9, A-Za-z and A-Z, counted by ``bytes.translate`` in C: the
    per-character loop cost ~0.4 ms of a sidecar request's ~2.5 ms probe for a 200-character query.
    """
    if text.isascii():
        raw = text.encode("ascii")
        n = len(raw)
        return (n - len(raw.translate(None, _ASCII_DIGITS)), n - len(raw.translate(None, _ASCII_LETTERS)),
                n - len(raw.translate(None, _ASCII_UPPER)), 0)
    return (sum(ch.isdigit() for ch in text), sum(ch.isalpha() for ch in text), sum(ch.isupper() for ch in text),
            sum(ord(ch) > 127 for ch in text))


def lexical_vector(text: str) -> list[float]:
    n_chars = len(text)
    words = text.split()
    n_words = len(words)
    numbers = _NUMBER.findall(text)
    values = [v for v in (_parse_number(t) for t in numbers) if v is not None and math.isfinite(v)]
    max_number = max(values, default=0.0)
    digits, letters, upper, non_ascii = _char_counts(text)
    word_lens = [len(w.strip(".,;:!?()\"'")) for w in words]
    lg = math.log1p
    return [
        lg(n_chars),
        lg(n_words),
        lg(len(_SENTENCE_END.findall(text)) or (1 if text.strip() else 0)),
        lg(text.count("\n") + (1 if text else 0)),
        lg(digits),
        digits / n_chars if n_chars else 0.0,
        lg(len(numbers)),
        lg(len({round(v, 6) for v in values})),
        lg(len(_DECIMAL_OR_FRACTION.findall(text))),
        math.log10(1.0 + min(max_number, 1e15)),
        lg(len(_MATH_OPERATORS.findall(text))),
        lg(len(_LATEX.findall(text))),
        lg(len(_MATH_WORDS.findall(text))),
        lg(len(_CODE_MARKERS.findall(text))),
        lg(len(_CHOICE_MARKERS.findall(text))),
        lg(len(_CONDITION_WORDS.findall(text))),
        lg(len(_REASONING_WORDS.findall(text))),
        float(min(text.count("?"), 5)),
        upper / letters if letters else 0.0,
        non_ascii / n_chars if n_chars else 0.0,
        (sum(word_lens) / n_words) / 10.0 if n_words else 0.0,
        (sum(wl >= 8 for wl in word_lens) / n_words) if n_words else 0.0,
    ]


@register_feature
class LexicalFeature(Feature):
    """Surface statistics of the query text (no model)."""

    name = "lexical"
    version = "1"

    def __init__(self) -> None:
        pass

    @property
    def dim(self) -> int:
        return len(FEATURE_NAMES)

    def transform(self, texts: list[str]) -> np.ndarray:
        return np.asarray([lexical_vector(t) for t in texts], dtype=np.float32).reshape(len(texts), self.dim)
