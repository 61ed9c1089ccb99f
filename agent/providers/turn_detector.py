"""Local end-of-turn detection: LiveKit's audio `turn-detector-v1-mini`, re-asked as silence grows.

The framework asks the audio model once, 200 ms into a pause, and when the answer
is "not finished" it waits the full `max_delay`. The mini model's confidence rises
with the length of the pause (measured on the fixtures: 0.1–0.37 at 200 ms, 0.4–0.5
at 400 ms, 0.6–0.8 at 800 ms), so a single early look turns most finished
questions into a 2 s wait. Here a "not finished" answer is re-checked a few times
while the caller stays silent; any new speech cancels the re-checks as before, so
genuine mid-sentence pauses still get the long wait.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import inference
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
from livekit.agents.voice.turn import TurnDetectionEvent

from ..compat import LocalTurnTransport, TurnDetectorStream


@dataclass(frozen=True)
class ProgressiveOptions:
    # Seconds to wait before each re-check; the sum must stay well inside the
    # framework's 1 s prediction timeout.
    recheck_after: tuple[float, ...] = field(default=(0.15, 0.15, 0.2))


class ProgressiveTurnDetector(inference.TurnDetector):
    def __init__(self, opts: ProgressiveOptions | None = None) -> None:
        super().__init__(version="v1-mini")  # pinned: dev mode would otherwise pick the cloud model
        self._progressive = opts or ProgressiveOptions()

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> TurnDetectorStream:
        return _ProgressiveStream(
            self._progressive,
            detector=self,
            opts=self._opts,
            transport=LocalTurnTransport(opts=self._opts),
            model=self._model,
            local_fallback=False,
        )


class _ProgressiveStream(TurnDetectorStream):
    def __init__(self, p_opts: ProgressiveOptions, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._p_opts = p_opts
        self._p_task: asyncio.Task[None] | None = None
        self._p_fut: asyncio.Future[TurnDetectionEvent] | None = None
        self._p_inner = False

    def predict(self) -> asyncio.Future[TurnDetectionEvent]:
        self.cancel_inference()
        outer: asyncio.Future[TurnDetectionEvent] = asyncio.get_running_loop().create_future()
        self._p_fut = outer
        self._p_task = asyncio.create_task(self._refine(outer))
        return outer

    def _predict_once(self) -> asyncio.Future[TurnDetectionEvent]:
        self._p_inner = True  # base predict() supersedes via cancel_inference(): not ours to cancel
        try:
            return super().predict()
        finally:
            self._p_inner = False

    async def _refine(self, outer: asyncio.Future[TurnDetectionEvent]) -> None:
        threshold = self._opts.thresholds.lookup(None)
        ev = await self._predict_once()
        for delay in self._p_opts.recheck_after:
            if outer.done() or ev.end_of_turn_probability >= threshold:
                break
            await asyncio.sleep(delay)
            if outer.done():
                return
            ev = await self._predict_once()
        if not outer.done():
            outer.set_result(ev)

    def cancel_inference(self, *, timed_out: bool = False) -> None:
        if not self._p_inner:
            if self._p_task is not None and not self._p_task.done():
                self._p_task.cancel()
            if self._p_fut is not None and not self._p_fut.done():
                self._p_fut.set_result(self._default_event(0.0))
            self._p_task = self._p_fut = None
        super().cancel_inference(timed_out=timed_out)
