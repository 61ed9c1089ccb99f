"""`parley-call`: a simulated caller, a real LiveKit participant.

Creates a room, dispatches the agent by name, joins, waits for the greeting,
then plays each WAV file as microphone audio in real time and waits for the
agent's reply. Transcripts come from the room's `lk.transcription` streams;
latencies are measured on the audio this participant actually receives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
from livekit import api, rtc

from agent.audio import resample
from agent.metrics import LISTENER_TOPIC, TURN_TOPIC

from .audio import AudioFileError, Clip, read_wav, rms
from .settings import HarnessSettings as Settings
from .settings import SettingsError

RATE = 48000
FRAME = RATE // 100  # 10 ms
# Agent audio above this RMS counts as speech (int16 units, about -36 dBFS).
AGENT_SPEECH_RMS = 500.0
# The agent's reply is over once it is listening again and its audio has been quiet this long.
REPLY_QUIET_S = 0.6
BARGE_IN_DEFAULT_DELAY_S = 1.0

log = logging.getLogger("parley.call")


class CallError(RuntimeError):
    """The call could not be completed (message is a one-line reason)."""


@dataclass
class Segment:
    sender: str
    started: float
    text: str = ""
    final: bool = False


@dataclass
class CallState:
    me: str
    agent_identity: str | None = None
    agent_state: str = ""
    agent_joined: asyncio.Event = field(default_factory=asyncio.Event)
    # (receive time, rms) of every agent audio frame above the speech threshold
    agent_speech: list[tuple[float, float]] = field(default_factory=list)
    last_frame_at: float = 0.0
    segments: dict[str, Segment] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    streams: list[rtc.AudioStream] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # set by attach_observers: registers a participant already in the room when we joined
    on_participant: Callable[[rtc.RemoteParticipant], None] = lambda _p: None

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """Stop reading native streams before the room goes, so nothing reads a freed handle."""
        for stream in self.streams:
            await stream.aclose()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def poke(self) -> None:
        self.changed.set()

    def first_speech_after(self, t: float) -> float | None:
        return next((ts for ts, _ in self.agent_speech if ts >= t), None)

    def last_speech(self) -> float | None:
        return self.agent_speech[-1][0] if self.agent_speech else None

    def speech_between(self, t0: float, t1: float) -> list[float]:
        return [ts for ts, _ in self.agent_speech if t0 <= ts <= t1]

    def text_since(self, t: float, *, agent: bool, until: float = float("inf")) -> str:
        parts = [
            s.text.strip()
            for s in sorted(self.segments.values(), key=lambda s: s.started)
            if t <= s.started < until and (s.sender != self.me) == agent and s.text.strip()
        ]
        return " ".join(parts)


class Microphone:
    """Publishes a continuous 48 kHz mono track: silence, or a clip paced in real time."""

    def __init__(self) -> None:
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
        self._queue: asyncio.Queue[tuple[np.ndarray, Callable[[int, float], None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def play(self, pcm: np.ndarray) -> tuple[asyncio.Future[float], Callable[[int], float | None]]:
        """Queue a clip; returns (future of its start time, fn sample index -> wall time)."""
        loop = asyncio.get_running_loop()
        started: asyncio.Future[float] = loop.create_future()
        done: asyncio.Future[float] = loop.create_future()
        marks: dict[str, float] = {}

        def on_progress(i: int, t: float) -> None:
            if i == 0 and not started.done():
                marks["start"] = t
                started.set_result(t)
            if i < 0 and not done.done():
                done.set_result(t)

        self._queue.put_nowait((pcm, on_progress))

        def at(sample: int) -> float | None:
            return marks["start"] + sample / RATE if "start" in marks else None

        self.done = done
        return started, at

    async def _pump(self) -> None:
        silence = rtc.AudioFrame(bytes(FRAME * 2), RATE, 1, FRAME)
        next_t = time.perf_counter()
        while True:
            if self._queue.empty():
                await self._send(silence, next_t)
                next_t += 0.01
                continue
            pcm, on_progress = self._queue.get_nowait()
            n = len(pcm) // FRAME
            for i in range(n):
                chunk = pcm[i * FRAME : (i + 1) * FRAME]
                await self._send(rtc.AudioFrame(chunk.tobytes(), RATE, 1, FRAME), next_t)
                on_progress(i * FRAME, next_t)
                next_t += 0.01
            on_progress(-1, next_t)

    async def _send(self, frame: rtc.AudioFrame, at: float) -> None:
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.source.capture_frame(frame)


def _http_url(url: str) -> str:
    return url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)


async def _watch_agent_audio(track: rtc.Track, state: CallState) -> None:
    stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
    state.streams.append(stream)
    async for ev in stream:
        now = time.perf_counter()
        state.last_frame_at = now
        level = rms(np.frombuffer(ev.frame.data, dtype=np.int16))
        if level > AGENT_SPEECH_RMS:
            state.agent_speech.append((now, level))
            state.poke()


async def _wait(state: CallState, pred: Callable[[], bool], limit: float) -> bool:
    """Wait until pred() holds (re-checked on every state change); False after `limit` s."""
    deadline = time.perf_counter() + limit
    while not pred():
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return False
        state.changed.clear()
        try:
            await asyncio.wait_for(state.changed.wait(), timeout=min(remaining, 0.1))
        except TimeoutError:
            pass
    return True


def _reply_done(state: CallState, since: float) -> bool:
    last = state.last_speech()
    return (
        last is not None
        and last >= since
        and state.agent_state not in ("thinking", "speaking")
        and time.perf_counter() - last >= REPLY_QUIET_S
    )


@dataclass
class CallOptions:
    url: str
    api_key: str
    api_secret: str
    agent: str
    room: str
    clips: list[Clip]
    timeout: float
    json: bool
    barge_in: bool = False
    barge_in_delay: float = BARGE_IN_DEFAULT_DELAY_S
    identity: str = ""


def attach_observers(room: rtc.Room, state: CallState, *, agent_audio: bool = True) -> None:
    """Follow the agent in `room`: its state attribute, its transcription streams (both
    sides of the conversation) and, when `agent_audio`, the loudness of its audio track."""

    def on_track(track: rtc.Track, _pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if (agent_audio and track.kind == rtc.TrackKind.KIND_AUDIO
                and p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT):
            state.spawn(_watch_agent_audio(track, state))

    def on_participant(p: rtc.RemoteParticipant) -> None:
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and state.agent_identity is None:
            state.agent_identity = p.identity
            state.agent_state = p.attributes.get("lk.agent.state", "")
            state.agent_joined.set()
            state.poke()

    def on_attrs(changed: dict[str, str], p: rtc.Participant) -> None:
        if p.identity == state.agent_identity and "lk.agent.state" in changed:
            state.agent_state = changed["lk.agent.state"]
            state.poke()

    def on_text(reader: rtc.TextStreamReader, sender: str) -> None:
        async def read() -> None:
            attrs = reader.info.attributes or {}
            seg_id = attrs.get("lk.segment_id") or reader.info.stream_id
            seg = state.segments.setdefault(seg_id, Segment(sender=sender, started=time.perf_counter()))
            # Agent segments arrive as one growing stream (read as it grows: an interrupted
            # reply's stream stays open until the agent has settled the interruption);
            # user segments as whole texts.
            text = ""
            async for chunk in reader:
                text += chunk
                seg.text = text
                state.poke()
            seg.final = attrs.get("lk.transcription_final") == "true" or sender != state.me
            state.poke()

        state.spawn(read())

    room.on("track_subscribed", on_track)
    room.on("participant_connected", on_participant)
    room.on("participant_attributes_changed", on_attrs)
    room.register_text_stream_handler("lk.transcription", on_text)
    state.on_participant = on_participant


@dataclass
class LiveCall:
    """A caller in a room with the agent dispatched to it: what `open_call` yields."""

    state: CallState
    mic: Microphone
    room: rtc.Room
    joined_at: float


def _api_error(e: BaseException, opts: CallOptions) -> CallError:
    if isinstance(e, api.TwirpError):
        if e.status in (401, 403):
            return CallError("LiveKit rejected the API key/secret" + (f" ({e.message})" if e.message else ""))
        return CallError(f"LiveKit API error {e.status}: {e.message}")
    if isinstance(e, TimeoutError):
        return CallError(f"LiveKit server at {opts.url} did not answer within {opts.timeout:.0f}s")
    return CallError(f"cannot reach LiveKit server at {opts.url}: {e.__class__.__name__}: {e}")


@contextlib.asynccontextmanager
async def open_call(opts: CallOptions) -> AsyncIterator[LiveCall]:
    """Create the room, dispatch the agent, join with a live microphone and wait until the
    agent is there. Everything is torn down on exit (also on errors and cancellation)."""
    identity = opts.identity or f"caller-{secrets.token_hex(3)}"
    state = CallState(me=identity)
    lkapi = api.LiveKitAPI(_http_url(opts.url), opts.api_key, opts.api_secret)
    room = rtc.Room()
    mic = Microphone()
    try:
        try:
            await asyncio.wait_for(
                lkapi.room.create_room(api.CreateRoomRequest(name=opts.room, empty_timeout=30)),
                timeout=opts.timeout,
            )
            await asyncio.wait_for(
                lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=opts.agent, room=opts.room)
                ),
                timeout=opts.timeout,
            )
        except Exception as e:  # Twirp errors, timeouts, aiohttp connection errors and friends
            raise _api_error(e, opts) from None

        token = (
            api.AccessToken(opts.api_key, opts.api_secret)
            .with_identity(identity)
            .with_name("parley-call")
            .with_grants(api.VideoGrants(room_join=True, room=opts.room))
            .to_jwt()
        )
        attach_observers(room, state)

        joined_at = time.perf_counter()
        try:
            await asyncio.wait_for(room.connect(opts.url, token), timeout=opts.timeout)
        except (TimeoutError, rtc.ConnectError) as e:
            raise CallError(f"cannot join room {opts.room} at {opts.url}: {e or 'timed out'}") from None
        for p in room.remote_participants.values():
            state.on_participant(p)

        track = rtc.LocalAudioTrack.create_audio_track("microphone", mic.source)
        await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        mic.start()

        try:
            await asyncio.wait_for(state.agent_joined.wait(), timeout=opts.timeout)
        except TimeoutError:
            raise CallError(
                f"agent '{opts.agent}' was not dispatched within {opts.timeout:.0f}s "
                "(is a worker running with that agent name?)"
            ) from None
        yield LiveCall(state=state, mic=mic, room=room, joined_at=joined_at)
    finally:
        await mic.stop()
        await state.close()
        await room.disconnect()
        await mic.source.aclose()
        await lkapi.aclose()


async def await_greeting(state: CallState, joined_at: float, limit: float) -> dict[str, Any]:
    """Wait for the agent's first words after `joined_at` and for them to end; the greeting event."""
    if await _wait(state, lambda: state.first_speech_after(joined_at) is not None, limit):
        first = state.first_speech_after(joined_at)
        assert first is not None
        await _wait(state, lambda: _reply_done(state, joined_at), limit)
        await _wait(state, lambda: _segments_final(state, joined_at), 2.0)
        return {
            "event": "greeting",
            "agent_text": state.text_since(joined_at, agent=True),
            "latency_ms": round((first - joined_at) * 1000, 1),
        }
    return {"event": "greeting", "agent_text": "", "latency_ms": None}


