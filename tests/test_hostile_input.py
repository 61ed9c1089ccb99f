"""Hostile room input against a real worker: a Python client in the room (livekit rtc)
sends huge, binary, invalid-UTF-8 and control-character chat, 100 chat messages a second,
a DTMF flood and streams on unknown topics; the call keeps working (a spoken question is
still answered, a typed one too) and the worker does not crash."""

from __future__ import annotations

import asyncio
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from livekit import rtc

from agent.audio import resample
from harness.audio import read_wav
from harness.call import RATE, CallOptions, _reply_done, _wait, await_greeting, open_call
from harness.devstack import LiveKitServer, Worker
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

CHAT = "lk.chat"


async def _try(counts: dict[str, list[int]], kind: str, coro) -> None:  # type: ignore[no-untyped-def]
    """Send one hostile thing; count it as sent, or refused by the client SDK itself."""
    sent, refused = counts.setdefault(kind, [0, 0])
    try:
        await asyncio.wait_for(coro, 30)
        counts[kind][0] = sent + 1
    except Exception:
        counts[kind][1] = refused + 1


async def fuzz(room: rtc.Room, rng: random.Random) -> dict[str, list[int]]:
    lp = room.local_participant
    counts: dict[str, list[int]] = {}
    # Huge chat: 64 KB, 1 MB, 4 MB of ASCII, and 200 KB of 4-byte characters (chunk splits).
    for size in (64 * 1024, 1024 * 1024, 4 * 1024 * 1024):
        await _try(counts, "chat_huge", lp.send_text("A" * size, topic=CHAT))
    await _try(counts, "chat_huge", lp.send_text("\U0001f600" * 50_000, topic=CHAT))
    # Binary on the chat topic: byte streams and legacy data packets, invalid UTF-8 included.
    for _ in range(20):
        blob = bytes([0xFF, 0xFE, 0xC0, 0x80]) + os.urandom(rng.randint(1, 200_000))
        await _try(counts, "chat_binary_stream", lp.send_bytes(blob, topic=CHAT, name="x.bin"))
        await _try(counts, "chat_binary_packet", lp.publish_data(blob[:10_000], topic=CHAT))
    # Text the SDK can carry but no person types: NULs, escapes, bidi overrides, only controls;
    # lone surrogates are invalid UTF-8 (the SDK may refuse to encode them: counted as refused).
    for text in ("\x00" * 1000, "\x1b[2J\x1b[31mred", "\u202eevil\u202c", "\x07\x08\x7f", "\ud800\udfff",
                 "ok\udcff", "\ufeff" * 10, " \n\t "):
        await _try(counts, "chat_control_or_invalid", lp.send_text(text, topic=CHAT))
    # 100 chat messages a second for two seconds.
    t0 = time.monotonic()
    for i in range(200):
        await _try(counts, "chat_flood", lp.send_text(f"flood {i}", topic=CHAT))
        await asyncio.sleep(max(0.0, t0 + (i + 1) / 100 - time.monotonic()))
    # DTMF flood (a WebRTC caller pressing keys a phone line would act on).
    for i in range(300):
        await _try(counts, "dtmf", lp.publish_dtmf(code=i % 16, digit="0123456789*#ABCD"[i % 16]))
    # Unknown topics, text and bytes.
    for i in range(100):
        topic = f"x-{rng.getrandbits(64):x}" if i % 2 else "lk.agent.unknown" + str(i)
        await _try(counts, "unknown_topic_text", lp.send_text("hello " * rng.randint(1, 5000), topic=topic))
    for _ in range(50):
        await _try(counts, "unknown_topic_bytes",
                   lp.send_bytes(os.urandom(rng.randint(1, 50_000)), topic=f"y-{rng.getrandbits(32):x}"))
    return counts


def test_hostile_room_input_does_not_break_the_call(livekit_server: LiveKitServer, worker: Worker,
                                                     fixtures: Path, tmp_path: Path) -> None:
    assert worker.proc is not None
    log_start = len(worker.proc.log())
    clip = read_wav(fixtures / "capital_france.wav")
    opts = CallOptions(url=livekit_server.url, api_key=livekit_server.api_key,
                       api_secret=livekit_server.api_secret, agent="parley",
                       room=f"fuzz-{int(time.time())}", clips=[], timeout=60, json=True)

    async def run() -> tuple[dict[str, list[int]], str, float, str]:
        async with open_call(opts) as live:
            state = live.state
            greeting = await await_greeting(state, live.joined_at, 60)
            assert greeting["agent_text"], "no greeting"
            counts = await fuzz(live.room, random.Random(12))
            assert state.agent_identity in live.room.remote_participants, "the agent left the room"
            # A spoken question after the storm is still heard and answered.
            started, _ = live.mic.play(resample(clip.pcm, clip.sample_rate, RATE))
            t_start = await started
            await live.mic.done
            heard = await _wait(state, lambda: state.first_speech_after(t_start + clip.duration_s) is not None, 60)
            assert heard, "no spoken answer after the fuzz"
            await _wait(state, lambda: _reply_done(state, t_start), 60)
            spoken = state.text_since(t_start, agent=True)
            # A typed question (once the chat bucket has refilled) is answered too.
            await asyncio.sleep(3.5)
            t_typed = time.perf_counter()
            await live.room.local_participant.send_text("What is the capital of France?", topic=CHAT)
            await _wait(state, lambda: state.first_speech_after(t_typed) is not None, 60)
            await _wait(state, lambda: _reply_done(state, t_typed), 60)
            typed = state.text_since(t_typed, agent=True)
            return counts, spoken, state.first_speech_after(t_typed) or 0.0, typed

    counts, spoken, typed_at, typed = asyncio.run(run())
    sys.stderr.write(f"fuzz counts (sent, refused by the client SDK): {counts}\n")
    for kind, n in (("chat_huge", 4), ("chat_binary_stream", 20), ("chat_binary_packet", 20), ("chat_flood", 200),
                    ("dtmf", 300), ("unknown_topic_text", 100), ("unknown_topic_bytes", 50)):
        assert counts[kind][0] == n, (kind, counts)  # all of it reached the room
    assert "paris" in spoken.lower(), spoken
    assert typed_at and typed, "typed question not answered"
    assert worker.proc.popen.poll() is None, "worker crashed"
    status, _ = worker.health("/")
    assert status == 200

    def dropped() -> Counter[str]:
        total: Counter[str] = Counter()
        for m in re.finditer(r"chat messages dropped: ([a-z_=0-9 ]+)", worker.proc.log()[log_start:]):
            for k, v in (kv.split("=") for kv in m.group(1).split()):
                total[k] += int(v)
        return total

    # The guard refused what it had to (the summary of a burst follows within 10 s) ...
    assert wait_for(lambda: dropped()["too_fast"] >= 150, 15), dropped()
    assert dropped()["too_long"] == 4, dropped()
    log = worker.proc.log()[log_start:]
    # ... in summary lines, not one per message, and streams nobody handles do not flood the log.
    assert log.count("chat messages dropped") <= 10, log.count("chat messages dropped")
    assert log.count("ignoring text stream with topic") + log.count("ignoring byte stream with topic") <= 10
    assert "process exceeded memory limit" not in log and "unresponsive" not in log
