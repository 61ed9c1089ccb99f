"""Cloud TTS: OpenAI `/v1/audio/speech` (or a compatible server) through livekit-plugins-openai.

Raw 24 kHz PCM is asked for, so nothing has to be decoded. The plugin allows a response
30 s of silence before it gives up; a caller cannot wait that long, so a stalled response
(no audio for `timeout` seconds, headers included) fails the sentence over to Piper.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from livekit.agents import APITimeoutError, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
from livekit.agents.utils import aio
from livekit.plugins import openai
from livekit.plugins.openai import tts as openai_tts

from ..settings import Settings


@dataclass(frozen=True)
class OpenAITTSOptions:
    api_key: str
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"
    base_url: str = ""
    timeout: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAITTSOptions:
        return cls(api_key=settings.openai_api_key.get_secret_value(), model=settings.openai_tts_model,
                   voice=settings.openai_tts_voice, base_url=settings.openai_base_url,
                   timeout=settings.fallback_timeout)


class OpenAITTS(openai.TTS):
    def __init__(self, opts: OpenAITTSOptions) -> None:
        kwargs: dict[str, Any] = {"base_url": opts.base_url} if opts.base_url else {}
        super().__init__(model=opts.model, voice=opts.voice, api_key=opts.api_key,
                         response_format="pcm", **kwargs)
        self._stall_timeout = opts.timeout

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _StallGuardedStream(tts=self, input_text=text, conn_options=conn_options,
                                   stall_timeout=self._stall_timeout)


class _Progress:
    """The emitter, with the time audio (or the response headers) last arrived."""

    def __init__(self, emitter: tts.AudioEmitter) -> None:
        self._emitter = emitter
        self.last = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._emitter, name)

    def initialize(self, **kwargs: Any) -> None:
        self.last = time.monotonic()
        self._emitter.initialize(**kwargs)

    def push(self, data: bytes) -> None:
        self.last = time.monotonic()
        self._emitter.push(data)


class _StallGuardedStream(openai_tts.ChunkedStream):
    def __init__(self, *, stall_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stall_timeout = stall_timeout

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        progress = _Progress(output_emitter)
        task = asyncio.ensure_future(super()._run(progress))  # type: ignore[arg-type]
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.1)
                if done:
                    return task.result()
                if time.monotonic() - progress.last > self._stall_timeout:
                    raise APITimeoutError(f"no audio from {self._tts.provider} for {self._stall_timeout:.1f}s")
        finally:
            await aio.cancel_and_wait(task)


def openai_tts_provider(opts: OpenAITTSOptions) -> OpenAITTS:
    return OpenAITTS(opts)
