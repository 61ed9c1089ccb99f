"""Per-turn metrics and the JSON session report written when a call ends."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession, MetricsCollectedEvent, llm, metrics
from livekit.agents.voice.events import ConversationItemAddedEvent

logger = logging.getLogger("parley.report")


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


@dataclass
class TurnMetrics:
    """One user→agent exchange, in milliseconds, from the framework's own measurements."""

    user_text: str = ""
    agent_text: str = ""
    interrupted: bool = False
    end_of_utterance_delay_ms: float | None = None  # end of speech → turn committed
    transcription_delay_ms: float | None = None  # end of speech → final transcript
    stt_duration_ms: float | None = None  # Whisper run time on the segment
    llm_ttft_ms: float | None = None
    tts_ttfb_ms: float | None = None
    e2e_latency_ms: float | None = None  # end of speech → first agent audio out


@dataclass
class TurnTracker:
    """Collects per-turn figures from session events and logs one line per turn."""

    room: str
    participant: str
    turns: list[TurnMetrics] = field(default_factory=list)
    _pending_user: TurnMetrics | None = None
    _last_stt_s: float | None = None

    def attach(self, session: AgentSession) -> None:
        session.on("metrics_collected", self._on_metrics)
        session.on("conversation_item_added", self._on_item)

    def _on_metrics(self, ev: MetricsCollectedEvent) -> None:
        if isinstance(ev.metrics, metrics.STTMetrics) and ev.metrics.audio_duration > 0:
            self._last_stt_s = ev.metrics.duration

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if not isinstance(item, llm.ChatMessage):
            return
        m = item.metrics or {}
        if item.role == "user":
            self._pending_user = TurnMetrics(
                user_text=item.text_content or "",
                end_of_utterance_delay_ms=_ms(m.get("end_of_turn_delay")),
                transcription_delay_ms=_ms(m.get("transcription_delay")),
                stt_duration_ms=_ms(self._last_stt_s),
            )
            self._last_stt_s = None
            return
        if item.role != "assistant":
            return
        turn = self._pending_user or TurnMetrics()
        self._pending_user = None
        turn.agent_text = item.text_content or ""
        turn.interrupted = bool(item.interrupted)
        turn.llm_ttft_ms = _ms(m.get("llm_node_ttft"))
        turn.tts_ttfb_ms = _ms(m.get("tts_node_ttfb"))
        turn.e2e_latency_ms = _ms(m.get("e2e_latency"))
        self.turns.append(turn)
        logger.info(
            "turn room=%s participant=%s eou=%sms stt=%sms llm_ttft=%sms tts_ttfb=%sms "
            "e2e=%sms interrupted=%s user=%r agent=%r",
            self.room, self.participant, turn.end_of_utterance_delay_ms, turn.stt_duration_ms,
            turn.llm_ttft_ms, turn.tts_ttfb_ms, turn.e2e_latency_ms, turn.interrupted,
            turn.user_text[:60], turn.agent_text[:60],
        )


# A temporary report file older than this was left by a killed process: retention removes it.
_STALE_TMP_S = 3600.0


def write_report(report_dir: Path, room: str, report: dict[str, Any], turns: list[TurnMetrics], *,
                 keep: int = 0, max_age_days: float = 0.0) -> Path | None:
    """Atomically write `<report_dir>/<room>-<unix time>.json` and return its path.

    Never overwrites: a second report for the same room in the same second becomes
    `<room>-<time>-2.json` (hard link from the temporary file, which fails rather than
    replaces). Never raises: a write failure (read-only or full disk, missing permission)
    is one error line and None, with no temporary file left, so the call it belongs to is
    unaffected. Then applies retention (`keep` newest, none older than `max_age_days`; 0 = no limit).
    """
    body = dict(report)
    body["turns"] = [asdict(t) for t in turns]
    tmp: str | None = None
    try:
        data = json.dumps(body, indent=2, default=str).encode()
        report_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=report_dir, prefix=".report-", suffix=".json")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # a crash after the link leaves the whole report, not an empty file
        path = _link_unique(Path(tmp), report_dir, f"{room}-{int(time.time())}")
    except (OSError, ValueError, TypeError) as e:
        logger.error("session report not written for room %s: %s", room, _reason(e))
        return None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    prune_reports(report_dir, keep=keep, max_age_days=max_age_days)
    return path


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror} ({e.filename or ''})".replace(" ()", "")
    return f"{type(e).__name__}: {e}"


def _link_unique(tmp: Path, report_dir: Path, stem: str) -> Path:
    for n in range(1, 1000):
        path = report_dir / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists: never overwrites
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{stem}: 999 reports in one second")


def prune_reports(report_dir: Path, *, keep: int, max_age_days: float) -> int:
    """Delete reports beyond the newest `keep` or older than `max_age_days` (0 = no limit),
    and temporary files a killed process left; returns how many were removed."""
    now = time.time()
    removed = 0
    try:
        entries = [(e.stat().st_mtime, e.path, e.name) for e in os.scandir(report_dir) if e.is_file()]
    except OSError as e:
        logger.warning("report retention skipped: %s", _reason(e))
        return 0
    reports = sorted(((m, p) for m, p, n in entries if n.endswith(".json") and not n.startswith(".")),
                     reverse=True)
    doomed = [p for m, p, n in entries if n.startswith(".report-") and now - m > _STALE_TMP_S]
    for i, (mtime, p) in enumerate(reports):
        if (keep and i >= keep) or (max_age_days and now - mtime > max_age_days * 86400):
            doomed.append(p)
    for p in doomed:
        try:
            os.unlink(p)
            removed += 1
        except FileNotFoundError:
            pass  # another job process pruned it first
        except OSError as e:
            logger.warning("report retention: %s", _reason(e))
            break
    return removed
