"""How the benchmarks score the question set (tests/fixtures/questions/manifest.json): words for
the word error rate, and whether a reply gives what a clip's `expect` asks for.

Used by scripts/bench_models.py (the models alone), scripts/bench_turns.py (whole calls),
parley-eval (harness/eval/checks.py) and the model tests, so every word error rate in the
project counts words the same way and a figure from one can be set beside another.
"""

from __future__ import annotations

import re
from typing import Any

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """English words for 0..999999 (what a speaker says for the digits a transcript shows)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))
    return str(n)

_SPELLING = {"colour": "color", "colours": "colors", "grey": "gray", "favourite": "favorite",
             "okay": "ok", "mm": "mhm", "hmm": "mhm"}


def normalize_words(text: str) -> list[str]:
    """Lower case, no punctuation, numbers as words, one spelling: WER counts words, not style."""
    t = text.lower().replace("’", "'").replace("-", " ")
    t = re.sub(r"(?<=\d),(?=\d{3})", "", t)  # 1,000
    t = re.sub(r"\d+", lambda m: " " + number_words(int(m.group())) + " ", t)
    t = re.sub(r"[^a-z' ]+", " ", t)
    words = [w.strip("'") for w in t.split()]
    return [_SPELLING.get(w, w) for w in words if w]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def matches(expect: Any, reply: str) -> bool:
    """The manifest's `expect`: {"any": [...]} / {"all": [...]}, items strings or nested expects."""
    if expect is None:
        return True
    if isinstance(expect, str):
        words = " ".join(normalize_words(expect))
        return f" {words} " in f" {' '.join(normalize_words(reply))} " or expect.lower() in reply.lower()
    if "any" in expect:
        return any(matches(e, reply) for e in expect["any"])
    if "all" in expect:
        return all(matches(e, reply) for e in expect["all"])
    raise ValueError(f"unknown expect {expect!r}")


def condition(item: dict[str, Any]) -> str:
    """clean, noise or phone: the recording condition of a question clip."""
    return "phone" if item.get("phone") else ("noise" if item.get("noise") else "clean")


CONDITIONS = ("all", "clean", "noise", "phone")


def word_error_rates(rows: list[dict[str, Any]], errors: str = "errors") -> dict[str, float]:
    """Word error rate over all rows and per condition: rows carry `condition`, `words` and their
    word errors under `errors`."""
    out = {}
    for cond in CONDITIONS:
        sel = [r for r in rows if cond == "all" or r["condition"] == cond]
        out[cond] = sum(r[errors] for r in sel) / max(1, sum(r["words"] for r in sel))
    return out
