"""Answering-machine detection on real outbound calls: parley-dial rings sipp (the callee),
which answers and plays either a voicemail greeting with a 1 kHz beep or a short "Hello?".
The stack (Redis, livekit-server, livekit-sip, a worker, trunks) is test_sip.py's."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from harness.devstack import BIN, ROOT
from harness.sipstack import SipStack

from . import test_sip
from .sip import callee
from .sip.rtp import RtpRecorder
from .sip.sipp import sipp
from .test_sip import _delete_room, _texts, _wait_report

# test_sip.py's module-scoped fixtures: this module gets a stack of its own.
sip_stack = test_sip.sip_stack
sip_env = test_sip.sip_env
uas_port = test_sip.uas_port
sip_setup = test_sip.sip_setup
sip_reports = test_sip.sip_reports
sip_worker = test_sip.sip_worker

pytestmark = pytest.mark.e2e

DEFAULT_MESSAGE_START = "Hello, this is Parley calling. Sorry we missed you"


def _dial(number: str, env: dict[str, str]) -> dict:
    dial = subprocess.run([str(BIN / "parley-dial"), number, "--json"], env=env, capture_output=True,
                          text=True, timeout=90, cwd=ROOT)
    assert dial.returncode == 0, f"parley-dial failed: {dial.stderr}"
    return json.loads(dial.stdout)


def test_machine_gets_the_message_after_the_beep(sip_stack: SipStack, sip_worker, sip_env: dict[str, str],
                                                  uas_port: int, sip_reports: Path, out_dir: Path) -> None:
    number = "+15550171"
    work = out_dir / "sip" / "amd-machine"
    audio = callee.machine(work, callee.MACHINE_GREETINGS[0])
    callee.write_pcap(work, audio)
    rec = RtpRecorder().start()
    t_start = time.time()
    try:
        run = sipp("uas_greeting.xml", work, name="machine", keys={"rec_port": str(rec.port)}, timeout_s=120,
                   local_port=uas_port, media_port=rec.port + 2)
        time.sleep(0.5)
        _dial(number, sip_env)
        # The agent hangs up by itself after the message: sipp's scenario ends on its BYE.
        rc = run.wait(120)
    finally:
        rec.stop()
    assert rc == 0, f"the agent did not hang up after the message\n{run.log_tail()}"
    ack = run.first(sent=False, startswith="ACK")
    bye = run.first(sent=False, startswith="BYE")
    assert ack is not None and bye is not None
    assert audio.beep_end_s is not None
    beep_end = ack.t + audio.beep_end_s
    voice = [t for t in rec.voice_times() if t > ack.t]
    early = [round(t - ack.t, 2) for t in voice if t < beep_end]
    assert not early, f"the agent talked over the greeting at {early} s (beep ends at {audio.beep_end_s:.2f} s)"
    after = [t for t in voice if beep_end < t < bye.t]
    assert after, "no message after the beep"
    spoken_s = len(after) * 0.02
    assert spoken_s > 2.0, f"only {spoken_s:.1f} s of voice after the beep: the message was cut short"

    report = _wait_report(sip_reports, number, t_start)
    phone = report["phone"]
    assert phone["answered_by"] == "machine", phone
    assert phone["ended_by"] == "voicemail", phone
    assert phone["amd"]["decision_ms"] < 6000, phone["amd"]
    said = " ".join(_texts(report, "assistant"))
    assert DEFAULT_MESSAGE_START in said, said
    assert "Do you have a moment" not in said, f"greeted a machine: {said!r}"
    print(f"machine: decided in {phone['amd']['decision_ms']:.0f} ms ({phone['amd']['reason']}), "
          f"message {(after[0] - beep_end) * 1000:.0f} ms after the beep, BYE {bye.t - after[-1]:.1f} s after it")


def test_person_gets_the_greeting(sip_stack: SipStack, sip_worker, sip_env: dict[str, str], uas_port: int,
                                  sip_reports: Path, out_dir: Path) -> None:
    number = "+15550172"
    work = out_dir / "sip" / "amd-human"
    audio = callee.human(work, "Hello?")
    callee.write_pcap(work, audio)
    rec = RtpRecorder().start()
    t_start = time.time()
    try:
        run = sipp("uas_greeting.xml", work, name="human", keys={"rec_port": str(rec.port)}, timeout_s=120,
                   local_port=uas_port, media_port=rec.port + 2)
        time.sleep(0.5)
        result = _dial(number, sip_env)
        ack = None
        deadline = time.time() + 30
        while time.time() < deadline:
            ack = ack or run.first(sent=False, startswith="ACK")
            if ack is not None and [t for t in rec.voice_times() if t > ack.t + audio.speech_end_s]:
                break
            time.sleep(0.2)
        time.sleep(3.0)  # let the greeting play on, then hang up from LiveKit's side
        _delete_room(sip_stack, result["room"])
        rc = run.wait(60)
    finally:
        rec.stop()
    assert rc == 0, f"the callee never got its BYE\n{run.log_tail()}"
    assert ack is not None
    voice = [t for t in rec.voice_times() if t > ack.t]
    assert voice, "the agent never spoke to the person who answered"
    assert voice[0] > ack.t + audio.speech_end_s, "the agent spoke over the callee's hello"
    report = _wait_report(sip_reports, number, t_start)
    phone = report["phone"]
    assert phone["answered_by"] == "human", phone
    said = " ".join(_texts(report, "assistant"))
    assert "calling" in said and "Sorry we missed you" not in said, said
    print(f"human: decided in {phone['amd']['decision_ms']:.0f} ms ({phone['amd']['reason']}), "
          f"greeting {(voice[0] - ack.t - audio.speech_end_s) * 1000:.0f} ms after the hello ended")
