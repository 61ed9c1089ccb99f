"""A local model that raises is heard, not silent.

When a local provider (Whisper, llama.cpp, Piper) raises something other than an
`APIError` (a cloud provider's failure, which the FallbackAdapter and the framework's
retries handle), the framework drops that turn without a word: the caller hears silence
and, after a few such failures, the session closes. Here the caller hears one short
apology instead, the failure is logged once (one record, with its traceback) and counted, and
the call goes on: the apology is agent speech, which resets the framework's count of
unrecoverable errors.

The apology is rendered to audio once per job process (prewarm), so it can be played
even when the failing model is the TTS itself.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession, APIError
from livekit.agents.voice.events import ErrorEvent

logger = logging.getLogger("parley.faults")

_KINDS = {"stt_error": "stt", "llm_error": "llm", "tts_error": "tts"}
_FRAME_MS = 20


def render_apology(tts: Any, text: str) -> list[rtc.AudioFrame] | None:
    """The apology as 20 ms frames, from a TTS with a blocking `synthesize_pcm` (Piper)."""
    synth = getattr(tts, "synthesize_pcm", None)
    if not text or synth is None:
        return None
    try:
        pcm: bytes = synth(text)
    except Exception as e:  # then the apology goes through the session's TTS
        logger.warning("apology not pre-rendered: %s: %s", type(e).__name__, e)
        return None
    rate = int(tts.sample_rate)
    step = rate * _FRAME_MS // 1000 * 2
    return [rtc.AudioFrame(pcm[i:i + step], rate, 1, len(pcm[i:i + step]) // 2)
            for i in range(0, len(pcm) - 1, step)]


def count_error(kind: str) -> None:
    """`parley_errors_total{kind}` from agent/metrics.py (the observability module), when present."""
    try:
        from . import metrics
    except ImportError:  # a build without the metrics module: the log line is the record
        return
    metrics.error(kind)


class _Reported(logging.Filter):
    """Drops the framework's own traceback for a failure this module already logged, so
    each failure is one log record (ours, which carries the traceback)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: deque[BaseException] = deque(maxlen=16)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not any(exc is e for e in self.seen)


_reported = _Reported()
logging.getLogger("livekit.agents").addFilter(_reported)


class LocalFailures:
    """Listens to one session's errors; apologises for local-model failures."""

    def __init__(self, apology: str, audio: list[rtc.AudioFrame] | None = None, *,
                 min_gap_s: float = 5.0) -> None:
        self.apology = apology
        self.audio = audio
        self.min_gap_s = min_gap_s  # one apology for one bad turn, even if several stages fail
        self.failures = 0
        self.apologies = 0
        self._session: AgentSession[Any] | None = None
        self._last_apology = 0.0
        # The same exception can be reported by two stages (LLM stream and the reply task).
        self._seen: deque[BaseException] = deque(maxlen=8)

    def attach(self, session: AgentSession[Any]) -> None:
        self._session = session
        session.on("error", self._on_error)

    def _on_error(self, ev: ErrorEvent) -> None:
        err = ev.error
        exc = getattr(err, "error", None)
        kind = _KINDS.get(getattr(err, "type", ""))
        if kind is None or not isinstance(exc, BaseException) or getattr(err, "recoverable", False):
            return
        if isinstance(exc, APIError) or any(exc is e for e in self._seen):
            return  # a cloud API failure (fallback and retries handle it), or already reported
        self._seen.append(exc)
        _reported.seen.append(exc)
        self.failures += 1
        count_error(kind)
        provider = getattr(ev.source, "model", None) or type(ev.source).__name__
        logger.error("local %s (%s) failed: %s: %s; apologising, the call goes on",
                     kind, provider, type(exc).__name__, str(exc)[:200], exc_info=exc)
        now = time.monotonic()
        if now - self._last_apology < self.min_gap_s:
            return
        self._last_apology = now
        self._apologise()

    def _apologise(self) -> None:
        if self._session is None or not self.apology:
            return
        try:
            if self.audio:
                self._session.say(self.apology, audio=self._frames(), allow_interruptions=True)
            else:
                self._session.say(self.apology, allow_interruptions=True)
            self.apologies += 1
        except RuntimeError:  # the session is closing: no one left to hear it
            pass

    async def _frames(self) -> AsyncIterator[rtc.AudioFrame]:
        for frame in self.audio or []:
            yield frame
