"""Pick each stage's provider from `Settings` and put the local provider behind a cloud one.

PARLEY_STT / PARLEY_LLM / PARLEY_TTS choose `local` or a cloud provider per stage;
PARLEY_PIPELINE=realtime replaces all three with one OpenAI Realtime model. With
PARLEY_FALLBACK=1 (the default once a cloud provider is chosen) each cloud provider is
wrapped in the framework's FallbackAdapter with the already-loaded local provider second,
so an outage mid-call degrades to the offline stack within the same turn.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import llm, stt, tts

from .. import metrics as parley_metrics
from ..settings import Settings
from .deepgram_stt import DeepgramOptions, DeepgramSTT
from .openai_llm import OpenAILLMOptions, openai_llm
from .openai_tts import OpenAITTS, OpenAITTSOptions
from .realtime import RealtimeOptions, realtime_model

logger = logging.getLogger("parley.providers")


@dataclass
class FallbackLog:
    """Availability changes of the cloud providers during one call, for the session report."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def watch(self, stage: str, adapter: Any, event: str) -> None:
        def on_change(ev: Any) -> None:
            instance = getattr(ev, stage, None)
            label = _name(instance) if instance is not None else "?"
            entry = {"at": time.time(), "stage": stage, "provider": label, "available": ev.available}
            self.events.append(entry)
            if not ev.available:
                parley_metrics.fallback(stage, label)
            (logger.info if ev.available else logger.warning)(
                "%s provider %s %s", stage, label, "recovered" if ev.available else "failed, local takes over")

        adapter.on(event, on_change)


@dataclass
class SessionModels:
    """What one call's AgentSession runs on."""

    stt: stt.STT
    llm: llm.LLM | llm.RealtimeModel
    tts: tts.TTS
    realtime: bool = False
    providers: dict[str, str] = field(default_factory=dict)  # stage -> "cloud → local" description
    fallbacks: FallbackLog = field(default_factory=FallbackLog)
    owned: list[Any] = field(default_factory=list)  # made for this call (not the shared local models)

    async def aclose(self) -> None:
        """Close this call's cloud clients and adapters (their HTTP pools, recovery probes)."""
        for item in reversed(self.owned):
            try:
                await item.aclose()
            except Exception as e:  # closing must never fail a call's teardown
                logger.debug("closing %s: %s", type(item).__name__, e)


def _name(p: stt.STT | llm.LLM | tts.TTS | llm.RealtimeModel) -> str:
    return f"{p.provider}/{p.model}"


def select_models(settings: Settings, local: Any) -> SessionModels:
    """`local` is the process's LocalModels (vad, stt, llm, tts), loaded once in prewarm."""
    log = FallbackLog()
    if settings.pipeline == "realtime":
        model = realtime_model(RealtimeOptions.from_settings(settings))
        # Piper still speaks the fixed phrases (greeting, goodbye, tool acknowledgements).
        return SessionModels(stt=local.stt, llm=model, tts=local.tts, realtime=True,
                             providers={"realtime": _name(model), "tts (fixed phrases)": _name(local.tts)},
                             fallbacks=log, owned=[model])

    timeout = settings.fallback_timeout
    chosen_stt: stt.STT = local.stt
    chosen_llm: llm.LLM = local.llm
    chosen_tts: tts.TTS = local.tts
    providers = {"stt": _name(local.stt), "llm": _name(local.llm), "tts": _name(local.tts)}
    owned: list[Any] = []

    if settings.stt == "deepgram":
        cloud_stt = DeepgramSTT(DeepgramOptions.from_settings(settings))
        providers["stt"] = _name(cloud_stt)
        chosen_stt = cloud_stt
        owned.append(cloud_stt)
        if settings.fallback:
            # Whisper is not a streaming model: the adapter runs it behind the VAD.
            chosen_stt = stt.FallbackAdapter([cloud_stt, local.stt], vad=local.vad, attempt_timeout=timeout,
                                             max_retry_per_stt=0, retry_interval=0.5)
            log.watch("stt", chosen_stt, "stt_availability_changed")
            owned.append(chosen_stt)
    if settings.llm == "openai":
        cloud_llm = openai_llm(OpenAILLMOptions.from_settings(settings))
        providers["llm"] = _name(cloud_llm)
        chosen_llm = cloud_llm
        owned.append(cloud_llm)
        if settings.fallback:
            # retry_on_chunk_sent: a reply cut off mid-stream is answered again by the local
            # model rather than left half-said.
            chosen_llm = llm.FallbackAdapter([cloud_llm, local.llm], attempt_timeout=timeout,
                                             max_retry_per_llm=0, retry_on_chunk_sent=True)
            log.watch("llm", chosen_llm, "llm_availability_changed")
            owned.append(chosen_llm)
    if settings.tts == "openai":
        cloud_tts = OpenAITTS(OpenAITTSOptions.from_settings(settings))
        providers["tts"] = _name(cloud_tts)
        chosen_tts = cloud_tts
        owned.append(cloud_tts)
        if settings.fallback:
            chosen_tts = tts.FallbackAdapter([cloud_tts, local.tts], max_retry_per_tts=0)
            log.watch("tts", chosen_tts, "tts_availability_changed")
            owned.append(chosen_tts)

    if settings.fallback:
        for stage in ("stt", "llm", "tts"):
            if getattr(settings, stage) != "local":
                providers[stage] += f" -> fallback {_name(getattr(local, stage))}"
    return SessionModels(stt=chosen_stt, llm=chosen_llm, tts=chosen_tts, providers=providers, fallbacks=log,
                         owned=owned)
