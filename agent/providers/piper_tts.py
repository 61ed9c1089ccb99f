"""Local text-to-speech: Piper (ONNX VITS voices) as a livekit-agents TTS plugin.

Piper synthesizes a whole text at once. The framework's own adapter for such a TTS
waits for a whole sentence of at least 20 characters before synthesizing, so a reply
starting "Certainly! A rainy week in London would call for ..." waits for the LLM to
write all of it. Here the stream (`stream()`, a `tts.StreamAdapter` with
`FirstClauseTokenizer`) speaks a reply's first clause as soon as it exists ("Certainly!",
"Tokyo,": Piper needs ~0.08 s for it) and the rest clause by clause (4 to 12 words),
each synthesized while the LLM writes the next. Whole sentences would leave the caller
in silence after "Certainly!" while the LLM writes a long one. A first clause that runs
on ("The capital of Canada is Ottawa.") is cut before a phrase opener once it has three
words, and its first part spoken with a comma's intonation ("The capital of Canada,").

The transcript follows the pieces (`aligned_transcript`): each piece's text enters the
transcript synchronizer with its audio, so an interrupted reply keeps in the history
what was played, even where the audio had to wait for the LLM.

Every piece starts at its first sound: Piper opens an utterance with 40-70 ms of near
silence, which the caller would hear as latency (`trim_lead`).

Fixed phrases (the greetings) are synthesized once when the voice loads and played
from memory (`remembered_frames`, given to `session.say` as its audio): the greeting's
first audio then costs no synthesis at the moment a call starts, when the CPU is busiest
(connecting, and the pool loading a replacement process).

The ONNX session does not spin (`_load_voice`): onnxruntime's default thread pool keeps
its threads busy-waiting after each run, ~150 ms of a core per piece, exactly while the
LLM writes the next piece. Measured on 2 cores with Piper synthesizing clauses beside a
llama.cpp generation: the LLM wrote 9-10 tokens/s with the default session and 14-15
without spinning, and Piper's own pieces got faster (median 280-310 -> 180-200 ms).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from livekit import rtc
from livekit.agents import tokenize, tts
from livekit.agents.tokenize import TokenData
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
from livekit.agents.utils import shortuuid
from livekit.agents.utils.audio import AudioByteStream

from ..priority import VOICE_FIRST

if TYPE_CHECKING:
    from piper import PiperVoice

logger = logging.getLogger("parley.tts")


@dataclass
class PiperOptions:
    model_path: Path
    length_scale: float = 1.0  # < 1 speaks faster
    speaker_id: int | None = None
    # Phrases to synthesize now and play from memory (each whole, and sentence by sentence
    # as the session's sentence tokenizer hands them over).
    remember: tuple[str, ...] = ()
    # Where the remembered phrases' audio is kept between job processes: each call starts a
    # replacement process, and synthesizing the phrases again (~3 s of a core) would compete
    # with the call. None, or a directory that cannot be written: synthesized each time.
    phrase_dir: Path | None = None
    # ONNX intra-op threads. Measured alone: 85 ms for a short clause with 2, 137 ms with 1.
    threads: int = 2


def _load_voice(model_path: Path, threads: int) -> PiperVoice:
    """PiperVoice.load, with a session whose threads sleep when idle instead of spinning
    (see the module docstring); the config is read the way PiperVoice.load reads it."""
    import onnxruntime
    from piper import PiperConfig, PiperVoice

    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    config = PiperConfig.from_dict(json.loads(Path(f"{model_path}.json").read_text(encoding="utf-8")))
    session = onnxruntime.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=config)


def _key(text: str) -> str:
    return " ".join(text.split())


# Below about -40 dBFS: Piper's lead-in, not speech. Keep a few ms before the onset so the
# first consonant is not clipped.
_LEAD_LEVEL = 300
_LEAD_KEEP_S = 0.01


def trim_lead(pcm: bytes, sample_rate: int) -> bytes:
    """16-bit mono PCM from its first sound (less `_LEAD_KEEP_S`); all of it if none is loud."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _LEAD_LEVEL)
    if not loud.size:
        return pcm
    start = max(0, int(loud[0]) - int(_LEAD_KEEP_S * sample_rate))
    return samples[start:].tobytes()


