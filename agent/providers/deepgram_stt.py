"""Cloud STT: Deepgram live streaming (`/v1/listen` websocket) through livekit-plugins-deepgram.

Deepgram answers a live stream with `Results` every few seconds of audio, empty ones
during silence, so audio flowing for `stall_timeout` seconds (twice the fallback timeout,
to leave a quiet but healthy stream alone) with no message back means the stream has
stalled: it is failed over to the local Whisper instead of leaving the caller unheard.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents import APITimeoutError
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import aio
from livekit.plugins import deepgram
from livekit.plugins.deepgram import stt as deepgram_stt

from .. import compat
from ..settings import Settings

DEFAULT_URL = "https://api.deepgram.com/v1/listen"


@dataclass(frozen=True)
class DeepgramOptions:
    api_key: str
    model: str = "nova-3"
    language: str = "en-US"
    base_url: str = ""  # API root (…/v1) or the full …/v1/listen URL; empty: Deepgram's
    timeout: float = 5.0  # connecting
    stall_timeout: float = 10.0  # audio streamed with no message back

    @classmethod
    def from_settings(cls, settings: Settings) -> DeepgramOptions:
        return cls(api_key=settings.deepgram_api_key.get_secret_value(), model=settings.deepgram_model,
                   language=settings.deepgram_language, base_url=settings.deepgram_base_url,
                   timeout=settings.fallback_timeout, stall_timeout=2 * settings.fallback_timeout)

    @property
    def listen_url(self) -> str:
        url = (self.base_url or DEFAULT_URL).rstrip("/")
        if url.endswith("/listen"):
            return url
        return url + "/listen" if url.endswith("/v1") else url + "/v1/listen"


class DeepgramSTT(deepgram.STT):
    def __init__(self, opts: DeepgramOptions, **kwargs: Any) -> None:
        super().__init__(model=opts.model, language=opts.language, api_key=opts.api_key,
                         base_url=opts.listen_url, **kwargs)
        self._stall_timeout = opts.stall_timeout

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> deepgram_stt.SpeechStream:
        stream = _StallGuardedStream(
            stt=self,
            conn_options=conn_options,
            opts=self._sanitize_options(language=language),
            api_key=self._api_key,
            http_session=compat.plugin_http_session(self),
            base_url=self._opts.endpoint_url,
            stall_timeout=self._stall_timeout,
        )
        compat.track_stream(self, stream)
        return stream


class _StallGuardedStream(deepgram_stt.SpeechStream):
    def __init__(self, *, stall_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stall_timeout = stall_timeout
        self._last_message = self._last_audio = time.monotonic()

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        self._last_audio = time.monotonic()
        super().push_frame(frame)

    def _process_stream_event(self, data: dict) -> None:
        self._last_message = time.monotonic()
        super()._process_stream_event(data)

    async def _run(self) -> None:
        self._last_message = time.monotonic()
        task = asyncio.ensure_future(super()._run())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.25)
                if done:
                    return task.result()
                if self._last_audio - self._last_message > self._stall_timeout:
                    raise APITimeoutError(f"no message from Deepgram for {self._stall_timeout:.1f}s of audio")
        finally:
            await aio.cancel_and_wait(task)
