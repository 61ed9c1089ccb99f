"""Per-turn metrics and the JSON session report written when a call ends."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession, llm, metrics
from livekit.agents.voice.events import ConversationItemAddedEvent

from . import metrics as parley_metrics

logger = logging.getLogger("parley.report")


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


@dataclass
class TurnMetrics:
    """One user→agent exchange, in milliseconds, from the framework's own measurements
    plus the caller's (`listener_latency_ms`, sent back over the room by the web app or
    parley-call)."""

    user_text: str = ""
    agent_text: str = ""
    interrupted: bool = False
    end_of_utterance_delay_ms: float | None = None  # end of speech → turn committed
    transcription_delay_ms: float | None = None  # end of speech → final transcript
    stt_duration_ms: float | None = None  # Whisper run time on the segment
    llm_ttft_ms: float | None = None
    tts_ttfb_ms: float | None = None
    e2e_latency_ms: float | None = None  # end of speech → first agent audio out
    # End of speech → agent audio audible at the caller, measured by the caller's side.
    listener_latency_ms: float | None = None
    # The slowest stage of a turn over PARLEY_LATENCY_BUDGET_MS (None: within budget).
    over_budget: str | None = None

    def stages(self) -> dict[str, float | None]:
        """Where the turn's time went. The stages overlap (STT runs during end-of-utterance
        detection), so they do not add up to e2e; `network` is what the caller heard on top
        of the server's e2e: transport, jitter buffer and playout."""
        network = None
        if self.listener_latency_ms is not None and self.e2e_latency_ms is not None:
            network = round(max(self.listener_latency_ms - self.e2e_latency_ms, 0.0), 1)
        return {
            "end_of_utterance": self.end_of_utterance_delay_ms,
            "stt": self.stt_duration_ms if self.stt_duration_ms is not None else self.transcription_delay_ms,
            "llm_ttft": self.llm_ttft_ms,
            "tts_ttfb": self.tts_ttfb_ms,
            "network": network,
        }

    def latency_ms(self) -> float | None:
        """What the caller waited: their own figure when it arrived, else the server's."""
        return self.listener_latency_ms if self.listener_latency_ms is not None else self.e2e_latency_ms


# A listener figure arriving this long after its turn was recorded belongs to no turn.
LISTENER_MATCH_S = 15.0


@dataclass
class TurnTracker:
    """Collects per-turn figures from session events and the caller's listener figures;
    logs one line per turn, feeds the Prometheus histograms (agent/metrics.py) and checks
    each turn against the latency budget."""

    room: str
    participant: str
    budget_ms: float = 1500.0
    turns: list[TurnMetrics] = field(default_factory=list)
    # Called with each finished turn (the call sends its stages to the caller's page).
    on_turn: Callable[[TurnMetrics, int], None] | None = None
    _pending_user: TurnMetrics | None = None
    _last_stt_s: float | None = None
    _last_turn_at: float = 0.0
    _seq: dict[int, int] = field(default_factory=dict)  # id(turn) -> the caller's turn number

    def attach(self, session: AgentSession) -> None:
        # The recognizer's own metrics, not the session's deprecated "metrics_collected" (which
        # logs a deprecation warning for every call); a realtime session has no recognizer.
        if session.stt is not None:
            session.stt.on("metrics_collected", self._on_metrics)
        session.on("conversation_item_added", self._on_item)

    def _on_metrics(self, m: metrics.STTMetrics) -> None:
        if isinstance(m, metrics.STTMetrics) and m.audio_duration > 0:
            self._last_stt_s = m.duration

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
        self.record(turn)

    def record(self, turn: TurnMetrics) -> None:
        """A finished turn: log it, observe its stages, check the budget, tell the caller."""
        self.turns.append(turn)
        self._last_turn_at = time.monotonic()
        stages = turn.stages()
        for stage in ("end_of_utterance", "stt", "llm_ttft", "tts_ttfb"):
            parley_metrics.observe_stage(stage, stages[stage])
        parley_metrics.observe_stage("e2e", turn.e2e_latency_ms)
        if turn.interrupted:
            parley_metrics.interruption()
        # room and participant come with every record of the call (ctx.log_context_fields)
        logger.info(
            "turn eou=%sms stt=%sms llm_ttft=%sms tts_ttfb=%sms "
            "e2e=%sms listener=%sms interrupted=%s user=%r agent=%r",
            turn.end_of_utterance_delay_ms, turn.stt_duration_ms,
            turn.llm_ttft_ms, turn.tts_ttfb_ms, turn.e2e_latency_ms, turn.listener_latency_ms,
            turn.interrupted, turn.user_text[:60], turn.agent_text[:60],
        )
        self._check_budget(turn)
        if self.on_turn is not None:
            self.on_turn(turn, self._seq.get(id(turn), -1))

    def listener(self, ms: float, seq: int = -1) -> TurnMetrics | None:
        """The caller's figure for its latest turn: end of its speech → our audio audible.
        It usually arrives while the reply plays (before the turn is recorded); a short
        reply may be recorded first. Returns the turn it was stored on, if any."""
        if not 0 <= ms < 120_000:
            return None
        turn = self._pending_user
        if turn is None and self.turns and self.turns[-1].listener_latency_ms is None \
                and time.monotonic() - self._last_turn_at < LISTENER_MATCH_S:
            turn = self.turns[-1]
        if turn is None or turn.listener_latency_ms is not None:
            logger.debug("listener figure %.0f ms (turn %d) matches no turn", ms, seq)
            return None
        turn.listener_latency_ms = round(ms, 1)
        self._seq[id(turn)] = seq
        parley_metrics.observe_stage("listener", ms)
        if turn in self.turns:  # already recorded: its budget check now knows more
            self._check_budget(turn)
        return turn

    def _check_budget(self, turn: TurnMetrics) -> None:
        """Once per turn: over budget → one warning with the breakdown, and a count by the slowest stage."""
        total = turn.latency_ms()
        if turn.over_budget is not None or total is None or total <= self.budget_ms:
            return
        stages = {k: v for k, v in turn.stages().items() if v is not None}
        turn.over_budget = max(stages, key=lambda k: stages[k]) if stages else "e2e"
        parley_metrics.budget_exceeded(turn.over_budget)
        logger.warning(
            "turn over budget: %.0f ms > %.0f ms, slowest stage %s (%s)", total, self.budget_ms, turn.over_budget,
            " ".join(f"{k}={v:.0f}ms" for k, v in stages.items()) or "no stage figures",
        )


# A temporary report file older than this was left by a killed process: retention removes it.
_STALE_TMP_S = 3600.0


# The framework emits the session's running usage totals about once a second; the report's
# `usage` holds the final ones, and a call's events would otherwise be mostly these copies
# (40 of 65 events, two thirds of a 20 s call's report).
REPEATED_EVENTS = frozenset({"session_usage_updated"})


def compact_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session's events without the running totals the report holds once."""
    return [e for e in events if e.get("type") not in REPEATED_EVENTS]


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
