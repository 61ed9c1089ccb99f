"""Speech-to-speech: one OpenAI Realtime model (livekit-plugins-openai) replaces STT+LLM+TTS.

The server detects turns (`server_vad` or `semantic_vad`, tunable from settings) and
answers each one; the session's local VAD still lets a caller interrupt at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from livekit.agents import Agent, AgentSession, APIError, llm
from livekit.agents.types import APIConnectOptions
from livekit.agents.voice.events import ErrorEvent
from livekit.plugins.openai import realtime
from openai.types.realtime import AudioTranscription
from openai.types.realtime.realtime_audio_input_turn_detection import SemanticVad, ServerVad

from .. import compat
from ..settings import Settings

logger = logging.getLogger("parley.providers")


@dataclass(frozen=True)
class RealtimeOptions:
    api_key: str
    model: str = "gpt-realtime"
    voice: str = "marin"
    base_url: str = ""
    turn_detection: Literal["server_vad", "semantic_vad"] = "server_vad"
    vad_threshold: float = 0.5
    silence_ms: int = 500
    prefix_padding_ms: int = 300
    transcription_model: str = "gpt-4o-mini-transcribe"
    timeout: float = 5.0
    max_retry: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> RealtimeOptions:
        return cls(
            api_key=settings.openai_api_key.get_secret_value(), model=settings.realtime_model, voice=settings.realtime_voice,
            base_url=settings.openai_base_url,
            turn_detection=settings.realtime_turn_detection,  # type: ignore[arg-type]
            vad_threshold=settings.realtime_vad_threshold, silence_ms=settings.realtime_silence_ms,
            prefix_padding_ms=settings.realtime_prefix_padding_ms,
            transcription_model=settings.realtime_transcription_model,
            timeout=settings.fallback_timeout,
            # With the local pipeline behind it, fail over fast instead of retrying for long.
            max_retry=1 if settings.fallback else 3,
        )


class _Session(realtime.RealtimeSession):
    async def aclose(self) -> None:
        # A session whose connection failed for good re-raises that failure on close, which
        # would stop the session handing the call to the local pipeline; it was already
        # reported through the session's "error" event.
        try:
            await super().aclose()
        except APIError:
            pass

    async def update_chat_ctx(self, chat_ctx: llm.ChatContext) -> None:
        # After a fatal connection failure there is no server copy to keep in step; waiting
        # for its acknowledgement would hold the hand-over to the local pipeline for 5 s.
        if compat.realtime_session_failed(self):
            return
        await super().update_chat_ctx(chat_ctx)


class RealtimeModel(realtime.RealtimeModel):
    def session(self, *, turn_detection_disabled: bool = False) -> realtime.RealtimeSession:
        sess = _Session(self, turn_detection_disabled=turn_detection_disabled)
        compat.register_realtime_session(self, sess)
        return sess


def realtime_model(opts: RealtimeOptions) -> realtime.RealtimeModel:
    detection: ServerVad | SemanticVad
    if opts.turn_detection == "semantic_vad":
        detection = SemanticVad(type="semantic_vad", create_response=True, interrupt_response=True)
    else:
        detection = ServerVad(
            type="server_vad", threshold=opts.vad_threshold, silence_duration_ms=opts.silence_ms,
            prefix_padding_ms=opts.prefix_padding_ms, create_response=True, interrupt_response=True,
        )
    kwargs = {"base_url": opts.base_url} if opts.base_url else {}
    return RealtimeModel(
        model=opts.model,
        voice=opts.voice,
        api_key=opts.api_key,
        turn_detection=detection,
        # the caller's words are transcribed too, for the transcript and the session report
        input_audio_transcription=AudioTranscription(model=opts.transcription_model),
        conn_options=APIConnectOptions(max_retry=opts.max_retry, retry_interval=1.0, timeout=opts.timeout),
        **kwargs,
    )


def fail_over_to_local(session: AgentSession, make_local_agent: Callable[[llm.ChatContext], Agent]) -> None:
    """When the realtime model fails for good (connection refused, retries spent), hand the
    call to an agent running the local pipeline instead of ending it.

    There is no local realtime model to put behind the cloud one in a FallbackAdapter, so
    the conversation so far moves to a cascade agent (local STT, LLM and TTS) that asks the
    caller to repeat: whatever they said went to the failed model.
    """
    swapped = False

    def on_error(ev: ErrorEvent) -> None:
        nonlocal swapped
        err = ev.error
        if swapped or err.type != "realtime_model_error" or err.recoverable:
            return
        swapped = True
        # The session closes itself on an unrecoverable error once this handler returns;
        # the local agent can carry on, so for this session the error is recoverable.
        err.recoverable = True
        logger.warning("realtime model failed (%s): the local pipeline takes the call over", err.error)
        agent = session.current_agent
        session.update_agent(make_local_agent(agent.chat_ctx.copy(exclude_instructions=True)))

    session.on("error", on_error)
