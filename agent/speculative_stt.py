"""Recognition that starts inside the pause, before the VAD has called the end of speech.

A non-streaming STT (Whisper) behind the framework's `stt.StreamAdapter` runs when the VAD
emits END_OF_SPEECH, that is `min_silence_duration` (0.25 s) after the caller stopped, so
the caller waits for the silence *and then* for Whisper (~0.15-0.3 s on 2 cores).

`SpeculativeSTT` is that adapter with one change: once the pause has lasted `start_after_s`
(three of the VAD's 32 ms windows, ~0.1 s) it already recognizes the speech so far. If the
caller goes on talking, that result is dropped (and a later pause starts another); if the
VAD then ends the speech, the result is the segment's transcript, ready or nearly so. The
audio it heard differs from the VAD's segment only by the last ~0.15 s of silence. Wasted
runs cost CPU while the caller speaks, when the agent has little else to do.

`gate` decides on the final result only (`BackchannelFilter.judge`): a dropped speculative
run never resumes or interrupts the agent.

`on_partial` (optional) hears the words so far while the caller is still talking: every
`partial_every_s` of speech the segment so far is recognized, and the result handed over if the
caller has not paused meanwhile. The local LLM uses it to evaluate the history and those words
before the turn ends (`LlamaLLM.prefill_partial`), so the turn's first token waits only for
the words that came after. These are not interim transcripts for the framework: they never
reach the history, the turn detector or barge-in. `pausing` tells such work to yield the cores
to the recognition that ends the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import AsyncIterable, Callable

from livekit import rtc
from livekit.agents import stt, utils, vad
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr

logger = logging.getLogger("parley.stt")

# True inside a words-so-far run (`on_partial`): an STT may spend less on it (WhisperSTT decodes
# it once where a turn's own recognition may take two passes), as only the LLM's prefill sees it.
WORDS_SO_FAR: contextvars.ContextVar[bool] = contextvars.ContextVar("words_so_far", default=False)

# The wrapped STT retries on its own; the stream does not (as the framework's adapter).
_STREAM_CONN_OPTIONS = APIConnectOptions(max_retry=0, timeout=DEFAULT_API_CONNECT_OPTIONS.timeout)


class SpeculativeSTT(stt.StreamAdapter):
    def __init__(self, *, stt: stt.STT, vad: vad.VAD, start_after_s: float = 0.09,
                 gate: Callable[[stt.SpeechEvent], stt.SpeechEvent] = lambda ev: ev,
                 on_partial: Callable[[stt.SpeechData], None] | None = None, partial_every_s: float = 0.5,
                 partial_wanted: Callable[[], bool] = lambda: True) -> None:
        super().__init__(stt=stt, vad=vad)
        self.vad = vad
        self.start_after_s = start_after_s
        self.gate = gate
        self.on_partial = on_partial
        self.partial_every_s = partial_every_s
        # Asked before each words-so-far run: no run when its result would not be used (e.g.
        # the caller talks over the agent, whose voice needs the cores).
        self.partial_wanted = partial_wanted
        self.used = self.dropped = 0  # speculative runs whose result was the transcript / was not
        self.partials = 0  # words-so-far handed to on_partial
        # True from the moment the caller's pause starts recognition until they speak again.
        self.pausing = False

    def stream(self, *, language: NotGivenOr[str] = NOT_GIVEN,
               conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> stt.RecognizeStream:
        return _SpeculativeStream(self, language=language, conn_options=conn_options)


class _SpeculativeStream(stt.RecognizeStream):
    def __init__(self, adapter: SpeculativeSTT, *, language: NotGivenOr[str],
                 conn_options: APIConnectOptions) -> None:
        super().__init__(stt=adapter, conn_options=_STREAM_CONN_OPTIONS)
        self._adapter = adapter
        self._language = language
        self._inner_conn = conn_options

    async def _metrics_monitor_task(self, event_aiter: AsyncIterable[stt.SpeechEvent]) -> None:
        async for _ in event_aiter:  # the wrapped STT reports its own metrics per run
            pass

    def _recognize(self, frames: list[rtc.AudioFrame], words_so_far: bool = False) -> asyncio.Task[stt.SpeechEvent]:
        context = contextvars.copy_context()
        context.run(WORDS_SO_FAR.set, words_so_far)
        return asyncio.create_task(self._adapter.wrapped_stt.recognize(
            buffer=utils.merge_frames(frames), language=self._language, conn_options=self._inner_conn),
            context=context)

    async def _run(self) -> None:
        vad_stream = self._adapter.vad.stream()

        async def forward_input() -> None:
            async for data in self._input_ch:
                if isinstance(data, self._FlushSentinel):
                    vad_stream.flush()
                else:
                    vad_stream.push_frame(data)
            vad_stream.end_input()

        adapter = self._adapter
        partial: asyncio.Task[stt.SpeechEvent] | None = None
        partial_at = 0.0  # speech (s) in the segment when the last partial run started
        segment: list[list[rtc.AudioFrame] | None] = [None]  # the segment the caller is in

        def partial_done(task: asyncio.Task[stt.SpeechEvent], of: list[rtc.AudioFrame]) -> None:
            if task.cancelled() or task.exception() is not None or adapter.on_partial is None:
                return
            alts = task.result().alternatives
            # Only while the caller is still talking in that segment: after that the turn's
            # own recognition is running, or done.
            if segment[0] is of and not adapter.pausing and alts and alts[0].text.strip():
                adapter.partials += 1
                try:
                    adapter.on_partial(alts[0])
                except Exception as e:  # an optimisation must not break recognition
                    logger.warning("partial transcript handler failed: %s", e)

        async def recognize() -> None:
            nonlocal partial, partial_at
            speech: list[rtc.AudioFrame] | None = None  # the segment so far, once speech started
            early: asyncio.Task[stt.SpeechEvent] | None = None
            early_silence = 0.0  # the pause's length when `early` started
            async for ev in vad_stream:
                if ev.type == vad.VADEventType.START_OF_SPEECH:
                    speech = segment[0] = list(ev.frames)
                    early, partial_at, adapter.pausing = None, 0.0, False
                    self._event_ch.send_nowait(stt.SpeechEvent(stt.SpeechEventType.START_OF_SPEECH))
                elif ev.type == vad.VADEventType.INFERENCE_DONE and speech is not None:
                    speech.extend(ev.frames)
                    # The event counts the silent windows before its own; this one (32 ms) is
                    # heard too, and the run is dropped below if it held speech.
                    silence = ev.raw_accumulated_silence + sum(f.duration for f in ev.frames)
                    if early is not None and silence < early_silence:
                        early = None  # the caller spoke again: that result describes a part
                        adapter.dropped += 1
                        adapter.pausing = False
                    if early is None and ev.speaking and silence >= adapter.start_after_s:
                        early, early_silence = self._recognize(speech), silence
                        adapter.pausing = True
                    elif (adapter.on_partial is not None and ev.speaking and early is None
                          and ev.raw_accumulated_silence == 0  # mid-word, not the start of a pause
                          and ev.speech_duration - partial_at >= adapter.partial_every_s
                          and (partial is None or partial.done()) and adapter.partial_wanted()):
                        partial_at = ev.speech_duration
                        partial = self._recognize(list(speech), words_so_far=True)
                        partial.add_done_callback(functools.partial(partial_done, of=speech))
                elif ev.type == vad.VADEventType.END_OF_SPEECH:
                    segment[0] = None
                    speech_end_time = time.time() - ev.silence_duration - ev.inference_duration
                    self._event_ch.send_nowait(stt.SpeechEvent(stt.SpeechEventType.END_OF_SPEECH,
                                                               speech_end_time=speech_end_time))
                    result = None
                    if early is not None:
                        try:
                            result = await early
                            self._adapter.used += 1
                        except Exception as e:  # the segment is recognized again below
                            logger.debug("early recognition failed: %s", e)
                    if result is None:
                        result = await self._recognize(list(ev.frames))
                    speech, early, adapter.pausing = None, None, False
                    result = adapter.gate(result)
                    if result.alternatives and result.alternatives[0].text:
                        self._event_ch.send_nowait(stt.SpeechEvent(
                            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                            alternatives=[result.alternatives[0]],
                            speech_end_time=result.speech_end_time or speech_end_time))

        tasks = [asyncio.create_task(forward_input(), name="forward_input"),
                 asyncio.create_task(recognize(), name="recognize")]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks)
            with contextlib.suppress(Exception):
                await vad_stream.aclose()
