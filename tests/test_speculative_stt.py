"""Recognition starts inside the pause (agent/speculative_stt.py): the transcript is the whole
segment's, a run the caller talked over is dropped, and only the used result is judged."""

from __future__ import annotations

import asyncio
import time

from livekit import rtc
from livekit.agents import stt, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr

from agent.speculative_stt import SpeculativeSTT
from tests.fakes.turns import FRAME_S, EnergyVAD, _frame


class DurationSTT(stt.STT):
    """Hears how long the audio is (to the 10 ms), and notes when each run started."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.started: list[float] = []

    @property
    def model(self) -> str:
        return "duration"

    @property
    def provider(self) -> str:
        return "fake"

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> stt.SpeechEvent:
        self.started.append(time.monotonic())
        frame = utils.merge_frames(buffer)
        await asyncio.sleep(0.05)
        return stt.SpeechEvent(type=stt.SpeechEventType.FINAL_TRANSCRIPT, alternatives=[
            stt.SpeechData(language="en", text=f"{frame.samples_per_channel / frame.sample_rate:.2f}")])


def frames(script: list[tuple[str, float]]) -> list[rtc.AudioFrame]:
    return [_frame(kind == "speech") for kind, secs in script for _ in range(round(secs / FRAME_S))]


async def run(adapter: SpeculativeSTT, script: list[tuple[str, float]]) -> list[tuple[float, stt.SpeechEvent]]:
    stream = adapter.stream()
    events: list[tuple[float, stt.SpeechEvent]] = []

    async def read() -> None:
        async for ev in stream:
            events.append((time.monotonic(), ev))

    reader = asyncio.create_task(read())
    for f in frames(script):
        stream.push_frame(f)
        await asyncio.sleep(FRAME_S / 4)  # a quarter of real time: the order of events is what counts
    stream.end_input()
    await asyncio.wait_for(reader, 10)
    await stream.aclose()
    return events


def of(events: list[tuple[float, stt.SpeechEvent]], kind: stt.SpeechEventType) -> list[tuple[float, stt.SpeechEvent]]:
    return [(t, e) for t, e in events if e.type == kind]


async def test_recognition_starts_before_the_end_of_speech_and_is_used():
    inner = DurationSTT()
    adapter = SpeculativeSTT(stt=inner, vad=EnergyVAD(min_silence=0.25), start_after_s=0.1)
    events = await run(adapter, [("speech", 1.0), ("silence", 0.6)])
    assert len(of(events, stt.SpeechEventType.END_OF_SPEECH)) == 1
    (_, final), = of(events, stt.SpeechEventType.FINAL_TRANSCRIPT)
    # All of the speech and ~0.1 s of the pause: recognized before the VAD's segment (with
    # its 0.25 s of silence, 1.3 s) existed.
    assert 1.0 <= float(final.alternatives[0].text) < 1.2, final
    assert len(inner.started) == 1
    assert (adapter.used, adapter.dropped) == (1, 0)


async def test_recognition_starts_a_tenth_of_a_second_into_the_pause():
    # The VAD's events count the silent windows before their own: read as the pause's
    # length, the run would start a window late (0.16 s into the pause with 32 ms windows).
    inner = DurationSTT()
    adapter = SpeculativeSTT(stt=inner, vad=EnergyVAD(min_silence=0.25))
    events = await run(adapter, [("speech", 1.0), ("silence", 0.6)])
    (_, final), = of(events, stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert 1.08 <= float(final.alternatives[0].text) <= 1.10, final


async def test_a_run_the_caller_talks_over_is_dropped():
    inner = DurationSTT()
    adapter = SpeculativeSTT(stt=inner, vad=EnergyVAD(min_silence=0.25), start_after_s=0.1)
    # A 0.16 s gap: long enough to start a run, too short to end the speech.
    events = await run(adapter, [("speech", 1.0), ("silence", 0.16), ("speech", 0.6), ("silence", 0.6)])
    assert len(of(events, stt.SpeechEventType.END_OF_SPEECH)) == 1
    (_, final), = of(events, stt.SpeechEventType.FINAL_TRANSCRIPT)
    # Both parts (not the first run's 1.1 s), recognized early in the last pause (the VAD's segment is 2.0 s).
    assert 1.7 <= float(final.alternatives[0].text) < 1.95, final
    assert (adapter.used, adapter.dropped) == (1, 1)
    assert len(inner.started) == 2


async def test_only_the_used_result_is_judged():
    judged: list[str] = []

    def gate(ev: stt.SpeechEvent) -> stt.SpeechEvent:
        judged.append(ev.alternatives[0].text)
        return stt.SpeechEvent(type=ev.type, alternatives=[stt.SpeechData(language="en", text="")])

    adapter = SpeculativeSTT(stt=DurationSTT(), vad=EnergyVAD(min_silence=0.25), start_after_s=0.1, gate=gate)
    events = await run(adapter, [("speech", 0.6), ("silence", 0.16), ("speech", 0.4), ("silence", 0.6)])
    assert len(judged) == 1 and 1.1 <= float(judged[0]) < 1.3, judged
    assert not of(events, stt.SpeechEventType.FINAL_TRANSCRIPT)  # the gate emptied it: no transcript


async def test_words_so_far_are_handed_over_while_the_caller_talks():
    inner = DurationSTT()
    heard: list[str] = []
    adapter = SpeculativeSTT(stt=inner, vad=EnergyVAD(min_silence=0.25), on_partial=lambda d: heard.append(d.text),
                             partial_every_s=0.7)
    events = await run(adapter, [("speech", 4.0), ("silence", 0.6)])
    (_, final), = of(events, stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert 4.08 <= float(final.alternatives[0].text) <= 4.10, final  # the turn's transcript as before
    # Each run heard the speech so far (from ~0.7 s on), none the pause; the turn's own
    # recognition is the one transcript.
    said = [float(t) for t in heard]
    assert said and said == sorted(said) and 0.7 <= said[0] and said[-1] < 4.0, said
    assert adapter.partials == len(heard) and adapter.used == 1
    assert len(inner.started) > len(heard)


class PausedSTT(DurationSTT):
    """Finishes a run only once `ready()` holds (at most 5 s): a result that arrives late."""

    def __init__(self, ready) -> None:
        super().__init__()
        self.ready = ready

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> stt.SpeechEvent:
        deadline = time.monotonic() + 5
        self.started.append(time.monotonic())
        while not self.ready() and time.monotonic() < deadline:  # noqa: ASYNC110 (a plain attribute, no event to wait on)
            await asyncio.sleep(0.002)
        frame = utils.merge_frames(buffer)  # at once then: while the pause is still short of the VAD's end
        return stt.SpeechEvent(type=stt.SpeechEventType.FINAL_TRANSCRIPT, alternatives=[
            stt.SpeechData(language="en", text=f"{frame.samples_per_channel / frame.sample_rate:.2f}")])


async def test_words_so_far_are_not_handed_over_once_the_caller_pauses():
    heard: list[str] = []
    adapter: SpeculativeSTT | None = None
    # Every run ends only once the caller has paused: the words-so-far run started during the
    # speech then describes a turn whose own recognition is already running.
    inner = PausedSTT(lambda: adapter is not None and adapter.pausing)
    adapter = SpeculativeSTT(stt=inner, vad=EnergyVAD(min_silence=0.25), on_partial=lambda d: heard.append(d.text),
                             partial_every_s=0.5)
    events = await run(adapter, [("speech", 1.2), ("silence", 0.6)])
    assert len(of(events, stt.SpeechEventType.FINAL_TRANSCRIPT)) == 1
    assert len(inner.started) >= 2  # a words-so-far run did start
    assert heard == [] and adapter.partials == 0


async def test_no_words_so_far_run_when_nobody_wants_them():
    # E.g. the caller talks over the agent: its voice needs the cores, and no prefill would run.
    inner = DurationSTT()
    heard: list[str] = []
    adapter = SpeculativeSTT(stt=inner, vad=EnergyVAD(min_silence=0.25), on_partial=lambda d: heard.append(d.text),
                             partial_every_s=0.5, partial_wanted=lambda: False)
    events = await run(adapter, [("speech", 2.0), ("silence", 0.6)])
    assert len(of(events, stt.SpeechEventType.FINAL_TRANSCRIPT)) == 1
    assert heard == [] and len(inner.started) == 1