class PiperTTS(tts.TTS):
    def __init__(self, opts: PiperOptions) -> None:
        from piper import SynthesisConfig  # heavy import, only where used

        t0 = time.perf_counter()
        voice = _load_voice(opts.model_path, opts.threads)
        super().__init__(
            # Aligned: the stream adapter hands each piece's text over with the piece's audio.
            capabilities=tts.TTSCapabilities(streaming=True, aligned_transcript=True),
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
                    self._cache[_key(piece)] = self._remembered(_key(piece))
        # Whole-text synthesis by sentence, first clause first (see the module docstring).
        self._pieces = _PiperPieces(self)
        self._adapter = tts.StreamAdapter(
            tts=self._pieces, sentence_tokenizer=FirstClauseTokenizer(whole=frozenset(self._cache)))
        self._adapter.on("metrics_collected", lambda m: self.emit("metrics_collected", m))
        logger.info("piper voice %s loaded in %.2fs", opts.model_path.stem, time.perf_counter() - t0)

    def _remembered(self, text: str) -> bytes:
        """The phrase's audio from `phrase_dir` when an earlier process made it, else synthesized
        (and kept there)."""
        if self._opts.phrase_dir is None:
            return self.synthesize_pcm(text)
        voice = self._opts.model_path.stat()
        ident = (f"{self._opts.model_path.resolve()}|{voice.st_size}|{voice.st_mtime_ns}|"
                 f"{self._opts.length_scale}|{self._opts.speaker_id}|{text}")
        path = self._opts.phrase_dir / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.pcm"
        try:
            return path.read_bytes()
        except OSError:
            pass
        pcm = self.synthesize_pcm(text)
        try:
            self._opts.phrase_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(pcm)
            tmp.replace(path)  # atomic: a process loading at the same time reads all or nothing
        except OSError as e:
            logger.debug("phrase audio not kept in %s: %s", self._opts.phrase_dir, e)
        return pcm

    @property
    def model(self) -> str:
        return self._opts.model_path.stem

    @property
    def provider(self) -> str:
        return "local"

    def synthesize_pcm(self, text: str) -> bytes:
        """Blocking: 16-bit mono PCM at `sample_rate` for the whole text, from its first sound."""
        pcm = b"".join(c.audio_int16_bytes for c in self._voice.synthesize(text, self._syn_config))
        return trim_lead(pcm, self.sample_rate)

    def remembered(self, text: str) -> bytes | None:
        """The audio of a phrase synthesized at load time, if `text` is one."""
        return self._cache.get(_key(text))

    def remembered_frames(self, text: str) -> AsyncIterator[rtc.AudioFrame] | None:
        """A remembered phrase as frames for `session.say(text, audio=...)`, else None.

        Through the TTS node the phrase arrives in pieces (the session's text transforms
        hold back its last character), so the first piece would be synthesized, not found:
        ~0.15 s of a busy core while the call starts. Passed as audio it is not synthesized."""
        if (pcm := self.remembered(text)) is None:
            return None
        return _frames(pcm, self.sample_rate)

    def iter_pcm(self, text: str) -> Iterator[bytes]:
        if (cached := self._cache.get(_key(text))) is not None:
            return iter((cached,))
        return self._synthesized(text)

    def _synthesized(self, text: str) -> Iterator[bytes]:
        first = True
        for chunk in self._voice.synthesize(text, self._syn_config):
            pcm = chunk.audio_int16_bytes
            if first:
                pcm, first = trim_lead(pcm, self.sample_rate), False
            yield pcm

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> PiperChunkedStream:
        return PiperChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> tts.SynthesizeStream:
        return self._adapter.stream(conn_options=conn_options)


async def _frames(pcm: bytes, sample_rate: int) -> AsyncIterator[rtc.AudioFrame]:
    chunk = AudioByteStream(sample_rate, 1, samples_per_channel=sample_rate // 50)  # 20 ms
    for frame in (*chunk.push(pcm), *chunk.flush()):
        yield frame
        # One frame per loop turn: handed over all at once, the seconds of a phrase would be
        # analysed in one go by the transcript synchronizer (speaking rate, ~0.13 s on this
        # loop) before the first frame reaches the room.
        await asyncio.sleep(0)


class _PiperPieces(tts.TTS):
    """The same voice as a non-streaming TTS: what the stream adapter synthesizes each piece with."""

    def __init__(self, piper: PiperTTS) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False),
                         sample_rate=piper.sample_rate, num_channels=1)
        self._piper = piper

    @property
    def model(self) -> str:
        return self._piper.model

    @property
    def provider(self) -> str:
        return self._piper.provider

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> PiperChunkedStream:
        return PiperChunkedStream(tts=self._piper, input_text=spoken(text), conn_options=conn_options)


