"""Shared fixtures: real livekit-server and worker processes on loopback ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.devstack import BIN, ROOT, LiveKitServer, Worker

FIXTURES = Path(os.environ.get("PARLEY_FIXTURES", ROOT / "tests" / "fixtures" / "audio"))


# The three layers: fast (`make test-fast`: no models, no processes), model (real local models,
# no processes: `-m model`), e2e (real processes: `-m e2e`). Files that start processes mark
# themselves e2e; a test using a fixture that starts one is e2e too, and a test file that
# loads the real local models is in the model layer.
MODEL_FILES = {"test_fallback.py", "test_models.py", "test_providers.py"}
PROCESS_FIXTURES = {"livekit_server", "worker", "call", "svc", "service_factory", "client"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e"):
            continue
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
        elif item.path.name in MODEL_FILES:
            item.add_marker(pytest.mark.model)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not (FIXTURES / "manifest.json").exists():
        pytest.fail(f"audio fixtures not found at {FIXTURES} (set PARLEY_FIXTURES)")
    return FIXTURES


@pytest.fixture(scope="session")
def manifest(fixtures: Path) -> dict[str, dict]:
    return {m["file"]: m for m in json.loads((fixtures / "manifest.json").read_text())}


@pytest.fixture(scope="session")
def out_dir() -> Path:
    """Logs, reports and screenshots of this test run (kept for inspection)."""
    d = ROOT / "test-output"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="session")
def livekit_server(out_dir: Path):
    server = LiveKitServer.create().start(out_dir / "logs")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def report_dir(out_dir: Path) -> Path:
    d = out_dir / "reports"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="session")
def worker(livekit_server: LiveKitServer, out_dir: Path, report_dir: Path):
    w = Worker(env={**livekit_server.env(), "PARLEY_REPORT_DIR": str(report_dir),
                    "PARLEY_IDLE_PROCESSES": "1", "PARLEY_LOAD_CPU": "0"})
    w.start(out_dir / "logs")
    yield w
    w.stop()


@dataclass
class CallResult:
    rc: int
    events: list[dict]
    stderr: str

    @property
    def greeting(self) -> dict:
        return next(e for e in self.events if e["event"] == "greeting")

    @property
    def turns(self) -> list[dict]:
        return [e for e in self.events if e["event"] == "turn"]


def run_call(server: LiveKitServer, *args: str, timeout: float = 240.0) -> CallResult:
    cmd = [str(BIN / "parley-call"), "--url", server.url, "--api-key", server.api_key,
           "--api-secret", server.api_secret, "--json", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    sys.stderr.write(p.stdout)
    return CallResult(p.returncode, events, p.stderr)


@pytest.fixture
def call(livekit_server: LiveKitServer, worker: Worker):
    def _call(*args: str, timeout: float = 240.0) -> CallResult:
        return run_call(livekit_server, *args, timeout=timeout)

    return _call


def wait_report(report_dir: Path, room: str, timeout: float = 30.0) -> dict:
    """The session report the worker wrote for `room` (it writes it when the call ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in report_dir.glob(f"{room}-*.json"):
            return json.loads(path.read_text())
        time.sleep(0.2)
    raise AssertionError(f"no session report for room {room} in {report_dir}")


def wait_for(pred: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll pred until it returns something truthy; its last value after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(interval)
    return pred()


def records(w: Worker) -> list[dict[str, Any]]:
    """The worker's JSON log lines (production mode logs one JSON object per line)."""
    assert w.proc is not None
    out = []
    for line in w.proc.log().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out
