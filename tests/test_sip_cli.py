"""Telephony pieces that need no SIP stack: CLI errors, settings, goodbye detection, µ-law."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from agent.telephony import is_goodbye
from harness.audio import read_wav
from harness.devstack import BIN, ROOT, free_port
from ops.settings import OpsSettings as Settings
from ops.settings import SettingsError

from .sip.rtp import caller_stream, ulaw_decode, wav_ulaw_payload


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, **env})


@pytest.mark.e2e  # starts a process
def test_parley_sip_unreachable_server_is_one_line() -> None:
    p = _run("parley-sip", "setup", "--url", f"ws://127.0.0.1:{free_port()}")
    assert p.returncode == 1
    assert p.stderr.startswith("parley-sip: cannot reach LiveKit server"), p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.e2e  # starts a process
def test_parley_dial_unreachable_server_is_one_line() -> None:
    p = _run("parley-dial", "+15550142", "--url", f"ws://127.0.0.1:{free_port()}")
    assert p.returncode == 1
    assert "cannot reach LiveKit server" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize(("name", "value"), [("PARLEY_SIP_RTP_PORTS", "10000"), ("PARLEY_SIP_RTP_PORTS", "9-5"),
                                             ("PARLEY_SIP_PORT", "sip")])
@pytest.mark.e2e  # starts a process
def test_bad_sip_settings_are_refused(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        Settings.load()
    p = _run("parley-sip", "setup", **{name: value})
    assert p.returncode == 2 and f"configuration error: {name}" in p.stderr and "Traceback" not in p.stderr


def test_sip_settings_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PARLEY_SIP_PORT", "PARLEY_SIP_NUMBER"):
        monkeypatch.delenv(name, raising=False)
    s = Settings.load()
    assert (s.sip_port, s.sip_number) == (5060, "+15550100")
    monkeypatch.setenv("PARLEY_SIP_PORT", "5080")
    monkeypatch.setenv("PARLEY_SIP_ALLOWED_ADDRESSES", "127.0.0.1, 10.0.0.0/8")
    s = Settings.load()
    assert s.sip_port == 5080 and s.sip_allowed_addresses == ("127.0.0.1", "10.0.0.0/8")


@pytest.mark.parametrize(("text", "bye"), [
    ("Goodbye.", True), ("Bye bye!", True), ("Okay, bye.", True), ("That's all, thanks.", True),
    ("goodbye, thank you", True), ("Hang up.", True), ("Goodbye! Goodbye! Thank you.", True),
    ("Thanks, bye.", True), ("Thank you.", False), ("Thank you, that was helpful.", False),
    ("Say goodbye to my friend for me", False), ("What is the capital of France?", False),
    ("", False), ("bye the way, what time is it?", False),
])
def test_goodbye_detection(text: str, bye: bool) -> None:
    assert is_goodbye(text) is bye


def test_ulaw_pcap_stream_matches_the_fixture(fixtures: Path) -> None:
    wav = fixtures / "capital_france_8k_ulaw.wav"
    payload = wav_ulaw_payload(wav)
    # Our decoder and the project's WAV reader agree on every sample.
    assert np.array_equal(ulaw_decode(payload), read_wav(wav).pcm)
    stream = caller_stream(payload, lead_s=2.0, tail_s=1.0)
    bounds = read_wav(wav).speech_bounds_s()
    assert bounds is not None
    assert stream.speech_start_s == pytest.approx(2.0 + bounds[0], abs=0.011)
    assert stream.speech_end_s == pytest.approx(2.0 + bounds[1], abs=0.011)
