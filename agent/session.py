"""How one call's `AgentSession` is put together: turn handling, barge-in, and the
realtime model's hand-over to the local pipeline. No room needed: tests build sessions
with these functions and drive them in text mode."""

from __future__ import annotations

from collections.abc import Callable

from livekit.agents import AgentSession, llm

from .assistant import ParleyAgent
from .callstate import Call
from .providers import LocalModels, SessionModels, build_turn_detector
from .providers.realtime import fail_over_to_local
from .settings import Settings

# Spoken by the local pipeline when it takes a call over from a failed realtime model.
REALTIME_LOST = "Sorry, I lost my connection for a moment. Could you say that again?"


def build_session(settings: Settings, models: LocalModels, chosen: SessionModels,
                  call: Call | None = None) -> AgentSession[Call]:
    """The session for one call, with `call` as its userdata (and attached to it)."""
    call = call or Call(settings, chosen=chosen)
    session = _new_session(settings, models, chosen, call)
    call.attach(session)
    return session


def _new_session(settings: Settings, models: LocalModels, chosen: SessionModels, call: Call) -> AgentSession[Call]:
    if chosen.realtime:
        # The realtime model hears, thinks and speaks; the server detects turns. Local VAD
        # stays on so a caller's barge-in cuts the agent off at once; Piper speaks fixed phrases.
        session: AgentSession[Call] = AgentSession[Call](
            userdata=call,
            vad=models.vad,
            llm=chosen.llm,
            tts=chosen.tts,
            turn_handling={
                "turn_detection": "realtime_llm",
                "interruption": {"mode": "vad", "min_duration": settings.interrupt_min_duration},
            },
        )
        if settings.fallback:
            fail_over_to_local(session, local_takeover(settings, models))
        return session
    return AgentSession[Call](
        userdata=call,
        vad=models.vad,
        stt=chosen.stt,
        llm=chosen.llm,
        tts=chosen.tts,
        turn_handling={
            "turn_detection": build_turn_detector(),
            "endpointing": {
                "min_delay": settings.endpointing_min_delay,
                "max_delay": settings.endpointing_max_delay,
            },
            # "adaptive" interruption needs LiveKit's cloud; VAD barge-in works offline.
            "interruption": {
                "mode": "vad",
                "min_duration": settings.interrupt_min_duration,
                "false_interruption_timeout": 1.5,
            },
            # LLM and TTS start on the final transcript, before the turn is confirmed.
            "preemptive_generation": {"enabled": True, "preemptive_tts": True},
        },
    )


def local_takeover(settings: Settings, models: LocalModels) -> Callable[[llm.ChatContext], ParleyAgent]:
    """The agent that carries a call on the local pipeline once the realtime model failed."""

    def make(chat_ctx: llm.ChatContext) -> ParleyAgent:
        # Apologise only if the caller had said something the failed model may have lost.
        asked = any(i.type == "message" and i.role == "user" for i in chat_ctx.items)
        return ParleyAgent(settings, greeting=REALTIME_LOST if asked else "", chat_ctx=chat_ctx, tools=[],
                           stt=models.stt, llm=models.llm, tts=models.tts,
                           turn_handling={"turn_detection": build_turn_detector()})

    return make
