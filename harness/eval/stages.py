"""The worker's own per-stage figures: its session report (`PARLEY_REPORT_DIR/<room>-*.json`),
matched to the caller's turns by what the agent heard."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .checks import normalize

STAGE_KEYS = ("end_of_utterance_delay_ms", "transcription_delay_ms", "stt_duration_ms", "llm_ttft_ms",
              "tts_ttfb_ms", "e2e_latency_ms")


def find_report(report_dir: Path, room: str) -> dict[str, Any] | None:
    for path in sorted(report_dir.glob(f"{room}-*.json")):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # written atomically, so this is someone else's file; keep looking
    return None


def wait_reports(report_dir: Path, rooms: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Reports for as many rooms as appear before `timeout` (the worker writes one when a call ends)."""
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        for room in rooms:
            if room not in found and (rep := find_report(report_dir, room)) is not None:
                found[room] = rep
        if len(found) == len(rooms) or time.monotonic() >= deadline:
            return found
        time.sleep(0.25)


def _overlap(a: str, b: str) -> float:
    wa, wb = set(normalize(a).split()), set(normalize(b).split())
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / max(len(wa), len(wb))


def attach_stages(records: list[dict[str, Any]], report: dict[str, Any]) -> None:
    """Give each caller turn the report turn whose transcript matches it (in order)."""
    turns = [t for t in report.get("turns", []) if (t.get("user_text") or "").strip()]
    pos = 0
    for rec in records:
        heard = rec.get("user_transcript") or ""
        if not heard.strip():
            continue
        best = None
        for j in range(pos, len(turns)):
            if _overlap(heard, turns[j]["user_text"]) >= 0.5 or normalize(turns[j]["user_text"]) in normalize(heard):
                best = j
                break
        if best is None:
            continue
        t = turns[best]
        pos = best + 1
        rec["stages"] = {k: t.get(k) for k in STAGE_KEYS}
        rec["report_interrupted"] = bool(t.get("interrupted"))


def waterfall(rec: dict[str, Any]) -> dict[str, float] | None:
    """The caller's turn latency split into stages (ms), summing to the latency heard.

    end of utterance = the worker's end-of-turn wait minus the STT run inside it; then STT,
    LLM first token, TTS first byte; `pipeline` is what the framework adds between them;
    `transport` is what the caller heard beyond the worker's own end-to-end figure (audio
    path, jitter buffer, playout). Without a report only the caller-side total exists."""
    total = rec.get("turn_latency_ms")
    if total is None:
        return None
    s = rec.get("stages") or {}
    eou, stt, ttft, ttfb, e2e = (s.get(k) for k in ("end_of_utterance_delay_ms", "stt_duration_ms",
                                                      "llm_ttft_ms", "tts_ttfb_ms", "e2e_latency_ms"))
    if e2e is None or eou is None:
        return {"caller-side": float(total)}
    stt = stt or 0.0
    parts = {"end of utterance": max(0.0, eou - stt), "STT": stt, "LLM first token": ttft or 0.0,
             "TTS first byte": ttfb or 0.0}
    parts["pipeline"] = max(0.0, e2e - sum(parts.values()))
    parts["transport"] = max(0.0, total - max(e2e, sum(parts.values())))
    return parts
