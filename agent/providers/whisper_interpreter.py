"""Interpreter speech-to-text: multilingual Whisper that detects which of the call's two
languages was spoken, transcribes it, and (for speech that is not English) translates it
into English itself, with Whisper's own `translate` task on the same encoder output.

A livekit-agents STT plugin (non-streaming: the session wraps it in `StreamAdapter` with
the VAD). Each final transcript carries the original text and its language in
`SpeechData.text` / `.language`, and Whisper's English translation, when it made one, in
`SpeechData.target_texts` / `.target_languages` (the framework's fields for translating
STTs), so the interpreter agent (agent/interpreter.py) needs no second pass over the audio.

Like agent/providers/whisper_stt.py, a short utterance is encoded on a window just longer
than the speech (6/10/15/20 s) instead of Whisper's padded 30 s: a third of the encoder cost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from livekit.agents import stt, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import is_given

from ..audio import phone_noise_floor, prepare_noise_floor
from .whisper_stt import drop_repeated_sentences, to_whisper_input

logger = logging.getLogger("parley.interpreter.stt")

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100


@dataclass
class InterpreterSTTOptions:
    model_path: Path
    languages: tuple[str, str] = ("en", "es")
    cpu_threads: int = 1  # as agent/providers/whisper_stt.py WhisperOptions: faster beside other work
    # Beam search: fewer misheard words on synthetic and phone speech (scripts/bench_interpreter.py).
    beam_size: int = 5
    windows_s: tuple[float, ...] = (6.0, 10.0, 15.0, 20.0, 30.0)
    window_margin_s: float = 1.0
    # Whisper translates only into English: with this on, the translation is made when the
    # utterance's language is not English. Off by default: on the benchmark the text model
    # translated the transcript far more faithfully than Whisper base's translate task,
    # which invents sentences (scripts/bench_interpreter.py --models).
    translate_to_english: bool = False
    max_tokens_per_s: float = 8.0
    no_speech_threshold: float = 0.6
    phone_noise_floor_db: float = 40.0  # as WhisperOptions: under phone-band speech; 0: none


@dataclass
class Interpretation:
    text: str
    language: str
    language_probability: float
    english: str | None  # Whisper's translation into English (None: not made)
    seconds: dict[str, float] = field(default_factory=dict)  # encode / detect / transcribe / translate


class WhisperInterpreterSTT(stt.STT):
    def __init__(self, opts: InterpreterSTTOptions) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        t0 = time.perf_counter()
        self._opts = opts
        self._model = WhisperModel(str(opts.model_path), device="cpu", compute_type="int8",
                                   # Two runs at once, as agent/providers/whisper_stt.py: a run started
                                   # early in a pause the speaker then talked through must not hold up
                                   # the run that ends the utterance (weights shared).
                                   cpu_threads=opts.cpu_threads, num_workers=2)
        if not self._model.model.is_multilingual:
            raise ValueError(f"{opts.model_path}: interpreter mode needs a multilingual Whisper model (base)")
        self._tokenizer_cls = Tokenizer
        self._tokenizers: dict[tuple[str, str], Any] = {}
        if opts.phone_noise_floor_db > 0:
            prepare_noise_floor()
        for w in opts.windows_s:  # CTranslate2 allocates per input shape: pay for it now
            self.interpret(np.zeros(int(SAMPLE_RATE * max(w - opts.window_margin_s, 0.5)), np.float32))
        logger.info("interpreter whisper %s loaded in %.2fs", opts.model_path.name, time.perf_counter() - t0)

    @property
    def model(self) -> str:
        return f"whisper-ct2/{self._opts.model_path.name}"

    @property
    def provider(self) -> str:
        return "local"

    def tokenizer(self, language: str, task: str) -> Any:
        key = (language, task)
        if key not in self._tokenizers:
            self._tokenizers[key] = self._tokenizer_cls(self._model.hf_tokenizer, True, task=task, language=language)
        return self._tokenizers[key]

    def encode(self, audio: np.ndarray) -> Any:
        audio = audio[: int(max(self._opts.windows_s) * SAMPLE_RATE)]  # an utterance, not a recording
        audio = phone_noise_floor(audio, self._opts.phone_noise_floor_db)
        need = len(audio) / SAMPLE_RATE + self._opts.window_margin_s
        window = next((w for w in sorted(self._opts.windows_s) if w >= need), max(self._opts.windows_s))
        frames = int(window * FRAMES_PER_SECOND)
        audio = np.pad(audio, (0, max(0, frames * 160 - len(audio))))  # real silence, as Whisper pads
        feats = self._model.feature_extractor(audio)[:, :-1][:, :frames]
        return self._model.encode(np.ascontiguousarray(feats, dtype=np.float32))

    def detect(self, encoded: Any) -> tuple[str, float]:
        """The more likely of the call's two languages, and its probability among all."""
        probs = {tok.strip("<|>"): p for tok, p in self._model.model.detect_language(encoded)[0]}
        lang = max(self._opts.languages, key=lambda code: probs.get(code, 0.0))
        return lang, float(probs.get(lang, 0.0))

    def decode(self, encoded: Any, language: str, task: str, seconds: float) -> tuple[str, float]:
        """Text for `task` ("transcribe" or "translate") forced to `language`, and no-speech prob."""
        from faster_whisper.transcribe import get_suppressed_tokens

        tok = self.tokenizer(language, task)
        prompt = [*tok.sot_sequence, tok.no_timestamps]
        max_new = int(self._opts.max_tokens_per_s * seconds) + 8
        result = self._model.model.generate(
            encoded, [prompt], beam_size=self._opts.beam_size, max_length=min(len(prompt) + max_new, 448),
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tok, [-1]),
        )[0]
        return drop_repeated_sentences(tok.decode(result.sequences_ids[0]).strip()), float(result.no_speech_prob)

    def interpret(self, audio: np.ndarray, language: str | None = None) -> Interpretation:
        """Blocking: detect (unless `language` is given), transcribe, translate to English."""
        t = time.perf_counter()
        secs: dict[str, float] = {}
        encoded = self.encode(audio)
        secs["encode"] = time.perf_counter() - t
        t = time.perf_counter()
        if language is None:
            language, prob = self.detect(encoded)
            secs["detect"] = time.perf_counter() - t
        else:
            prob = 1.0
        t = time.perf_counter()
        dur = len(audio) / SAMPLE_RATE
        text, no_speech = self.decode(encoded, language, "transcribe", dur)
        secs["transcribe"] = time.perf_counter() - t
        if no_speech > self._opts.no_speech_threshold and len(text.split()) <= 2:
            text = ""  # noise the VAD let through, not an utterance to interpret
        english = None
        if text and language != "en" and "en" in self._opts.languages and self._opts.translate_to_english:
            t = time.perf_counter()
            english, _ = self.decode(encoded, language, "translate", dur)
            secs["translate"] = time.perf_counter() - t
        return Interpretation(text, language, prob, english, secs)

    def for_speaker(self, language_of: Callable[[], str | None]) -> SpeakerSTT:
        """This model as one speaker hears it: `language_of()` is the language they said they
        speak (a client's choice), which replaces detection while it is one of the pair."""
        return SpeakerSTT(self, language_of)

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        return await self.recognize_as(buffer, language if is_given(language) else None)

    async def recognize_as(self, buffer: utils.AudioBuffer, language: str | None) -> stt.SpeechEvent:
        """One utterance in `language` (one of the pair), or in the detected one (None)."""
        audio = to_whisper_input(buffer)
        forced = language if language in self._opts.languages else None
        r = await asyncio.to_thread(self.interpret, audio, forced)
        logger.info("interpreter heard %s (p=%.2f) %r -> en %r in %s", r.language, r.language_probability, r.text,
                    r.english, {k: round(v * 1000) for k, v in r.seconds.items()})
        data = stt.SpeechData(language=r.language, text=r.text, confidence=r.language_probability)
        if r.english:
            data.target_languages, data.target_texts = ["en"], [r.english]
        return stt.SpeechEvent(type=stt.SpeechEventType.FINAL_TRANSCRIPT, alternatives=[data])


class SpeakerSTT(stt.STT):
    """One speaker's view of the shared interpreter Whisper (one model per job process, one
    session per speaker): the language the speaker declared skips detection, which on the
    benchmark mistook a quarter of the Spanish sentences for English."""

    def __init__(self, shared: WhisperInterpreterSTT, language_of: Callable[[], str | None]) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._shared = shared
        self._language_of = language_of

    @property
    def model(self) -> str:
        return self._shared.model

    @property
    def provider(self) -> str:
        return self._shared.provider

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        return await self._shared.recognize_as(buffer, language if is_given(language) else self._language_of())
