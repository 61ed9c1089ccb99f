"""Build the session's models from `Settings`: one file per provider beside this one.

`LocalModels.load` runs once per job process (the worker's prewarm hook), so a
call never waits for a model to load.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from livekit.agents import inference, llm, stt, tts, vad

from .. import models
from ..settings import Settings
from .llama_llm import LlamaLLM, LlamaOptions
from .piper_tts import PiperOptions, PiperTTS
from .selection import SessionModels, select_models
from .turn_detector import TurnJudge
from .whisper_stt import WhisperOptions, WhisperSTT

logger = logging.getLogger("parley.providers")

__all__ = ["LocalModels", "SessionModels", "build_turn_detector", "build_vad", "select_models"]


def build_vad(settings: Settings) -> vad.VAD:
    return inference.VAD(min_silence_duration=settings.vad_min_silence)


def build_turn_detector() -> TurnJudge:
    # Judged from the transcript (agent/providers/turn_detector.py); the session feeds it
    # its final transcripts (TurnJudge.observe).
    return TurnJudge()


def local_stt(settings: Settings) -> WhisperSTT:
    path = models.whisper_model(settings.stt_model, settings.model_dir)
    w = settings.stt_window
    windows = (w, *((20.0,) if w < 20 else ())) if w > 0 else ()
    return WhisperSTT(WhisperOptions(model_path=path, language=settings.stt_language,
                                     beam_size=settings.stt_beam_size, windows_s=windows,
                                     phone_noise_floor_db=settings.stt_phone_noise_floor_db,
                                     two_pass_floor_db=settings.stt_two_pass_floor_db))


def local_llm(settings: Settings) -> LlamaLLM:
    path = models.llm_gguf(settings.local_llm, settings.model_dir)
    return LlamaLLM(
        LlamaOptions(model_path=path, n_threads=settings.llm_threads, max_tokens=settings.llm_max_tokens,
                     warmup_system=settings.instructions, skills=settings.llm_skills)
    )


def local_tts(settings: Settings) -> PiperTTS:
    # Piper also speaks the realtime pipeline's fixed phrases: only PARLEY_TTS=local names its voice.
    path = (settings.piper_voice_path if settings.pipeline == "cascade" else None) or models.piper_joe()
    # The greetings are spoken at the start of every call: synthesized once, here.
    return PiperTTS(PiperOptions(model_path=path, remember=(
        settings.greeting, settings.sip_greeting, settings.sip_outbound_greeting),
        phrase_dir=settings.model_dir / "phrases"))


@dataclass
class LocalModels:
    """Everything a job process loads once and reuses for every call it serves."""

    vad: vad.VAD
    stt: stt.STT
    llm: llm.LLM
    tts: tts.TTS

    @classmethod
    def load(cls, settings: Settings, llm: llm.LLM | None = None) -> LocalModels:
        """`llm`: one already loaded (interpreter mode's translator), instead of the
        conversational model, whose half a gigabyte that mode never uses."""
        t0 = time.perf_counter()
        loaded = cls(
            vad=build_vad(settings),
            stt=local_stt(settings),
            llm=llm or local_llm(settings),
            tts=local_tts(settings),
        )
        logger.info("local models ready in %.2fs", time.perf_counter() - t0)
        return loaded
