"""The worker survives a LiveKit server that is not there yet: it retries with backoff."""

from __future__ import annotations

import pytest

from harness.devstack import LiveKitServer, Worker

pytestmark = pytest.mark.e2e


def test_worker_retries_until_server_appears(out_dir):
    server = LiveKitServer.create()  # ports chosen, not started yet
    worker = Worker(env={**server.env(), "PARLEY_LOAD_CPU": "0"})
    log_dir = out_dir / "logs"
    try:
        worker.start(log_dir, name="worker-retry", wait=False)
        assert worker.proc is not None
        assert worker.proc.wait_log(r"failed to connect to livekit, retrying", 60), worker.proc.log()[-3000:]
        assert worker.proc.popen.poll() is None, "worker exited instead of retrying"

        server.start(log_dir)
        # backoff is min(2 * attempt, 10) s, so registration follows within ~10 s
        assert worker.proc.wait_log(r"registered worker", 60), worker.proc.log()[-3000:]
        status, body = worker.health("/")
        assert status == 200, body
    finally:
        worker.stop()
        server.stop()
