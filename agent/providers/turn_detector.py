"""Local end-of-turn detection from the transcript: `TurnJudge`.

The framework asks a streaming turn detector once, 200 ms into a pause, and then waits
`min_delay` when the answer is "finished" or `max_delay` when it is not. LiveKit's
local audio model (turn-detector-v1-mini) is weak that early (0.1-0.37 on finished
questions), so finished questions waited seconds while "Hi, my name is Alice. | Please
remember it." was still answered at the "|".

Here the prediction waits for the pause's transcript (Whisper runs as soon as the VAD
closes the segment, a few hundred milliseconds) and judges the turn so far
(`agent.turns.transcript_verdict`):
- a phrase that cannot end a sentence ("I was wondering,", "so um") -> "not finished":
  the framework waits `max_delay`;
- a question or a request -> commit at once (the preemptive reply is already running);
- anything else (a bare statement: "Let me think.", "My name is Laura.") -> commit once
  the silence reaches `hold_s`, longer than callers pause inside a sentence.
New speech cancels a pending prediction, as with any detector.

Smart Turn v3.2 (the audio end-of-turn model inside the pipecat-ai wheel) was measured
as the audio half on the question fixtures and left out: on espeak-ng voices it scored
finished questions as low as 0.02 and mid-sentence pauses as high as 0.98 (no
separation), at ~130 ms of a core per pause.

The class implements the framework's streaming turn detector protocol (model, provider,
stream(); the stream's predict/cancel_inference/flush/push_audio) by duck typing: no
private base class is imported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
from livekit.agents.voice.events import UserInputTranscribedEvent
from livekit.agents.voice.turn import TurnDetectionEvent

from ..turns import transcript_verdict

logger = logging.getLogger("parley.turns")

# The framework asks 200 ms into a pause (livekit.agents.inference.eot.base.MIN_SILENCE_DURATION_MS).
ASKED_AFTER_S = 0.2

@dataclass(frozen=True)
class JudgeOptions:
    # Silence after which a finished statement (or a question that still sounds open)
    # is answered: longer than the 0.6-1.2 s pauses callers make inside a sentence.
    hold_s: float = 1.5
    # How long a prediction waits for the pause's transcript before it answers without.
    transcript_wait_s: float = 2.5


class TurnJudge:
    """A streaming end-of-turn detector for `turn_handling={"turn_detection": ...}`.

    `observe(session)` feeds it the session's final transcripts."""

    def __init__(self, opts: JudgeOptions | None = None) -> None:
        self._opts = opts or JudgeOptions()
        self._streams: set[_JudgeStream] = set()

    @property
    def model(self) -> str:
        return "transcript-judge"

    @property
    def provider(self) -> str:
        return "parley"

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> _JudgeStream:
        s = _JudgeStream(self)
        self._streams.add(s)
        return s

    def observe(self, session: Any) -> None:
        session.on("user_input_transcribed", self._on_transcribed)

    def _on_transcribed(self, ev: UserInputTranscribedEvent) -> None:
        if ev.is_final and ev.transcript.strip():
            for s in list(self._streams):
                s.on_final_transcript(ev.transcript.strip())

    def _closed(self, s: _JudgeStream) -> None:
        self._streams.discard(s)


class _JudgeStream:
    def __init__(self, judge: TurnJudge) -> None:
        self._judge = judge
        self._opts = judge._opts
        self._turn_text = ""
        self._heard = asyncio.Event()  # a final transcript arrived in this pause
        self._heard_at = 0.0
        self._fut: asyncio.Future[TurnDetectionEvent] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.last: dict[str, Any] = {}  # the last decision, for logs and tests

    # --- protocol: properties -----------------------------------------------------
    @property
    def model(self) -> str:
        return self._judge.model

    @property
    def provider(self) -> str:
        return self._judge.provider

    @property
    def is_fallback(self) -> bool:
        return False

    @property
    def prediction_timeout(self) -> float:
        # The framework commits without a prediction after this: it must outlast our
        # wait for the transcript plus the hold.
        return self._opts.transcript_wait_s + self._opts.hold_s + 1.0

    async def unlikely_threshold(self, language: LanguageCode | None) -> float | None:
        return 0.5

    async def backchannel_threshold(self, language: LanguageCode | None) -> float | None:
        return None

    async def supports_language(self, language: LanguageCode | None) -> bool:
        return True

    # --- protocol: audio ------------------------------------------------------------
    def push_audio(self, frame: rtc.AudioFrame) -> None:
        pass  # the decision reads the transcript, not the audio

    def flush(self, reason: str | None = None) -> None:
        # The turn was committed (or cleared): the next pause starts a new turn's text.
        self._turn_text = ""
        self._heard.clear()

    def end_input(self) -> None:
        self._closed = True

    async def aclose(self) -> None:
        self._closed = True
        self.cancel_inference()
        self._judge._closed(self)

    # --- protocol: inference -----------------------------------------------------------
    def on_final_transcript(self, text: str) -> None:
        self._turn_text = f"{self._turn_text} {text}".strip()
        self._heard_at = time.time()
        self._heard.set()

    def predict(self) -> asyncio.Future[TurnDetectionEvent]:
        self.cancel_inference()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TurnDetectionEvent] = loop.create_future()
        self._fut = fut
        # Only a transcript that arrived after this pause began can describe it (Whisper may
        # finish inside the pause, before the framework asks: agent/speculative_stt.py).
        if self._heard_at < time.time() - ASKED_AFTER_S:
            self._heard.clear()
        self._task = asyncio.create_task(self._decide(fut, time.time()))
        return fut

    def cancel_inference(self, *, timed_out: bool = False) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._fut is not None and not self._fut.done():
            self._fut.set_result(self._event(0.0, time.time()))
        self._task = self._fut = None

    def _event(self, p: float, asked_at: float) -> TurnDetectionEvent:
        return TurnDetectionEvent(type="eot_prediction", end_of_turn_probability=p,
                                  last_speaking_time=asked_at - ASKED_AFTER_S,
                                  detection_delay=time.time() - asked_at)

    async def _decide(self, fut: asyncio.Future[TurnDetectionEvent], asked_at: float) -> None:
        try:
            await asyncio.wait_for(self._heard.wait(), self._opts.transcript_wait_s)
        except TimeoutError:
            pass
        text = self._turn_text
        verdict = transcript_verdict(text)
        if verdict == "incomplete":
            p, action = 0.0, "wait"
        elif verdict == "complete":
            p, action = 1.0, "now"
        else:
            p, action = 1.0, "hold"
        self.last = {"text": text, "verdict": verdict, "action": action}
        logger.debug("end of turn %s", self.last)
        if action == "hold":
            await asyncio.sleep(max(0.0, asked_at + self._opts.hold_s - ASKED_AFTER_S - time.time()))
        if not fut.done():
            fut.set_result(self._event(p, asked_at))
