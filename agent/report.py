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


def write_report(report_dir: Path, room: str, report: dict[str, Any], turns: list[TurnMetrics]) -> Path:
    """Atomically write `<report_dir>/<room>-<unix time>.json`; returns the path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    body = dict(report)
    body["turns"] = [asdict(t) for t in turns]
    path = report_dir / f"{room}-{int(time.time())}.json"
    fd, tmp = tempfile.mkstemp(dir=report_dir, prefix=".report-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=2, default=str)
    os.replace(tmp, path)
    return path
