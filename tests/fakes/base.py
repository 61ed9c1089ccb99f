"""A threaded aiohttp server on a free loopback port, plus shared helpers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import numpy as np
from aiohttp import web

# How a fake fails: refused is a port with nothing listening (see closed_port), the rest
# are served: an HTTP 500 (or a rejected websocket upgrade), the stream cut off after the
# first chunk, no answer at all for `stall_s`, or no further data after the first chunk.
Failure = Literal["ok", "http500", "close_mid", "stall", "stall_mid"]


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tone(seconds: float, rate: int, freq: float = 220.0, amplitude: float = 0.3) -> bytes:
    """Speech-loud 16-bit mono PCM: a tone with a few harmonics (what fakes 'say')."""
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3))
    wave = wave / np.max(np.abs(wave)) * amplitude
    return (wave * 32767).astype(np.int16).tobytes()


def rms(pcm: bytes) -> float:
    a = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


@dataclass
class Recorded:
    """One request (or websocket message) a fake received."""

    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: Any = None
    at: float = field(default_factory=time.time)


class ThreadedServer:
    """Runs `self.app()` on 127.0.0.1 in a daemon thread with its own event loop."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[Recorded] = []
        self.failures_at: list[float] = []  # time.time() of each failure the fake acted out
        self.stall_s = 30.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Self:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._runner = web.AppRunner(self.app(), handle_signals=False, shutdown_timeout=1.0)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, "127.0.0.1", 0)
                loop.run_until_complete(site.start())
                self.port = self._runner.addresses[0][1]
            except BaseException as e:  # surfaced in start()
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop and self._thread and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            self._thread.join(10)

    async def _shutdown(self) -> None:
        # Stalled handlers are still sleeping: cancel them before the loop stops.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner:
            await self._runner.cleanup()
        asyncio.get_running_loop().stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, request: web.Request, body: Any = None) -> Recorded:
        rec = Recorded(path=request.path, headers=dict(request.headers), query=dict(request.query), body=body)
        self.requests.append(rec)
        return rec

    def failed(self) -> None:
        self.failures_at.append(time.time())
