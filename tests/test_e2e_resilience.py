"""The worker survives a LiveKit server that is not there yet: it retries with backoff."""

from __future__ import annotations

import threading
import time

import pytest

from agent.devstack import LiveKitServer, Worker

pytestmark = pytest.mark.e2e


def test_worker_retries_until_server_appears(out_dir):
    server = LiveKitServer.create()  # ports chosen, not started yet
    worker = Worker(env={**server.env(), "PARLEY_LOAD_CPU": "0"})
    log_dir = out_dir / "logs"
    try:
        # Start the worker against the missing server: it must log retries, not exit.
        started: dict[str, Exception | None] = {"error": None}

        def start() -> None:
            try:
                worker.start(log_dir, name="worker-retry", timeout=120)
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                started["error"] = e

        t = threading.Thread(target=start)
        t.start()
        deadline = time.monotonic() + 60
        while worker.proc is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.proc is not None
        assert worker.proc.wait_log(r"failed to connect to livekit, retrying", 60), worker.proc.log()[-3000:]
        assert worker.proc.popen.poll() is None, "worker exited instead of retrying"

        server.start(log_dir)
        t.join(150)
        assert started["error"] is None, started["error"]
        assert worker.proc.wait_log(r"registered worker", 5)
        status, body = worker.health("/")
        assert status == 200, body
    finally:
        worker.stop()
        server.stop()
