"""What a turn must show (`expect`), word error rate, the LLM judge, budgets."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import aiohttp

from harness.scoring import normalize_words

from .scenario import Budgets, Turn


def normalize(text: str) -> str:
    """Lower case, digits spelled out, punctuation gone, single spaces: how words compare."""
    return " ".join(normalize_words(text))


def contains(reply: str, needle: str) -> bool:
    """`needle` (lower case) in the reply, as written or with digits spelled out."""
    needle = needle.lower()
    if needle in reply.lower():
        return True
    n = normalize(needle)
    return bool(n) and f" {n} " in f" {normalize(reply)} "


@dataclass
class Judge:
    """Any OpenAI-compatible chat completions endpoint; asked for PASS or FAIL with a reason."""

    url: str
    model: str
    key: str = ""
    timeout_s: float = 60.0

    @property
    def endpoint(self) -> str:
        u = self.url.rstrip("/")
        return u if u.endswith("/chat/completions") else u + "/chat/completions"

    async def grade(self, criterion: str, caller: str, reply: str) -> tuple[bool, str]:
        """(passed, the judge's reason); raises JudgeError when no verdict came back."""
        body = {
            "model": self.model,
            "temperature": 0,
            "stream": True,
            "messages": [
                {"role": "system", "content": (
                    "You grade one reply of a spoken voice assistant against a criterion. The texts are "
                    "speech transcripts, so ignore punctuation and small transcription slips. Answer with "
                    "the single word PASS or FAIL on the first line, then one short sentence why.")},
                {"role": "user", "content": f"Caller said: \"{caller}\"\nAssistant replied: \"{reply}\"\n"
                                            f"Criterion: {criterion}"},
            ],
        }
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as http, \
                    http.post(self.endpoint, json=body, headers=headers) as resp:
                raw = await resp.text()
                if resp.status != 200:
                    raise JudgeError(f"judge answered HTTP {resp.status}: {raw.strip()[:160]}")
                text = _completion_text(raw, resp.headers.get("Content-Type", ""))
        except (aiohttp.ClientError, TimeoutError) as e:
            raise JudgeError(f"judge unreachable at {self.endpoint}: {e.__class__.__name__}: {e}") from None
        m = re.match(r"\W*(PASS|FAIL)\b[\s:.,-]*(.*)", text.strip(), re.IGNORECASE | re.DOTALL)
        if not m:
            raise JudgeError(f"judge answered neither PASS nor FAIL: {text.strip()[:120]!r}")
        return m.group(1).upper() == "PASS", " ".join(m.group(2).split())[:300]


class JudgeError(RuntimeError):
    pass


def _completion_text(raw: str, content_type: str) -> str:
    """The assistant text of a chat completion, streamed (SSE) or not."""
    if "event-stream" in content_type or raw.lstrip().startswith("data:"):
        parts = []
        for line in raw.splitlines():
            line = line.strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            try:
                chunk = json.loads(line[5:])
            except ValueError:
                continue
            for choice in chunk.get("choices") or []:
                parts.append((choice.get("delta") or {}).get("content") or "")
        return "".join(parts)
    try:
        data = json.loads(raw)
        return data["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise JudgeError(f"judge sent no chat completion: {raw.strip()[:120]!r}") from None


async def check_turn(turn: Turn, rec: dict[str, Any], judge: Judge | None) -> tuple[bool | None, list[str], str | None]:
    """(passed, reasons, judge status). passed is None when the only check was a skipped judge."""
    reasons: list[str] = []
    e = turn.expect
    reply = rec.get("agent_text") or ""
    replied = rec.get("replied", bool(reply))
    if rec.get("error"):
        return False, [rec["error"]], None
    if e.no_reply:
        if replied:
            reasons.append(f"expected no reply, the agent said {reply[:80]!r}")
    elif not e.interrupted or e.any or e.all or turn.judge:
        if not replied:
            reasons.append("no reply")
    if e.any and not any(contains(reply, w) for w in e.any):
        reasons.append(f"reply has none of {list(e.any)}")
    missing = [w for w in e.all if not contains(reply, w)]
    if missing:
        reasons.append(f"reply lacks {missing}")
    present = [w for w in e.none if contains(reply, w)]
    if present:
        reasons.append(f"reply has {present}")
    if e.silent_during_pause and rec.get("spoke_during_pause_ms") is not None:
        reasons.append(f"agent spoke {rec['spoke_during_pause_ms']:.0f} ms into the caller's pause")
    if e.interrupted and not rec.get("interrupted"):
        stop = rec.get("barge_in_stop_ms")
        reasons.append("the agent was not speaking when the caller cut in" if rec.get("agent_was_speaking") is False
                       else f"the agent did not stop (still talking {stop:.0f} ms after the caller started)"
                       if stop is not None else "the agent did not stop")
    judge_status: str | None = None
    if turn.judge:
        if judge is None:
            judge_status = "skipped"
        elif replied:
            try:
                ok, why = await judge.grade(turn.judge, rec.get("user_transcript") or turn.reference or "", reply)
                judge_status = "pass" if ok else "fail"
                rec["judge_reason"] = why
                if not ok:
                    reasons.append(f"judge: {why or 'FAIL'}")
            except JudgeError as err:
                judge_status = "error"
                reasons.append(str(err))
    only_judge = turn.judge is not None and not (turn.expect_given or reasons)
    if judge_status == "skipped" and only_judge:
        return None, ["judge skipped: PARLEY_EVAL_JUDGE_URL is not set"], judge_status
    return not reasons, reasons, judge_status


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of the values, None for none."""
    if not values:
        return None
    v = sorted(values)
    if q >= 100:
        return v[-1]
    pos = (len(v) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def evaluate_budgets(scenario_name: str, budgets: Budgets, turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per budget: limit, measured value, ok."""
    out: list[dict[str, Any]] = []
    latencies = [t["turn_latency_ms"] for t in turns if t.get("turn_latency_ms") is not None]
    for pct, limit in budgets.latency_ms.items():
        q = 100.0 if pct == "max" else float(pct[1:])
        value = percentile(latencies, q)
        out.append({"scenario": scenario_name, "budget": f"turn_latency_ms.{pct}", "limit": limit,
                    "value": None if value is None else round(value, 1),
                    "ok": bool(value is not None and value <= limit)})
    if budgets.pass_rate is not None:
        judged = [t for t in turns if t.get("passed") is not None]
        rate = sum(1 for t in judged if t["passed"]) / len(judged) if judged else None
        out.append({"scenario": scenario_name, "budget": "pass_rate", "limit": budgets.pass_rate,
                    "value": None if rate is None else round(rate, 3),
                    "ok": bool(rate is not None and rate >= budgets.pass_rate)})
    if budgets.wer is not None:
        wers = [t["wer"] for t in turns if t.get("wer") is not None]
        mean = sum(wers) / len(wers) if wers else None
        out.append({"scenario": scenario_name, "budget": "wer", "limit": budgets.wer,
                    "value": None if mean is None else round(mean, 3),
                    "ok": bool(mean is not None and mean <= budgets.wer)})
    return out
