"""How one call's `AgentSession` is put together: turn handling, barge-in, and the
realtime model's hand-over to the local pipeline. No room needed: tests build sessions
with these functions and drive them in text mode."""

from __future__ import annotations

from collections.abc import Callable

from livekit.agents import AgentSession, llm, stt

from .assistant import ParleyAgent
from .barge_in import filtered_stt
from .callstate import Call
from .providers import LlamaLLM, LocalModels, SessionModels, build_turn_detector
from .providers.realtime import fail_over_to_local
from .settings import Settings

# Spoken by the local pipeline when it takes a call over from a failed realtime model.
REALTIME_LOST = "Sorry, I lost my connection for a moment. Could you say that again?"

# Silence after the caller's voice paused the reply before the framework settles the pause
# as a false interruption (agent/barge_in.py resumes a backchannel sooner). It must outlast
# Whisper on a short segment, or a "stop" would let the reply resume for a moment first.
FALSE_INTERRUPTION_TIMEOUT_S = 0.8


def build_session(settings: Settings, models: LocalModels, chosen: SessionModels,
                  call: Call | None = None) -> AgentSession[Call]:
    """The session for one call, with `call` as its userdata (and attached to it)."""
    call = call or Call(settings, chosen=chosen)
    session = _new_session(settings, models, chosen, call)
    call.attach(session)
    return session


# The transcript (and, on a barge-in, the history) follows the text each TTS piece was made
# from, entering the synchronizer with that piece's audio. Paced from the LLM's text instead,
# it runs on through a gap where the next piece is still being written and keeps words the
# caller never heard. The framework applies it only to a TTS that aligns (Piper's pieces, or
# its own adapter around a non-streaming cloud TTS).
ALIGNED_TRANSCRIPT = True


def _new_session(settings: Settings, models: LocalModels, chosen: SessionModels, call: Call) -> AgentSession[Call]:
    if chosen.realtime:
        # The realtime model hears, thinks and speaks; the server detects turns. Local VAD
        # stays on so a caller's barge-in cuts the agent off at once; Piper speaks fixed phrases.
        session: AgentSession[Call] = AgentSession[Call](
            userdata=call,
            vad=models.vad,
            llm=chosen.llm,
            tts=chosen.tts,
            # Piper's phrases, and the local pipeline that takes over if the model fails.
            use_tts_aligned_transcript=ALIGNED_TRANSCRIPT,
            turn_handling={
                "turn_detection": "realtime_llm",
                "interruption": {"mode": "vad", "min_duration": settings.interrupt_min_duration},
            },
        )
        if settings.fallback:
            fail_over_to_local(session, local_takeover(settings, models, session))
        return session
    turn_detector = build_turn_detector()
    holder: list[AgentSession[Call]] = []
    heard = filtered_stt(chosen.stt, lambda: holder[0] if holder else None, models.vad,
                         on_partial=_words_so_far(chosen.llm, holder, lambda: heard) if settings.llm_prefill_words else None,
                         partial_wanted=lambda: bool(holder) and holder[0].agent_state == "listening")
    session = AgentSession[Call](
        userdata=call,
        vad=models.vad,
        # While the agent talks, a transcript that is only "uh-huh"/"yeah"/"okay" is not
        # a turn: the paused reply resumes (agent/barge_in.py).
        stt=heard,
        llm=chosen.llm,
        tts=chosen.tts,
        use_tts_aligned_transcript=ALIGNED_TRANSCRIPT,
        turn_handling={
            # Pause length and transcript decide the end of a turn (agent/providers/turn_detector.py):
            # a finished question is answered as soon as its transcript exists, a finished
            # statement after a silence longer than callers pause inside a sentence.
            "turn_detection": turn_detector,
            "endpointing": {
                "min_delay": settings.endpointing_min_delay,
                "max_delay": settings.endpointing_max_delay,
            },
            # "adaptive" interruption needs LiveKit's cloud; VAD barge-in works offline.
            # The caller's voice pauses the reply after `min_duration` of speech; the words
            # then decide: a backchannel (or no words) resumes it at once, anything else
            # interrupts it (agent/barge_in.py). The timeout settles a pause no transcript
            # ever resolved.
            "interruption": {
                "mode": "vad",
                "min_duration": settings.interrupt_min_duration,
                "resume_false_interruption": True,
                "false_interruption_timeout": FALSE_INTERRUPTION_TIMEOUT_S,
            },
            # LLM and TTS start on the final transcript, before the turn is confirmed.
            "preemptive_generation": {"enabled": True, "preemptive_tts": True},
        },
    )
    holder.append(session)
    turn_detector.observe(session)
    if isinstance(chosen.llm, LlamaLLM):
        chosen.llm.observe(session)  # the next turn's framing, evaluated once the reply is spoken
    return session


def _words_so_far(model: llm.LLM, holder: list[AgentSession[Call]],
                  heard: Callable[[], object]) -> Callable[[stt.SpeechData], None] | None:
    """The local LLM evaluates the caller's words so far while they talk (LlamaLLM.prefill_partial)."""
    if not isinstance(model, LlamaLLM):
        return None  # a cloud LLM has nothing to evaluate ahead

    def on_partial(words: stt.SpeechData) -> None:
        session = holder[0] if holder else None
        if session is None or session.agent_state != "listening":
            return  # a reply is being written or spoken: the cores are taken
        try:
            chat_ctx = session.current_agent.chat_ctx
        except RuntimeError:  # no agent yet
            return
        model.prefill_partial_soon(chat_ctx, words.text, keep_going=lambda: not getattr(heard(), "pausing", False))

    return on_partial


def local_takeover(settings: Settings, models: LocalModels,
                   session: AgentSession[Call] | None = None) -> Callable[[llm.ChatContext], ParleyAgent]:
    """The agent that carries a call on the local pipeline once the realtime model failed."""

    def make(chat_ctx: llm.ChatContext) -> ParleyAgent:
        # Apologise only if the caller had said something the failed model may have lost.
        asked = any(i.type == "message" and i.role == "user" for i in chat_ctx.items)
        detector = build_turn_detector()
        if session is not None:
            detector.observe(session)  # the session's final transcripts feed the end-of-turn judge
        return ParleyAgent(settings, greeting=REALTIME_LOST if asked else "", chat_ctx=chat_ctx, tools=[],
                           stt=models.stt, llm=models.llm, tts=models.tts,
                           turn_handling={"turn_detection": detector})

    return make
