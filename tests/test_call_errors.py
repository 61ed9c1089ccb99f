"""parley-call fails fast with a one-line reason, never a traceback."""

from __future__ import annotations

import subprocess
import time

import pytest

from harness.devstack import BIN, ROOT, free_port

pytestmark = pytest.mark.e2e  # runs parley-call (and a livekit-server) as processes


def parley_call(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "parley-call"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def assert_one_line(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("parley-call:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_file(tmp_path):
    p = parley_call("--audio", str(tmp_path / "nope.wav"))
    assert p.returncode == 2
    assert_one_line(p.stderr, "nope.wav")


def test_not_a_wav_file(tmp_path):
    f = tmp_path / "notes.wav"
    f.write_text("this is not audio")
    p = parley_call("--audio", str(f))
    assert p.returncode == 2
    assert_one_line(p.stderr, "not a WAV")


def test_truncated_wav(tmp_path, fixtures):
    f = tmp_path / "cut.wav"
    f.write_bytes((fixtures / "capital_france.wav").read_bytes()[:30])
    p = parley_call("--audio", str(f))
    assert p.returncode == 2
    assert_one_line(p.stderr, "cut.wav")


def test_server_unreachable_fails_with_reason(fixtures):
    port = free_port()
    t0 = time.monotonic()
    p = parley_call("--url", f"ws://127.0.0.1:{port}", "--timeout", "5",
                    "--audio", str(fixtures / "capital_france.wav"))
    assert p.returncode == 1
    assert_one_line(p.stderr, "cannot reach LiveKit")
    assert time.monotonic() - t0 < 30


def test_wrong_secret_is_reported(livekit_server, fixtures):
    p = parley_call("--url", livekit_server.url, "--api-key", livekit_server.api_key,
                    "--api-secret", "wrong-secret-wrong-secret-wrong-secret", "--timeout", "5",
                    "--audio", str(fixtures / "capital_france.wav"))
    assert p.returncode == 1
    assert_one_line(p.stderr, "rejected")


def test_agent_never_dispatched(livekit_server, fixtures):
    p = parley_call("--url", livekit_server.url, "--api-key", livekit_server.api_key,
                    "--api-secret", livekit_server.api_secret, "--agent", "nobody-runs-this",
                    "--timeout", "4", "--audio", str(fixtures / "capital_france.wav"))
    assert p.returncode == 1
    assert_one_line(p.stderr, "nobody-runs-this", "not dispatched")
