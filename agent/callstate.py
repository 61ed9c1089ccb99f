"""`Call`: everything one call owns, kept as the session's userdata (`AgentSession[Call]`).

The chosen providers, the turn tracker, the phone line (for a LiveKit SIP caller) and
how the call ended live here, and so does the one way to end a call: `Call.end(reason)`.
The `end_call` tool, the keypad's `#`, a spoken goodbye and a completed transfer all go
through it: say the goodbye (if any), close the session (which plays what is queued and,
with `RoomOptions.delete_room_on_close`, deletes the room: LiveKit SIP then sends BYE),
and end the job. The session report is written from it when the job shuts down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livekit import rtc
from livekit.agents import AgentSession, JobContext
from livekit.agents.voice import SpeechHandle
from livekit.agents.voice.events import CloseEvent, CloseReason, ErrorEvent

from . import metrics
from .report import TurnMetrics, TurnTracker, compact_events, write_report
from .settings import Settings

if TYPE_CHECKING:
    from .providers import SessionModels
    from .telephony import PhoneLine

logger = logging.getLogger("parley.call")

# On a phone line the last words are still on their way through livekit-sip when local
# playout ends; deleting the room at once would cut them off.
PHONE_TAIL_S = 0.6


@dataclass(eq=False)
class Call:
    settings: Settings
    ctx: JobContext | None = None  # None in text-mode tests (no room, no job)
    participant: str = ""
    chosen: SessionModels | None = None
    tracker: TurnTracker | None = None
    line: PhoneLine | None = None
    session: AgentSession[Call] | None = None
    ended_by: str = ""
    started_at: float = field(default_factory=time.time)
    # More report sections, each made when the report is written (name -> maker).
    sections: dict[str, Callable[[], Any]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _close_reason: CloseReason | None = None
    _ended_on_purpose: bool = False  # through Call.end (tool, keypad, goodbye, transfer)
    _counted: bool = False

    @property
    def room(self) -> str:
        return self.ctx.room.name if self.ctx is not None else ""

    def attach(self, session: AgentSession[Call]) -> None:
        self.session = session
        if self.tracker is not None:
            self.tracker.attach(session)
        if self.line is not None:
            self.line.attach(session)
        session.on("close", self._on_close)
        session.on("error", self._on_error)

    # --- observability: metrics, the caller's listener figures, per-turn stages ---------------

    def begin(self) -> None:
        """The caller is in the room: count the call, listen for the caller's latency figures
        and send it each turn's stages; the call is counted as ended when the job shuts down."""
        if self.ctx is None or self._counted:
            return
        self._counted = True
        metrics.call_started()
        self.ctx.add_shutdown_callback(self._count_end)
        self.ctx.room.register_text_stream_handler(metrics.LISTENER_TOPIC, self._on_listener_stream)
        if self.tracker is not None:
            self.tracker.on_turn = self._send_turn
        self.spawn(self._sample_memory())

    def outcome(self, shutdown_reason: str = "") -> str:
        """How the call ended, as `parley_calls_total{outcome}` counts it (README "Metrics, alerts
        and logs"). `shutdown_reason` is the framework's: "job crashed" when the entrypoint raised."""
        if shutdown_reason == "job crashed":
            return "error"
        if self.session is None:
            return "rejected"  # no conversation: an outbound callee never answered, or the caller left first
        if self._close_reason == CloseReason.ERROR:
            return "error"
        if self._ended_on_purpose:
            return "completed"
        if self._close_reason in (CloseReason.PARTICIPANT_DISCONNECTED, None):
            return "caller_hangup"
        return "agent_ended"  # closed by the worker: drain, job shutdown, room deleted

    async def _count_end(self, reason: str = "", *_: Any) -> None:
        outcome = self.outcome(reason if isinstance(reason, str) else "")
        metrics.call_ended(outcome)
        logger.info("call counted outcome=%s", outcome)

    def _on_error(self, ev: ErrorEvent) -> None:
        metrics.error(type(ev.error).__name__.removesuffix("Error").lower())  # STTError -> stt

    async def _sample_memory(self) -> None:
        while True:
            metrics.sample_rss()
            await asyncio.sleep(5.0)

    def _on_listener_stream(self, reader: rtc.TextStreamReader, sender: str) -> None:
        if sender != self.participant:
            return  # only the caller measures what the caller hears
        self.spawn(self._read_listener(reader))

    async def _read_listener(self, reader: rtc.TextStreamReader) -> None:
        try:
            msg = json.loads(await reader.read_all())
            ms, seq = float(msg["listener_latency_ms"]), int(msg.get("seq", -1))
        except (ValueError, TypeError, KeyError) as e:
            logger.info("ignored a listener figure that does not parse: %s", e)
            return
        if self.tracker is not None:
            self.tracker.listener(ms, seq)

    def _send_turn(self, turn: TurnMetrics, seq: int) -> None:
        """Each reply's stages to the caller's page (its waterfall), as the page measured
        nothing of the server side. Best effort: a caller that left gets nothing."""
        if self.ctx is None or self.ctx.room.connection_state != rtc.ConnectionState.CONN_CONNECTED:
            return
        if not turn.user_text:
            return  # the greeting or another unprompted reply: no turn of the caller's to show
        body = json.dumps({"seq": seq, "index": len(self.tracker.turns) if self.tracker else 0,
                           "stages": turn.stages(), "e2e_ms": turn.e2e_latency_ms,
                           "listener_latency_ms": turn.listener_latency_ms,
                           "over_budget": turn.over_budget, "budget_ms": self.settings.latency_budget_ms})

        async def send() -> None:
            assert self.ctx is not None
            try:
                await self.ctx.room.local_participant.send_text(
                    body, topic=metrics.TURN_TOPIC, destination_identities=[self.participant])
            except Exception as e:  # the caller left between the check and the send
                logger.debug("turn stages not sent: %s", e)

        self.spawn(send())

    def _on_close(self, ev: CloseEvent) -> None:
        self._close_reason = ev.reason
        if not self.ended_by:
            self.ended_by = "caller" if ev.reason == CloseReason.PARTICIPANT_DISCONNECTED else f"agent ({ev.reason.value})"
        logger.info("call closed reason=%s ended_by=%s", ev.reason.value, self.ended_by)
        if self.ctx is not None:
            # End the room and the job now rather than after LiveKit's departure timeout,
            # so the call and its report finish together.
            self.ctx.add_shutdown_callback(self._delete_room)
            self.ctx.shutdown(reason=f"call ended by {self.ended_by}")

    async def end(self, reason: str, *, goodbye: str | None = None) -> None:
        """End the call for everyone (the one way a call is ended on purpose)."""
        if self._begin_end(reason):
            await self._finish_end(self._say_goodbye(goodbye))

    def end_soon(self, reason: str, *, goodbye: str | None = None) -> None:
        """`end` from a place that must not wait for it (a tool, an event handler). The
        goodbye is queued at once, so it is spoken before the session drains and closes."""
        if self._begin_end(reason):
            self.spawn(self._finish_end(self._say_goodbye(goodbye)))

    def _begin_end(self, reason: str) -> bool:
        if self.ended_by:
            return False
        self.ended_by = reason
        self._ended_on_purpose = True
        logger.info("call ending by=%s duration=%.1fs", reason, time.time() - self.started_at)
        if self.line is not None:
            self.line.ended(reason)
        return True

    def _say_goodbye(self, goodbye: str | None) -> SpeechHandle | None:
        if self.session is None or not goodbye:
            return None
        try:
            return self.session.say(goodbye, allow_interruptions=False)
        except RuntimeError:  # the session is already closing: nothing left to say it on
            return None

    async def _finish_end(self, goodbye: SpeechHandle | None) -> None:
        if goodbye is not None:
            # A done callback, not wait_for_playout(): this may run on behalf of a function
            # tool, where the framework forbids waiting for a speech queued behind the tool's own.
            played = asyncio.get_running_loop().create_future()
            goodbye.add_done_callback(lambda _h: played.done() or played.set_result(None))
            await played
            if self.line is not None:
                await asyncio.sleep(PHONE_TAIL_S)
        if self.session is not None:
            self.session.shutdown(drain=True)  # -> "close" -> room deleted, job ends
        elif self.ctx is not None:
            await self._delete_room()
            self.ctx.shutdown(reason=f"call ended by {self.ended_by}")

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _delete_room(self, *_: Any) -> None:
        if self.ctx is None:
            return
        try:
            await self.ctx.delete_room()
        except Exception as e:  # already gone (deleted on close, or by the caller's side)
            logger.debug("room delete: %s", e)

    # --- the session report ----------------------------------------------------------

    def report(self) -> dict[str, Any] | None:
        """The framework's session report plus Parley's sections, or None without a session."""
        if self.ctx is None:
            return None
        try:
            report = self.ctx.make_session_report(self.session).to_dict()
        except RuntimeError as e:  # no session was started (caller never joined)
            logger.info("no session report: %s", e)
            return None
        report["events"] = compact_events(report.get("events", []))
        report["ended_by"] = self.ended_by or "unknown"
        if self.line is not None:
            report["phone"] = self.line.summary()
        for name, make in self.sections.items():
            report[name] = make()
        if self.chosen is not None:
            # report["usage"] (framework) has per provider/model audio seconds, tokens, characters.
            report["providers"] = {**self.chosen.providers, "fallbacks": self.chosen.fallbacks.events}
        return report

    async def write_report(self, *_: Any) -> Path | None:
        report = self.report()
        if report is None:
            return None
        turns = self.tracker.turns if self.tracker is not None else []
        # Never raises: a failed write is one error line (from write_report), the call is unaffected.
        path = write_report(self.settings.report_dir, self.room, report, turns,
                            keep=self.settings.report_keep, max_age_days=self.settings.report_max_age_days)
        if path is not None:
            logger.info("session report turns=%d path=%s", len(turns), path)
        return path
