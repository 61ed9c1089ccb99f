"""Play one scenario as one call and measure every turn, whatever carries the audio.

The turn logic is the same for both transports: a `Line` plays audio (and says when each
clip started and ended) and a `call.CallState` collects what the agent did (audio loudness
with arrival times, its state attribute, both sides' transcripts). WebRTC uses parley-call's
own room and microphone (`harness.call.open_call`); SIP uses `harness.eval.phone`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.audio import resample

from ..audio import Clip
from ..call import (
    RATE,
    CallError,
    CallOptions,
    CallState,
    _quiet_since,
    _reply_done,
    _segments_final,
    _wait,
    await_greeting,
    open_call,
)
from .scenario import Scenario
from .synth import Rendered

# How long to listen for a reply that should not come (no_reply), or that may come after an
# interruption; a positive wait that ends early when the agent speaks.
NO_REPLY_WINDOW_S = 5.0
# Quiet this long after the caller cut in = the agent stopped.
STOP_QUIET_S = 0.5
# The agent counts as interrupted when it went quiet within this long of the caller starting.
INTERRUPT_LIMIT_MS = 1500.0


class Line(Protocol):
    def play(self, clip: Clip) -> tuple[asyncio.Future[float], asyncio.Future[float]]:
        """Queue a clip: futures of its first and its end instant (time.perf_counter)."""
        ...


@dataclass
class Connected:
    state: CallState
    line: Line
    joined_at: float
    room: str


@dataclass
class RunOptions:
    url: str
    api_key: str
    api_secret: str
    agent: str
    transport: str = "webrtc"
    timeout: float = 30.0
    sip_address: str = "127.0.0.1:5060"
    sip_number: str = "+15550100"


@dataclass
class CallResult:
    scenario: Scenario
    call: int
    room: str
    transport: str
    concurrency: int
    repeat: int
    records: list[dict[str, Any]] = field(default_factory=list)
    greeting_ms: float | None = None
    greeting_text: str = ""
    error: str | None = None
    started: float = 0.0  # time.time()
    ended: float = 0.0


class WebRtcLine:
    def __init__(self, mic: Any) -> None:
        self.mic = mic

    def play(self, clip: Clip) -> tuple[asyncio.Future[float], asyncio.Future[float]]:
        started, _ = self.mic.play(resample(clip.pcm, clip.sample_rate, RATE))
        return started, self.mic.done


@contextlib.asynccontextmanager
async def connect_webrtc(opts: RunOptions, room: str) -> AsyncIterator[Connected]:
    copts = CallOptions(url=opts.url, api_key=opts.api_key, api_secret=opts.api_secret, agent=opts.agent,
                        room=room, clips=[], timeout=opts.timeout, json=True,
                        identity=f"eval-{secrets.token_hex(3)}")
    async with open_call(copts) as live:
        yield Connected(state=live.state, line=WebRtcLine(live.mic), joined_at=live.joined_at, room=room)


class ActiveCalls:
    """How many calls are in progress right now (the x axis of the capacity curve)."""

    def __init__(self) -> None:
        self.n = 0


async def play_scenario(scenario: Scenario, rendered: list[Rendered], opts: RunOptions, result: CallResult,
                        active: ActiveCalls, on_record: Callable[[dict[str, Any]], None]) -> None:
    """Place the call and play every turn; records go to result.records (and on_record) in order.
    A call that fails part-way still yields one record per turn (the unplayed ones failed)."""
    result.started = time.time()
    active.n += 1
    try:
        if opts.transport == "sip":
            from .phone import connect_sip

            connection = connect_sip(opts, result)
        else:
            connection = connect_webrtc(opts, result.room)
        async with connection as conn:
            result.room = conn.room
            g = await await_greeting(conn.state, conn.joined_at, opts.timeout)
            result.greeting_ms, result.greeting_text = g["latency_ms"], g["agent_text"]
            await _turns(conn, rendered, opts, result, active, on_record)
    except CallError as e:
        result.error = str(e)
    except Exception as e:  # a transport failure must not take the other calls down
        result.error = f"{e.__class__.__name__}: {e}"
    finally:
        active.n -= 1
        result.ended = time.time()
    done = {r["turn"] for r in result.records}
    for r in rendered:
        if r.turn.index not in done:
            rec = _blank(result, r)
            rec["error"] = f"call failed: {result.error or 'ended early'}"
            result.records.append(rec)
            on_record(rec)


def _blank(result: CallResult, r: Rendered) -> dict[str, Any]:
    return {
        "event": "turn", "scenario": result.scenario.name, "call": result.call, "turn": r.turn.index,
        "room": result.room, "transport": result.transport, "concurrency": result.concurrency,
        "repeat": result.repeat, "audio": str(r.clip.path), "reference": r.turn.reference,
        "user_transcript": "", "agent_text": "", "turn_latency_ms": None, "agent_audio_s": 0.0,
        "replied": False, "passed": None, "reasons": [],
    }


async def _turns(conn: Connected, rendered: list[Rendered], opts: RunOptions, result: CallResult,
                 active: ActiveCalls, on_record: Callable[[dict[str, Any]], None]) -> None:
    state = conn.state
    pending: dict[str, Any] | None = None  # the previous reply, still playing when this turn cuts in

    def finish(rec: dict[str, Any]) -> None:
        result.records.append(rec)
        on_record(rec)

    for i, r in enumerate(rendered):
        turn = r.turn
        limit = turn.timeout_s or opts.timeout
        rec = _blank(result, r)
        next_barges = i + 1 < len(rendered) and rendered[i + 1].turn.barge_in_after_ms is not None
        if turn.barge_in_after_ms is not None and pending is not None:
            # Start this many ms after the previous reply's first audio (it is still playing).
            target = pending["first"] + turn.barge_in_after_ms / 1000
            await asyncio.sleep(max(0.0, target - time.perf_counter()))
        # (numpy scalars from the audio helpers would leak into the JSON and its comparisons)
        bounds = tuple(float(x) for x in b) if (b := r.clip.speech_bounds_s()) else None
        started, ended = conn.line.play(r.clip)
        t_start = await started
        speech_start = t_start + bounds[0] if bounds else None
        speech_end = t_start + bounds[1] if bounds else None
        rec["active_calls"] = active.n
        if turn.barge_in_after_ms is not None and pending is None:
            rec["agent_was_speaking"] = False  # the previous turn got no reply to cut into
        if pending is not None:
            prev = pending["rec"]
            cut_in = speech_start if speech_start is not None else t_start
            # Was the agent still talking when the caller started? (audio in the 300 ms before;
            # the clip's lead-in silence is still playing, so wait for that instant first)
            await asyncio.sleep(max(0.0, cut_in - time.perf_counter()))
            rec["agent_was_speaking"] = bool(state.speech_between(cut_in - 0.3, cut_in))
            await _wait(state, lambda: _quiet_since(state, cut_in, STOP_QUIET_S), limit)
            stop_at = max((t for t in state.speech_between(cut_in, time.perf_counter())), default=cut_in)
            rec["barge_in_stop_ms"] = round((stop_at - cut_in) * 1000, 1)
            rec["interrupted"] = bool(rec["agent_was_speaking"] and rec["barge_in_stop_ms"] <= INTERRUPT_LIMIT_MS)
            spoken = state.speech_between(pending["first"], cut_in)
            prev["agent_audio_s"] = round(spoken[-1] - pending["first"] + 0.01, 2) if spoken else 0.0
            prev["interrupted"] = rec["interrupted"]
            await _wait(state, lambda: _segments_final(state, pending["since"]), 2.0)
            prev["agent_text"] = state.text_since(pending["since"], agent=True, until=t_start)
            prev["user_transcript"] = state.text_since(pending["since"], agent=False, until=t_start)
            finish(prev)
            pending = None
        t_end = await ended
        reference = speech_end if speech_end is not None else t_end
        if r.pause_s is not None and speech_end is not None:
            pause_start = t_start + r.pause_s[0]
            during = state.speech_between(pause_start, speech_end)
            rec["spoke_during_pause_ms"] = round((during[0] - pause_start) * 1000, 1) if during else None
        wants_reply = not turn.expect.no_reply and not (
            turn.expect.interrupted and not (turn.expect.any or turn.expect.all or turn.judge))
        if turn.expect.no_reply:
            window = min(limit, NO_REPLY_WINDOW_S)
            heard = await _wait(state, lambda: state.first_speech_after(t_start) is not None,
                                (t_end - time.perf_counter()) + window)
            rec["replied"] = heard
            if heard:
                await _wait(state, lambda: _reply_done(state, t_start), limit)
                rec["agent_text"] = state.text_since(t_start, agent=True)
            rec["user_transcript"] = state.text_since(t_start, agent=False)
            finish(rec)
            continue
        got = await _wait(state, lambda: state.first_speech_after(reference) is not None,
                          limit if wants_reply else NO_REPLY_WINDOW_S)
        rec["replied"] = got
        if got:
            first = state.first_speech_after(reference)
            assert first is not None
            rec["turn_latency_ms"] = round((first - reference) * 1000, 1) if speech_end is not None else None
            if next_barges:
                rec["user_transcript"] = state.text_since(t_start, agent=False)
                pending = {"rec": rec, "since": t_start, "first": first}
                continue
            await _wait(state, lambda: _reply_done(state, reference), limit)
            await _wait(state, lambda: _segments_final(state, t_start), 2.0)
            spoken = state.speech_between(first, time.perf_counter())
            rec["agent_audio_s"] = round(spoken[-1] - first + 0.01, 2) if spoken else 0.0
            rec["agent_text"] = state.text_since(t_start, agent=True)
        rec["user_transcript"] = state.text_since(t_start, agent=False)
        finish(rec)
    if pending is not None:  # the next turn never came (cannot happen: barge-in needs a next turn)
        finish(pending["rec"])
