"""Fakes for driving a session with audio in-process: a scripted microphone (tone for
speech, zeros for silence, paced in real time) and an energy VAD that reports speech
the way the framework's VAD streams do (start, per-frame inference, end with the
segment's frames). With `FakeSTT` transcripts, the framework's own audio recognition,
endpointing and turn detection run unchanged, with no model."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from livekit import rtc
from livekit.agents import vad
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities

RATE = 16000
FRAME_S = 0.02


def _frame(speech: bool) -> rtc.AudioFrame:
    n = int(RATE * FRAME_S)
    pcm = (np.sin(2 * np.pi * 300 * np.arange(n) / RATE) * 6000).astype(np.int16) if speech else np.zeros(n, np.int16)
    return rtc.AudioFrame(pcm.tobytes(), RATE, 1, n)


class ScriptedMic(AudioInput):
    """Plays [("speech" | "silence", seconds), ...], then silence for ever, in real time."""

    def __init__(self, script: list[tuple[str, float]]) -> None:
        super().__init__(label="scripted-mic")
        self._frames = [kind == "speech" for kind, secs in script for _ in range(round(secs / FRAME_S))]
        self._i = 0
        self._t0: float | None = None
        self.done = asyncio.Event()

    async def __anext__(self) -> rtc.AudioFrame:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        due = self._t0 + self._i * FRAME_S
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        speech = self._frames[self._i] if self._i < len(self._frames) else False
        self._i += 1
        if self._i == len(self._frames):
            self.done.set()
        return _frame(speech)


class EnergyVAD(vad.VAD):
    def __init__(self, min_speech: float = 0.06, min_silence: float = 0.25) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=FRAME_S))
        self.min_speech, self.min_silence = min_speech, min_silence

    @property
    def model(self) -> str:
        return "energy-vad"

    @property
    def provider(self) -> str:
        return "fake"

    def stream(self) -> vad.VADStream:
        return _EnergyStream(self)


class _EnergyStream(vad.VADStream):
    async def _main_task(self) -> None:
        opts: EnergyVAD = self._vad  # type: ignore[assignment]
        speaking = False
        raw_speech = raw_silence = speech_dur = 0.0
        seg: list[rtc.AudioFrame] = []
        samples = 0
        async for f in self._input_ch:
            if not isinstance(f, rtc.AudioFrame):
                continue
            pcm = np.frombuffer(f.data, dtype=np.int16)
            samples += len(pcm)
            loud = float(np.sqrt(np.mean(pcm.astype(np.float32) ** 2))) > 500
            dt = len(pcm) / f.sample_rate
            # livekit's VAD reports the raw run lengths of the windows before this one
            before_speech, before_silence = raw_speech, raw_silence
            raw_speech, raw_silence = (raw_speech + dt, 0.0) if loud else (0.0, raw_silence + dt)
            if speaking:
                seg.append(f)
                speech_dur += dt
            elif loud:
                seg.append(f)  # onset frames belong to the segment
            else:
                seg.clear()

            def ev(kind: vad.VADEventType, **kw: object) -> vad.VADEvent:
                return vad.VADEvent(type=kind, samples_index=samples, timestamp=time.time(),
                                    speech_duration=speech_dur, silence_duration=raw_silence, **kw)  # type: ignore[arg-type]

            # As livekit's VAD: a window's INFERENCE_DONE comes before the START_OF_SPEECH it
            # causes, whose frames are the segment so far.
            self._event_ch.send_nowait(ev(vad.VADEventType.INFERENCE_DONE, speaking=speaking,
                                          probability=1.0 if loud else 0.0, frames=[f],
                                          raw_accumulated_speech=before_speech,
                                          raw_accumulated_silence=before_silence))
            if not speaking and raw_speech >= opts.min_speech:
                speaking, speech_dur = True, raw_speech
                self._event_ch.send_nowait(ev(vad.VADEventType.START_OF_SPEECH, speaking=True, frames=list(seg)))
            if speaking and raw_silence >= opts.min_silence:
                speaking = False
                self._event_ch.send_nowait(ev(vad.VADEventType.END_OF_SPEECH, speaking=False, frames=list(seg)))
                seg.clear()
                speech_dur = 0.0


class Playout(AudioOutput):
    """An audio sink that plays in real time, can pause, and records when it played
    (what a caller would have heard)."""

    def __init__(self) -> None:
        super().__init__(label="fake-playout", capabilities=AudioOutputCapabilities(pause=True))
        self._queue: list[rtc.AudioFrame] = []
        self._paused = False
        self._segment = False  # a segment is being captured or played
        self._flushed = False
        self._played = 0.0
        self._started = False
        self.played_at: list[float] = []  # wall time of every frame played
        self._task: asyncio.Task[None] | None = None

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if not self._segment:
            self._segment, self._flushed, self._played, self._started = True, False, 0.0, False
        self._queue.append(frame)
        if self._task is None:
            self._task = asyncio.create_task(self._play())

    def flush(self) -> None:
        super().flush()
        self._flushed = True

    def clear_buffer(self) -> None:
        self._queue.clear()
        if self._segment:
            self._segment = False
            self.on_playback_finished(playback_position=self._played, interrupted=True)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    async def _play(self) -> None:
        while True:
            if self._paused or not self._queue:
                if self._segment and self._flushed and not self._queue and not self._paused:
                    self._segment = False
                    self.on_playback_finished(playback_position=self._played, interrupted=False)
                await asyncio.sleep(0.01)
                continue
            frame = self._queue.pop(0)
            if not self._started:
                self._started = True
                self.on_playback_started(created_at=time.time())
            self.played_at.append(time.time())
            await asyncio.sleep(frame.duration)
            self._played += frame.duration

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
