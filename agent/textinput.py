"""What the caller types (`lk.chat`) before it reaches the model: bounded, cleaned, paced.

The framework's default hands every chat message straight to `generate_reply`: a 1 MB
message goes into a 4k-token local model, 100 messages a second start 100 replies on two
cores. Here a message longer than PARLEY_CHAT_MAX_CHARS is refused, control characters
are removed (an empty result is refused), and messages beyond a small burst are dropped
until the bucket refills (PARLEY_CHAT_PER_MINUTE). Drops are logged as one summary line
at most every 10 s, so a flood cannot flood the log either. Only the caller's messages
get here (RoomIO ignores other participants); binary streams and unknown topics have no
handler and are dropped by the SDK (its one log line per such stream is thinned to one per 10 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from collections import Counter

from livekit.agents import AgentSession
from livekit.agents.voice.room_io import TextInputEvent

logger = logging.getLogger("parley.chat")

_LOG_EVERY_S = 10.0


class _UnhandledStreams(logging.Filter):
    """The SDK logs one line per stream on a topic nobody handles (on the root logger): a
    participant opening thousands would flood the log. One such line per 10 s passes, with
    how many were dropped since."""

    PREFIXES = ("ignoring text stream with topic", "ignoring byte stream with topic")

    def __init__(self) -> None:
        super().__init__()
        self.suppressed = 0
        self._passed_at = -_LOG_EVERY_S

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(self.PREFIXES)):
            return True
        now = time.monotonic()
        if now - self._passed_at < _LOG_EVERY_S:
            self.suppressed += 1
            return False
        self._passed_at = now
        if self.suppressed:
            record.msg = f"{record.msg} ({self.suppressed} more such streams ignored before this one)"
            self.suppressed = 0
        return True


logging.getLogger().addFilter(_UnhandledStreams())  # the SDK logs these with logging.info()


def clean(text: str) -> str:
    """Drop control/format characters (NULs, escapes, bidi overrides) but keep newlines and tabs."""
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C").strip()


class ChatGuard:
    """A `TextInputCallback` for one call."""

    def __init__(self, *, max_chars: int, per_minute: float, burst: int = 3) -> None:
        self.max_chars = max_chars
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._tokens = float(burst)
        self._refilled = time.monotonic()
        self.accepted = 0
        self.dropped: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()
        self._logged_at = 0.0
        self._flush_pending = False

    def _take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _drop(self, why: str) -> None:
        self.dropped[why] += 1
        self._unlogged[why] += 1
        wait = self._logged_at + _LOG_EVERY_S - time.monotonic()
        if wait <= 0:
            self._log()
        elif not self._flush_pending:
            # The rest of a burst is logged once the interval has passed, even if nothing follows.
            self._flush_pending = True
            asyncio.get_running_loop().call_later(wait, self._log)

    def _log(self) -> None:
        self._flush_pending = False
        if not self._unlogged:
            return
        self._logged_at = time.monotonic()
        logger.warning("chat messages dropped: %s",
                       " ".join(f"{k}={v}" for k, v in sorted(self._unlogged.items())))
        self._unlogged.clear()

    async def __call__(self, session: AgentSession, ev: TextInputEvent) -> None:
        if len(ev.text) > self.max_chars:
            return self._drop("too_long")
        text = clean(ev.text)
        if not text:
            return self._drop("empty")
        if not self._take():
            return self._drop("too_fast")
        self.accepted += 1
        # As the framework's default: a typed message interrupts the agent and is answered.
        try:
            await session.interrupt()
        except RuntimeError:  # a speech that may not be cut (the greeting): the reply queues behind it
            pass
        try:
            session.generate_reply(user_input=text)
        except RuntimeError:  # the session is closing
            self.accepted -= 1
