"""Local text-to-speech: Piper (ONNX VITS voices) as a livekit-agents TTS plugin.

Piper synthesizes a whole text at once, so the class declares no streaming:
the session wraps it in `tts.StreamAdapter` with a sentence tokenizer, and
each sentence is synthesized (and starts playing) while the LLM is still
writing the next one.

Fixed phrases (the greetings) are synthesized once when the voice loads and played
from memory: the greeting's first audio then costs no synthesis at the moment a call
starts, when the CPU is busiest (connecting, and the pool loading a replacement process).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from livekit.agents import tokenize, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
from livekit.agents.utils import shortuuid

logger = logging.getLogger("parley.tts")


@dataclass
class PiperOptions:
    model_path: Path
    length_scale: float = 1.0  # < 1 speaks faster
    speaker_id: int | None = None
    # Phrases to synthesize now and play from memory (each whole, and sentence by sentence
    # as the session's sentence tokenizer hands them over).
    remember: tuple[str, ...] = ()


def _key(text: str) -> str:
    return " ".join(text.split())


class PiperTTS(tts.TTS):
    def __init__(self, opts: PiperOptions) -> None:
        from piper import PiperVoice, SynthesisConfig  # heavy import, only where used

        t0 = time.perf_counter()
        voice = PiperVoice.load(str(opts.model_path))
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=voice.config.sample_rate,
            num_channels=1,
        )
        self._opts = opts
        self._voice = voice
        self._syn_config = SynthesisConfig(length_scale=opts.length_scale, speaker_id=opts.speaker_id)
        self.synthesize_pcm("Hello.")  # warm-up: first ONNX run allocates its arenas
        self._cache: dict[str, bytes] = {}
        sentences = tokenize.blingfire.SentenceTokenizer(retain_format=True)
        for phrase in filter(None, opts.remember):
            for piece in (phrase, *sentences.tokenize(phrase)):
                if _key(piece) and _key(piece) not in self._cache:
                    self._cache[_key(piece)] = self.synthesize_pcm(_key(piece))
        logger.info("piper voice %s loaded in %.2fs", opts.model_path.stem, time.perf_counter() - t0)

    @property
    def model(self) -> str:
        return self._opts.model_path.stem

    @property
    def provider(self) -> str:
        return "local"

    def synthesize_pcm(self, text: str) -> bytes:
        """Blocking: 16-bit mono PCM at `sample_rate` for the whole text."""
        return b"".join(c.audio_int16_bytes for c in self._voice.synthesize(text, self._syn_config))

    def iter_pcm(self, text: str):  # type: ignore[no-untyped-def]
        if (cached := self._cache.get(_key(text))) is not None:
            return iter((cached,))
        return (c.audio_int16_bytes for c in self._voice.synthesize(text, self._syn_config))

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> PiperChunkedStream:
        return PiperChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class PiperChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: PiperTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._piper = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=shortuuid("piper_"),
            sample_rate=self._piper.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        loop = asyncio.get_running_loop()
        chunks = self._piper.iter_pcm(self._input_text)
        sentinel = b""
        # Piper yields one chunk per sentence it finds; push each as soon as it exists.
        while chunk := await loop.run_in_executor(None, next, chunks, sentinel):
            output_emitter.push(chunk)
        output_emitter.flush()
