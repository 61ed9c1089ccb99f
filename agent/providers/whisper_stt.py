"""Local speech-to-text: faster-whisper (CTranslate2, int8) as a livekit-agents STT plugin.

Whisper is not a streaming model: the session wraps this class in
`stt.StreamAdapter` with the VAD, so each VAD speech segment is recognized
once, as soon as the speaker pauses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from livekit import rtc
from livekit.agents import stt, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr

from ..audio import resample

logger = logging.getLogger("parley.stt")

SAMPLE_RATE = 16000


@dataclass
class WhisperOptions:
    model_path: Path
    language: str = "en"
    # Beam search costs little next to the 30 s encoder pass and fixes most of tiny.en's slips
    # on 8 kHz phone audio ("capital and friends" -> "capital of France").
    beam_size: int = 5
    cpu_threads: int = 2
    # Segments Whisper itself thinks are not speech (noise that slipped past the VAD)
    # are dropped instead of becoming a hallucinated "Thank you." turn.
    no_speech_threshold: float = 0.6
    min_avg_logprob: float = -1.0


class WhisperSTT(stt.STT):
    def __init__(self, opts: WhisperOptions) -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(streaming=False, interim_results=False)
        )
        from faster_whisper import WhisperModel  # heavy import, only where used

        self._opts = opts
        t0 = time.perf_counter()
        self._model = WhisperModel(
            str(opts.model_path),
            device="cpu",
            compute_type="int8",
            cpu_threads=opts.cpu_threads,
            num_workers=1,
        )
        self._multilingual = self._model.model.is_multilingual
        # One warm-up pass so the first caller does not pay for lazy initialisation.
        self._transcribe(np.zeros(SAMPLE_RATE // 2, dtype=np.float32), opts.language)
        logger.info("whisper model %s loaded in %.2fs", opts.model_path.name, time.perf_counter() - t0)

    @property
    def model(self) -> str:
        return f"faster-whisper/{self._opts.model_path.name}"

    @property
    def provider(self) -> str:
        return "local"

    def _transcribe(self, audio: np.ndarray, language: str | None) -> tuple[str, str, float]:
        lang = language if self._multilingual else "en"
        segments, info = self._model.transcribe(
            audio,
            language=lang or None,
            beam_size=self._opts.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            temperature=0.0,
        )
        texts = [
            s.text
            for s in segments
            if not (
                s.no_speech_prob > self._opts.no_speech_threshold
                and s.avg_logprob < self._opts.min_avg_logprob
            )
        ]
        return " ".join(t.strip() for t in texts).strip(), info.language, info.language_probability

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        audio = to_whisper_input(buffer)
        lang = language if isinstance(language, str) and language else self._opts.language
        text, detected, prob = await asyncio.to_thread(self._transcribe, audio, lang)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=detected or lang, text=text, confidence=prob)],
        )


def to_whisper_input(buffer: utils.AudioBuffer) -> np.ndarray:
    """Mono float32 at 16 kHz, whatever rate and channel count the frames had."""
    frame = rtc.combine_audio_frames(buffer)
    pcm = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    return resample(pcm, frame.sample_rate, SAMPLE_RATE).astype(np.float32) / 32768.0