def listen_for_stages(room: rtc.Room, state: CallState) -> dict[int, dict[str, Any]]:
    """The agent's per-turn stages (TURN_TOPIC), by the turn number we sent with our figure."""
    stages: dict[int, dict[str, Any]] = {}

    def on_turn(reader: rtc.TextStreamReader, _sender: str) -> None:
        async def read() -> None:
            try:
                msg = json.loads(await reader.read_all())
                stages[int(msg.get("seq", -1))] = msg
            except (ValueError, TypeError):
                return
            state.poke()

        state.spawn(read())

    room.register_text_stream_handler(TURN_TOPIC, on_turn)
    return stages


async def send_listener_latency(room: rtc.Room, state: CallState, seq: int, ms: float) -> None:
    """Tell the agent what this caller heard: end of our speech → its audio audible here
    (stored in the session report as turns[].listener_latency_ms)."""
    if state.agent_identity is None:
        return
    try:
        await room.local_participant.send_text(
            json.dumps({"seq": seq, "listener_latency_ms": ms}), topic=LISTENER_TOPIC,
            destination_identities=[state.agent_identity])
    except Exception as e:  # the agent left: the figure is only lost for its report
        log.info("listener latency not sent: %s", e)


async def run_call(opts: CallOptions, emit: Callable[[dict[str, Any]], None]) -> None:
    async with open_call(opts) as live:
        state, mic = live.state, live.mic
        stages = listen_for_stages(live.room, state)
        emit(await await_greeting(state, live.joined_at, opts.timeout))

        pending: dict[str, Any] | None = None  # a reply being interrupted (barge-in mode)
        for idx, clip in enumerate(opts.clips):
            pcm = resample(clip.pcm, clip.sample_rate, RATE)
            bounds = clip.speech_bounds_s()
            started_fut, at = mic.play(pcm)
            t_start = await started_fut
            speech_start = t_start + bounds[0] if bounds else None
            speech_end = t_start + bounds[1] if bounds else None
            if pending is not None:
                # Barge-in: how long the agent kept talking after the caller started.
                assert speech_start is not None
                await _wait(state, lambda: _quiet_since(state, speech_start, 0.8), opts.timeout)
                last = state.speech_between(pending["reply_started"], time.perf_counter())
                stop_at = max((t for t in last if t >= speech_start), default=speech_start)
                pending["record"]["barge_in_stop_ms"] = round((stop_at - speech_start) * 1000, 1)
                pending["record"]["agent_text"] = state.text_since(pending["since"], agent=True, until=t_start)
                pending["record"]["interrupted"] = True
                emit(pending["record"])
                pending = None
            await mic.done
            reference = speech_end if speech_end is not None else t_start
            got_reply = await _wait(state, lambda: state.first_speech_after(reference) is not None, opts.timeout)
            record: dict[str, Any] = {
                "event": "turn",
                "audio": str(clip.path),
                "user_transcript": "",
                "agent_text": "",
                "turn_latency_ms": None,
                "agent_audio_s": 0.0,
            }
            if got_reply:
                first = state.first_speech_after(reference)
                assert first is not None
                record["turn_latency_ms"] = round((first - reference) * 1000, 1) if speech_end else None
                if record["turn_latency_ms"] is not None:
                    await send_listener_latency(live.room, state, idx, record["turn_latency_ms"])
                is_last = idx == len(opts.clips) - 1
                if opts.barge_in and not is_last:
                    await _wait(state, lambda: (state.last_speech() or 0) - first >= opts.barge_in_delay, opts.timeout)
                    record["user_transcript"] = state.text_since(t_start, agent=False)
                    pending = {"record": record, "since": t_start, "reply_started": first}
                    record["agent_audio_s"] = None
                    continue
                await _wait(state, lambda: _reply_done(state, reference), opts.timeout)
                await _wait(state, lambda: _segments_final(state, t_start), 2.0)
                spoken = state.speech_between(first, time.perf_counter())
                record["agent_audio_s"] = round(spoken[-1] - first + 0.01, 2) if spoken else 0.0
                # Since the file started: a preemptive reply opens its text stream before speech ends.
                record["agent_text"] = state.text_since(t_start, agent=True)
                # The agent sends its stages when the reply has played out, about now.
                if record["turn_latency_ms"] is not None and await _wait(state, lambda: idx in stages, 2.0):
                    record["agent_stages_ms"] = stages[idx]["stages"]
                    record["agent_e2e_ms"] = stages[idx].get("e2e_ms")
            record["user_transcript"] = state.text_since(t_start, agent=False)
            emit(record)