# A clause or sentence ends: punctuation (and a closing quote or bracket) followed by a
# space; not "3.5", not "e.g.x". At the end of what the LLM has written so far, "?" and
# "!" end it too, and "," ";" ":" "." after a letter: waiting for the next token to be
# sure costs one token (~40 ms) on every reply, while a digit before them may be "3.5".
_BOUNDARY = re.compile(r"[,;:.!?]+[\"')\]]*(?=\s)|(?:[!?]+|(?<=[A-Za-z])[,;:.])$")
# Where a long first clause may be cut before its punctuation: before a word that opens a
# phrase ("The capital of Canada | is Ottawa."), once `FIRST_PHRASE_MIN_WORDS` words are
# there. Piper speaks the cut piece with a comma's continuing intonation, the pause a
# speaker takes there; the caller hears it after 3-5 tokens instead of the whole clause
# (the 0.5B model writes ~25 tokens/s on 2 cores, and Piper cannot start before).
FIRST_PHRASE_MIN_WORDS = 3
_PHRASE_OPENERS = frozenset({
    "is", "are", "was", "were", "has", "have", "had", "will", "would", "can", "could",
    "in", "on", "at", "of", "to", "for", "from", "with", "by", "about", "after", "before",
    "between", "into", "than", "and", "but", "or", "because", "so", "which", "that", "who",
    "when", "where", "while", "if",
})
_OPENER = re.compile(r"\s+([A-Za-z]+)(?=\s|$)")
_WORD = re.compile(r"[A-Za-z0-9][^\s]*")
_WORD_THEN_SPACE = re.compile(r"\S+(?=\s)")
# A period after these does not end a sentence: "Dr. Smith" stays one piece.
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "vs", "jr", "sr", "prof", "e.g", "i.e"})
# A piece after the first ends at the first clause or sentence end after `MIN_WORDS` words
# (shorter pieces sound clipped), or after `MAX_WORDS` words with no end in sight: the next
# piece must be ready before this one has played, or the caller hears a gap mid-reply.
MIN_WORDS = 4
MAX_WORDS = 12


def _words(text: str) -> int:
    return len(_WORD.findall(text))


def _is_abbreviation(text: str, dot: int) -> bool:
    word = text[:dot].rsplit(None, 1)[-1].lower() if text[:dot].strip() else ""
    return len(word) == 1 or word in _ABBREVIATIONS


class FirstClauseTokenizer(tokenize.SentenceTokenizer):
    """Cuts a reply into the pieces Piper synthesizes one by one while the LLM writes on:
    the first clause alone ("Certainly!", "Tokyo,"), then clauses of at least `MIN_WORDS`
    words and at most `MAX_WORDS`. A text in `whole` (a remembered phrase) stays one
    piece, so it is played from memory. Pieces keep their spacing: joined, they are the
    text as written (the transcript is made of them)."""

    def __init__(self, whole: frozenset[str] = frozenset()) -> None:
        self._whole = whole

    def tokenize(self, text: str, *, language: str | None = None) -> list[str]:
        pieces = _pieces(text, first=True, whole=self._whole, final=True)[0]
        return [p.strip() for p in pieces if p.strip()]

    def stream(self, *, language: str | None = None) -> tokenize.SentenceStream:
        return _FirstClauseStream(self._whole)


