"""Local speech-to-text: Whisper on CTranslate2 (int8) as a livekit-agents STT plugin.

Whisper is not a streaming model: the session wraps this class in
`stt.StreamAdapter` with the VAD, so each VAD speech segment is recognized
once, as soon as the speaker pauses.

Why not `faster_whisper.WhisperModel.transcribe` for every turn: it pads each
segment to Whisper's 30 s window, so a 2 s question pays for encoding 28 s of
padding (0.45-0.55 s of CPU on 2 cores for tiny.en). CTranslate2 accepts a
shorter mel input (the encoder adds only the first positions of its table), so
a turn is encoded on a window just longer than the speech, rounded up to a few
fixed sizes. Turns longer than the largest window take the 30 s path
(faster-whisper's own segmentation), unchanged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import stt, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr

from ..audio import high_band_db, prepare_noise_floor, resample, whisper_passes
from ..speculative_stt import WORDS_SO_FAR

logger = logging.getLogger("parley.stt")

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100  # Whisper's mel hop is 10 ms


@dataclass
class WhisperOptions:
    model_path: Path
    language: str = "en"
    # Measured on the question set (scripts/bench_models.py), base on the 10 s window: beam 5
    # cuts the word error rate from 0.29 to 0.23 for ~45 ms more per turn (tiny.en: 0.27 -> 0.25).
    beam_size: int = 5
    # One CTranslate2 thread: Whisper's matrices are small, so a second thread's hand-offs cost
    # more than it computes, and beside other work (the call's audio, the caller) every step
    # waits for the slower thread. Ten question clips on 2 cores, 1 vs 2 threads: tiny.en 121 vs
    # 138 ms alone, 120 vs 160 ms beside a thread busy 30 % of the time, 136 vs 201 ms at 60 %;
    # base 232 vs 231 ms alone, 245 vs 286 ms at 30 %. In calls Whisper took 200-250 ms with 2.
    cpu_threads: int = 1
    # Encoder window sizes (seconds) for the short path: the smallest one that holds the speech
    # plus `window_margin_s` is used; longer speech takes the 30 s path. Measured on the question
    # set (scripts/bench_models.py): a 10 s window keeps the 30 s path's word error rate at a
    # third of its cost, while 6 s windows make base loop and mishear phone audio (WER 0.5).
    # An empty tuple means the 30 s path for everything.
    windows_s: tuple[float, ...] = (10.0, 20.0)
    window_margin_s: float = 1.0
    # Fill the window with real silence (as OpenAI's Whisper pads its 30 s window) rather than
    # with zero-valued features (as faster-whisper does).
    pad_with_silence: bool = True
    # Segments Whisper itself thinks are not speech (noise that slipped past the VAD)
    # are dropped instead of becoming a hallucinated "Thank you." turn.
    no_speech_threshold: float = 0.6
    min_avg_logprob: float = -1.0
    # Text Whisper is told came just before the turn (its "previous text" prompt), e.g. the agent's
    # greeting: it primes the decoder for a conversational question. Empty: no prompt.
    prompt: str = ""
    # A greedy decoder can loop on noise; a spoken turn never needs more tokens than this per second.
    max_tokens_per_s: float = 8.0
    # Phone-band audio gets pink noise this far (dB) under the speech before recognition; 0: none.
    # tiny.en on the question set's phone clips (agent/audio.py with_noise_floor): 35-45 dB all
    # help, 40 most, 20-25 dB hurt. Not over wide-band speech alone: there it moved single clips
    # both ways ("What is the capital of France?" -> "... and friends?"); see two_pass_floor_db.
    phone_noise_floor_db: float = 40.0
    # Wide-band speech on the short path is decoded twice, as it is and with pink noise this far
    # (dB) under it, on the two replicas at once, and the transcript Whisper scores higher (average
    # log-probability) is kept; 0: once. tiny.en, 143 wide-band clips (question set, held-out,
    # received through livekit-server): word error rate 0.194 -> 0.169, for ~55 ms more per turn
    # on 2 idle cores (130 -> 185 ms; +40-60 ms in calls). Words-so-far runs (WORDS_SO_FAR) stay single.
    two_pass_floor_db: float = 0.0


@dataclass
class Transcript:
    text: str
    language: str
    language_probability: float
    window_s: float  # encoder window used; 30 for the long path
    seconds: float  # wall time of the recognition


class WhisperSTT(stt.STT):
    def __init__(self, opts: WhisperOptions) -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(streaming=False, interim_results=False)
        )
        from faster_whisper import WhisperModel  # heavy import, only where used
        from faster_whisper.tokenizer import Tokenizer

        self._opts = opts
        t0 = time.perf_counter()
        self._model = WhisperModel(
            str(opts.model_path),
            device="cpu",
            compute_type="int8",
            cpu_threads=opts.cpu_threads,
            # Two runs at once: a speculative run the caller talked over (agent/speculative_stt.py)
            # still finishes, and must not hold up the run of the pause that ends the turn. The
            # replicas share the weights (RSS unchanged).
            num_workers=2,
        )
        self._multilingual = bool(self._model.model.is_multilingual)
        self._tokenizer_cls = Tokenizer
        self._tokenizers: dict[str, Any] = {}
        self._second_pass = ThreadPoolExecutor(2, thread_name_prefix="whisper-pass")
        # A warm-up pass on each replica, so a call's first turn does not pay for lazy
        # initialisation (CTranslate2 allocates per input shape: a fresh process's first
        # recognition took 170-180 ms where the next took 115). The smallest window only: it holds
        # nearly every turn, and each pass costs ~0.15 s of loading. Quiet noise, not zeros:
        # silence is no turn (has_sound) and never reached the model, which left the warm-up a no-op.
        if opts.phone_noise_floor_db > 0 or opts.two_pass_floor_db > 0:
            prepare_noise_floor()
        warm = (np.random.default_rng(0).standard_normal(SAMPLE_RATE) * 0.01).astype(np.float32)
        if opts.windows_s:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda _: self._transcribe_window(warm, opts.language, min(opts.windows_s)), range(2)))
        logger.info("whisper model %s loaded in %.2fs", opts.model_path.name, time.perf_counter() - t0)

    @property
    def model(self) -> str:
        return f"whisper-ct2/{self._opts.model_path.name}"

    @property
    def provider(self) -> str:
        return "local"

    def _tokenizer(self, language: str) -> Any:
        lang = language if self._multilingual else "en"
        tok = self._tokenizers.get(lang)
        if tok is None:
            tok = self._tokenizer_cls(self._model.hf_tokenizer, self._multilingual, task="transcribe",
                                      language=lang if self._multilingual else None)
            self._tokenizers[lang] = tok
        return tok

    def window_for(self, seconds: float) -> float | None:
        """The short-path window for speech of this length, or None for the 30 s path."""
        need = seconds + self._opts.window_margin_s
        return next((w for w in sorted(self._opts.windows_s) if w >= need), None)

    def transcribe(self, audio: np.ndarray, language: str | None) -> Transcript:
        """Blocking recognition of mono float32 16 kHz audio (runs in a worker thread)."""
        t0 = time.perf_counter()
        lang = (language or "en") if self._multilingual else "en"
        if not has_sound(audio):
            # Whisper invents words ("you", "Thank you.") for silence; nothing to hear, no turn.
            return Transcript("", lang, 1.0, 0.0, time.perf_counter() - t0)
        window = self.window_for(len(audio) / SAMPLE_RATE)
        passes = whisper_passes(audio, self._opts.phone_noise_floor_db,
                                0.0 if window is None or WORDS_SO_FAR.get() else self._opts.two_pass_floor_db)
        if window is None:
            text, detected, prob = self._transcribe_long(passes[0], lang)
            window = 30.0
        else:
            # The second pass on the other replica while this thread decodes the first.
            others = [self._second_pass.submit(self._transcribe_window, a, lang, window) for a in passes[1:]]
            best = max([self._transcribe_window(passes[0], lang, window), *(f.result() for f in others)],
                       key=lambda r: r[2])
            text, prob = best[0], best[1]
            detected = lang
        return Transcript(text, detected, prob, window, time.perf_counter() - t0)

    def _transcribe_window(self, audio: np.ndarray, language: str, window: float) -> tuple[str, float, float]:
        """Text, speech probability (1 - no-speech) and average log-probability of the tokens."""
        from faster_whisper.transcribe import get_suppressed_tokens

        tokenizer = self._tokenizer(language)
        frames = int(window * FRAMES_PER_SECOND)
        speech_s = len(audio) / SAMPLE_RATE
        # Mel of the audio (minus the extra frame the STFT padding adds), filled up to the window
        # with the mel of silence (or with zero features, as faster-whisper fills its 30 s window).
        if self._opts.pad_with_silence:
            want = frames * 160
            audio = np.pad(audio, (0, max(0, want - len(audio))))
        feats = self._model.feature_extractor(audio)[:, :-1][:, :frames]
        if feats.shape[1] < frames:
            feats = np.pad(feats, ((0, 0), (0, frames - feats.shape[1])))
        encoded = self._model.encode(np.ascontiguousarray(feats, dtype=np.float32))
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        if self._opts.prompt:
            prompt = [tokenizer.sot_prev, *tokenizer.encode(" " + self._opts.prompt.strip())[-200:], *prompt]
        max_new = int(self._opts.max_tokens_per_s * speech_s) + 8
        result = self._model.model.generate(
            encoded,
            [prompt],
            beam_size=self._opts.beam_size,
            max_length=min(len(prompt) + max_new, 448),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        )[0]
        tokens = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else -10.0
        if result.no_speech_prob > self._opts.no_speech_threshold and avg_logprob < self._opts.min_avg_logprob:
            return "", 1.0 - result.no_speech_prob, avg_logprob
        return drop_repeated_sentences(tokenizer.decode(tokens).strip()), 1.0 - result.no_speech_prob, avg_logprob

    def _transcribe_long(self, audio: np.ndarray, language: str) -> tuple[str, str, float]:
        segments, info = self._model.transcribe(
            audio,
            language=language,
            beam_size=max(self._opts.beam_size, 1),
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            temperature=0.0,
            initial_prompt=self._opts.prompt or None,
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
        result = await asyncio.to_thread(self.transcribe, audio, lang)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("stt %.2fs audio, window %.0fs, %.0f ms, band above 4 kHz %.0f dB: %r",
                         len(audio) / SAMPLE_RATE, result.window_s, result.seconds * 1000, high_band_db(audio),
                         result.text)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=result.language or lang, text=result.text,
                                         confidence=result.language_probability)],
        )


# Below this RMS in every 10 ms window (about -50 dBFS) a segment holds no sound at all.
SILENCE_RMS = 0.003


def has_sound(audio: np.ndarray) -> bool:
    n = len(audio) // 160
    if n == 0:
        return False
    frames = audio[: n * 160].reshape(n, 160)
    return bool(np.sqrt((frames * frames).mean(axis=1)).max() > SILENCE_RMS)


_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_WORD = re.compile(r"\w+(?:'\w+)?")


def _norm_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def drop_repeated_sentences(text: str) -> str:
    """Whisper's decoding loop: a sentence of 3+ words said once comes out twice in a row
    ("La playa está cerca del hotel. La playa está cerca del hotel"), mostly when the window
    holds more silence than speech. Keep the first; short repeats ("Stop. Stop.") are speech.
    The same for an unfinished repeat of the sentence's start at the end."""
    words = _norm_words(text)
    half = len(words) // 2
    if len(words) % 2 == 0 and half >= 3 and words[:half] == words[half:]:
        # The same words twice, whatever the punctuation between them.
        cut = next(itertools.islice(_WORD.finditer(text), half - 1, None)).end()
        return text[:cut] + (text[cut] if cut < len(text) and text[cut] in ".!?" else "")
    kept: list[str] = []
    last: list[str] = []
    for sentence in _SENTENCE.findall(text):
        norm = _norm_words(sentence)
        if not (kept and len(norm) >= 3 and norm == last):
            kept.append(sentence)
        last = norm
    # The loop cut off by the token limit: "What is the largest planet in our solar system? What
    # is the largest planet in our" (an unfinished start of the sentence before it).
    if len(kept) >= 2 and not kept[-1].rstrip().endswith((".", "!", "?")):
        tail, before = _norm_words(kept[-1]), _norm_words(kept[-2])
        if 3 <= len(tail) < len(before) and before[: len(tail)] == tail:
            kept.pop()
    return "".join(kept).strip()


def to_whisper_input(buffer: utils.AudioBuffer) -> np.ndarray:
    """Mono float32 at 16 kHz, whatever rate and channel count the frames had."""
    frame = rtc.combine_audio_frames(buffer)
    pcm = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    return resample(pcm, frame.sample_rate, SAMPLE_RATE).astype(np.float32) / 32768.0