def _segments_final(state: CallState, since: float) -> bool:
    return all(s.final for s in state.segments.values() if s.started >= since)


def _quiet_since(state: CallState, t: float, quiet_s: float) -> bool:
    last = state.last_speech() or 0.0
    now = time.perf_counter()
    return now - max(last, t) >= quiet_s


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="parley-call",
        description="Place a test call to a Parley agent through a LiveKit server.",
    )
    p.add_argument("--url", help="LiveKit server URL (default: LIVEKIT_URL)")
    p.add_argument("--api-key", help="LiveKit API key (default: LIVEKIT_API_KEY)")
    p.add_argument("--api-secret", help="LiveKit API secret (default: LIVEKIT_API_SECRET)")
    p.add_argument("--agent", help="agent name to dispatch (default: PARLEY_AGENT_NAME or 'parley')")
    p.add_argument("--room", help="room name (default: random)")
    p.add_argument("--identity", help="caller identity (default: random)")
    p.add_argument("--audio", action="append", required=True, metavar="FILE",
                   help="WAV file to speak (16-bit PCM at any rate, or G.711 µ-law); repeatable")
    p.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS",
                   help="how long to wait for the agent to join or to answer (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object per event")
    p.add_argument("--barge-in", action="store_true",
                   help="play each next file while the agent is still answering the previous one")
    p.add_argument("--barge-in-delay", type=float, default=BARGE_IN_DEFAULT_DELAY_S, metavar="SECONDS",
                   help="agent speech to let through before barging in (default 1.0)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> NoReturn:
    """The `parley-call` entry point: runs the call, then leaves without interpreter teardown.

    At interpreter exit the livekit rtc FFI drops its remaining handles from a tokio
    worker, which can panic ("panic in a function that cannot unwind") and abort with
    SIGABRT after the call had succeeded: a caller script would see -6 instead of our
    code. Everything worth keeping is printed and flushed by then, so exit directly."""
    rc = _run_main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def _run_main(argv: list[str] | None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.load()
        clips = [read_wav(f) for f in args.audio]
    except (AudioFileError, SettingsError) as e:
        print(f"parley-call: {e}", file=sys.stderr)
        return 2
    if args.timeout <= 0:
        print("parley-call: --timeout must be positive", file=sys.stderr)
        return 2
    opts = CallOptions(
        url=args.url or settings.livekit_url,
        api_key=args.api_key or settings.livekit_api_key,
        api_secret=args.api_secret or settings.secret,
        agent=args.agent or settings.agent_name,
        room=args.room or f"parley-call-{secrets.token_hex(4)}",
        clips=clips,
        timeout=args.timeout,
        json=args.json,
        barge_in=args.barge_in,
        barge_in_delay=args.barge_in_delay,
        identity=args.identity or "",
    )

    def emit(event: dict[str, Any]) -> None:
        if opts.json:
            print(json.dumps(event), flush=True)
        elif event["event"] == "greeting":
            print(f"greeting ({event['latency_ms']} ms): {event['agent_text']}", flush=True)
        else:
            latency = event["turn_latency_ms"]
            print(f"you: {event['user_transcript']!r}", flush=True)
            print(f"agent ({'no answer' if latency is None else f'{latency} ms'}): {event['agent_text']}",
                  flush=True)

    try:
        asyncio.run(run_call(opts, emit))
    except CallError as e:
        print(f"parley-call: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("parley-call: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