def _pieces(buf: str, *, first: bool, whole: frozenset[str], final: bool) -> tuple[list[str], str, bool]:
    """(the pieces `buf` starts with, what is left, whether the next piece is still a first)."""
    out: list[str] = []
    while buf:
        if _key(buf) in whole:
            out.append(buf)
            return out, "", False
        min_words = 1 if first else MIN_WORDS
        end = next((m.end() for m in _BOUNDARY.finditer(buf)
                    if not (buf[m.start()] == "." and _is_abbreviation(buf, m.start()))
                    and _words(buf[:m.end()]) >= min_words), None)
        if end is None and first and not final:
            end = _phrase_end(buf)
        if end is None and not first:
            # The MAX_WORDS-th word, once the word after it has begun.
            ends = [m.end() for m in itertools.islice(_WORD_THEN_SPACE.finditer(buf), MAX_WORDS + 1)]
            if len(ends) > MAX_WORDS:
                end = ends[MAX_WORDS - 1]
        if end is None:
            break
        out.append(buf[:end])
        buf, first = buf[end:], False
    if final and buf:
        out.append(buf)
        buf = ""
    return out, buf, first


def _phrase_end(buf: str) -> int | None:
    """Where a first clause still being written can be cut before a phrase opener.

    An opener the text so far ends with counts too, in lower case: the LLM writes "is" as one
    token, and the next one (~40 ms away) would only confirm it. Were it the start of a
    longer word ("is|land"), the cut still falls between words, before a noun instead of a
    verb: a pause in the wrong place, never a word cut in two.
    """
    for m in _OPENER.finditer(buf):
        word = m.group(1)
        opener = word in _PHRASE_OPENERS if m.end() == len(buf) else word.lower() in _PHRASE_OPENERS
        if opener and _words(buf[:m.start()]) >= FIRST_PHRASE_MIN_WORDS:
            return m.start()
    return None


def spoken(piece: str) -> str:
    """What Piper says for a piece: one cut before its punctuation ends in a comma, so it
    is spoken as the first part of a sentence, not as a sentence of its own."""
    return piece + "," if piece.rstrip()[-1:].isalnum() else piece


class _FirstClauseStream(tokenize.SentenceStream):
    def __init__(self, whole: frozenset[str]) -> None:
        super().__init__()
        self._whole = whole
        self._buf = ""
        self._first = True  # the segment's first piece is not out yet

    def _send(self, *, final: bool) -> None:
        pieces, self._buf, self._first = _pieces(self._buf, first=self._first, whole=self._whole, final=final)
        for piece in pieces:
            self._event_ch.send_nowait(TokenData(token=piece))

    def push_text(self, text: str) -> None:
        self._check_not_closed()
        self._buf += text
        self._send(final=False)

    def flush(self) -> None:
        self._check_not_closed()
        self._send(final=True)
        self._first = True

    def end_input(self) -> None:
        self.flush()
        self._do_close()

    async def aclose(self) -> None:
        self._do_close()


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
        if (cached := self._piper.remembered(self._input_text)) is not None:
            # A remembered phrase (the greeting): no worker thread, no wait for one.
            output_emitter.push(cached)
            output_emitter.flush()
            return
        loop = asyncio.get_running_loop()
        chunks = self._piper.iter_pcm(self._input_text)
        # Piper yields one chunk per sentence it finds; push each as soon as it exists.
        while chunk := await loop.run_in_executor(None, _next_chunk, chunks):
            output_emitter.push(chunk)
        output_emitter.flush()


def _next_chunk(chunks: Iterator[bytes]) -> bytes:
    """The next chunk of a piece (b"" at its end), the LLM of this process held meanwhile."""
    with VOICE_FIRST.speaking():
        return next(chunks, b"")
