"""Talking over the agent: a backchannel lets it go on, anything else stops it.

How a barge-in runs (livekit-agents' VAD interruption with false-interruption resume,
configured in agent/session.py):

1. The caller starts talking while the agent speaks: after `min_duration` of speech the
   framework *pauses* the agent's audio (it stops within a few hundred milliseconds,
   before anyone knows what was said).
2. Whisper transcribes the caller's segment once it ends. `BackchannelFilter` reads that
   transcript: if it is only a backchannel ("uh-huh", "yeah", "okay", "right",
   "mm-hmm"; agent/turns.py) and the agent still holds the floor, the transcript is
   dropped and the paused audio resumes at once (public `AudioOutput.resume`). With no
   words, the framework neither interrupts the paused reply nor commits a user turn;
   when `false_interruption_timeout` passes it settles the pause as a false interruption
   (its own resume, and the agent state back to "speaking"). The chat history keeps the
   whole reply and no "uh-huh" turn. A segment with no words at all (a cough) resumes
   the reply the same way.
3. Any other transcript ("stop", "wait", a question) reaches the framework, which
   interrupts the paused reply (the history keeps only the part that was played) and
   answers the new turn.

The filter wraps a non-streaming STT (Whisper, behind `SpeculativeSTT`, the VAD stream
adapter that starts recognition inside each pause: the filter judges only the transcript
that adapter uses). A streaming cloud STT is passed through unchanged: its interim
transcripts interrupt before a filter could see a final one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from livekit.agents import AgentSession, stt, utils, vad
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr

from .speculative_stt import SpeculativeSTT
from .turns import is_backchannel

logger = logging.getLogger("parley.barge_in")


def agent_holds_floor(session: AgentSession) -> bool:
    """The agent is in the middle of a reply (speaking, or paused by the caller's voice)."""
    speech = session.current_speech
    return speech is not None and not speech.interrupted and not speech.done()


class BackchannelFilter(stt.STT):
    def __init__(self, inner: stt.STT, holds_floor: Callable[[], bool],
                 on_backchannel: Callable[[], None] = lambda: None) -> None:
        super().__init__(capabilities=inner.capabilities)
        self._inner = inner
        self._holds_floor = holds_floor
        self._on_backchannel = on_backchannel
        self.dropped = 0  # backchannels dropped (for logs and tests)

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def provider(self) -> str:
        return self._inner.provider

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        return self.judge(await self._inner.recognize(buffer, language=language, conn_options=conn_options))

    def judge(self, ev: stt.SpeechEvent) -> stt.SpeechEvent:
        """`ev` as the session should see it: empty when it only backchannels the agent."""
        text = ev.alternatives[0].text if ev.alternatives else ""
        if not text.strip() and self._holds_floor():
            # No words (a cough, a noise): the paused reply goes on at once too.
            self._on_backchannel()
            return ev
        if is_backchannel(text) and self._holds_floor():
            self.dropped += 1
            logger.info("backchannel while the agent speaks, not a turn: %r", text)
            self._on_backchannel()
            return stt.SpeechEvent(
                type=ev.type,
                request_id=ev.request_id,
                alternatives=[stt.SpeechData(language=ev.alternatives[0].language, text="")],
            )
        return ev

    async def aclose(self) -> None:
        # The inner STT belongs to the job process (loaded once, shared by its calls).
        pass


def filtered_stt(inner: stt.STT, session_ref: Callable[[], AgentSession | None],
                 vad: vad.VAD | None = None,
                 on_partial: Callable[[stt.SpeechData], None] | None = None,
                 partial_wanted: Callable[[], bool] = lambda: True) -> stt.STT:
    """`inner` behind a BackchannelFilter when it is a non-streaming STT, else `inner`. With
    `vad`, the filtered STT is already a stream that recognizes early in each pause
    (agent/speculative_stt.py); the filter then judges only the transcript that is used, and
    `on_partial` hears the caller's words so far."""
    if inner.capabilities.streaming:
        return inner

    def holds_floor() -> bool:
        session = session_ref()
        return session is not None and agent_holds_floor(session)

    def resume() -> None:
        # The reply was paused by the caller's voice; what they said is only a backchannel.
        session = session_ref()
        if session is not None and (out := session.output.audio) is not None and out.can_pause:
            out.resume()

    gate = BackchannelFilter(inner, holds_floor, resume)
    if vad is None:
        return gate
    return SpeculativeSTT(stt=inner, vad=vad, gate=gate.judge, on_partial=on_partial, partial_wanted=partial_wanted)
