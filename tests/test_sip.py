"""Phone calls through the real LiveKit SIP service, with sipp as the phone.

Stack (module scope, free loopback ports): Redis, livekit-server with that Redis,
livekit-sip, a Parley worker, trunks and dispatch rule from `parley-sip setup`.
sipp speaks SIP; its RTP to LiveKit SIP comes from pcaps built by tests/sip/rtp.py,
and LiveKit SIP's RTP to the phone lands on an RtpRecorder socket named in the SDP.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from livekit import api

from agent.telephony import GOODBYE
from harness.devstack import BIN, ROOT, Worker
from harness.sipstack import SipStack

from .sip.rtp import (
    RATE,
    ULAW_SILENCE,
    RtpRecorder,
    Stream,
    caller_stream,
    stream_pcap,
    wav_ulaw_payload,
)
from .sip.sipp import SippRun, free_udp_port, sipp

pytestmark = pytest.mark.e2e

NUMBER = "+15550100"  # PARLEY_SIP_NUMBER default: the contract's inbound number
OPERATOR = "tel:+15550123"  # PARLEY_SIP_TRANSFER_TO: where "press 0" sends the caller
LEAD_S = 10.0  # silence before the caller speaks: answer + greeting fit in it
ANSWER_S = 25.0  # time after the last question for the spoken answer (generous: 2 busy cores)
REPEAT_AFTER_S = 15.0  # the caller asks again this long after the first question
VALID_OFFER = ("v=0\r\no=sipp 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
BAD_OFFERS = {
    "unknown_number": ("+15559999", VALID_OFFER),
    "malformed_sdp": (NUMBER, "v=0\r\nthis is not a session description\r\nm=audio many RTP/AVP\r\n"),
    "unsupported_codec": (NUMBER, VALID_OFFER.replace("RTP/AVP 0\r\na=rtpmap:0 PCMU/8000",
                                                      "RTP/AVP 18\r\na=rtpmap:18 G729/8000")),
}


def _can_send_raw() -> bool:
    # sipp's play_pcap_audio / play_dtmf write RTP through a raw socket.
    import socket

    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    except PermissionError:
        return False
    return True


@pytest.fixture(scope="module")
def sip_stack(out_dir: Path) -> Iterator[SipStack]:
    if not _can_send_raw():
        pytest.skip("sipp plays RTP through raw sockets: needs root or CAP_NET_RAW")
    stack = SipStack.start(out_dir / "logs")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def sip_env(sip_stack: SipStack) -> dict[str, str]:
    return {**os.environ, **sip_stack.server.env()}  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def uas_port() -> int:
    """Where the outbound trunk sends calls: the sipp callee of test_outbound_dial."""
    return free_udp_port()


@pytest.fixture(scope="module")
def sip_setup(sip_env: dict[str, str], uas_port: int) -> dict:
    env = {**sip_env, "PARLEY_SIP_OUTBOUND_ADDRESS": f"127.0.0.1:{uas_port}"}
    first = subprocess.run([str(BIN / "parley-sip"), "setup", "--json"], env=env, capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([str(BIN / "parley-sip"), "setup", "--json"], env=env, capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    # Idempotent: same objects, nothing changed the second time.
    assert (a["inbound_trunk_id"], a["dispatch_rule_id"], a["outbound_trunk_id"]) == \
        (b["inbound_trunk_id"], b["dispatch_rule_id"], b["outbound_trunk_id"])
    assert set(b["actions"].values()) == {"unchanged"}, b
    return b


@pytest.fixture(scope="module")
def sip_reports(out_dir: Path) -> Path:
    d = out_dir / "sip-reports"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="module")
def sip_worker(sip_env: dict[str, str], sip_setup: dict, sip_reports: Path, out_dir: Path) -> Iterator[Worker]:
    # PARLEY_LOAD_CPU=0: on a shared 2-core machine other processes' CPU must not
    # make the only worker refuse the test's calls.
    w = Worker(env={**sip_env, "PARLEY_REPORT_DIR": str(sip_reports), "PARLEY_IDLE_PROCESSES": "1",
                    "PARLEY_LOAD_CPU": "0", "PARLEY_SIP_TRANSFER_TO": OPERATOR})
    w.start(out_dir / "logs", name="sip-worker")
    yield w
    w.stop()


def _rooms(stack: SipStack) -> list[str]:
    server = stack.server

    async def go() -> list[str]:
        lk = api.LiveKitAPI(server.url.replace("ws://", "http://"), server.api_key, server.api_secret)  # type: ignore[attr-defined]
        try:
            return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
        finally:
            await lk.aclose()

    return asyncio.run(go())


def _delete_room(stack: SipStack, room: str) -> None:
    server = stack.server

    async def go() -> None:
        lk = api.LiveKitAPI(server.url.replace("ws://", "http://"), server.api_key, server.api_secret)  # type: ignore[attr-defined]
        try:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        finally:
            await lk.aclose()

    asyncio.run(go())


def _wait_report(reports: Path, number: str, since: float, timeout: float = 45.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for f in sorted(reports.glob("*.json")):
            if f.stat().st_mtime < since:
                continue
            data = json.loads(f.read_text())
            if data.get("phone", {}).get("number") == number:
                data["_path"] = str(f)
                return data
        time.sleep(0.5)
    raise AssertionError(f"no session report for a call from/to {number} in {reports} after {timeout:.0f}s")


def _texts(report: dict, role: str) -> list[str]:
    out = []
    for item in report["chat_history"]["items"]:
        if item.get("type") == "message" and item.get("role") == role:
            out.append(" ".join(c for c in item.get("content", []) if isinstance(c, str)))
    return out


def _wait_rooms_gone(stack: SipStack, needle: str, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    left = [r for r in _rooms(stack) if needle in r]
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [r for r in _rooms(stack) if needle in r]
    return left


def _reject(stack: SipStack, workdir: Path, name: str, number: str, offer: str) -> SippRun:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "offer.sdp").write_text(offer)
    assert stack.sip is not None
    return sipp("uac_reject.xml", workdir, name=name, target=f"127.0.0.1:{stack.sip.sip_port}",
                service=number, keys={"caller": "+15550299"}, timeout_s=30)


@pytest.mark.parametrize("case", sorted(BAD_OFFERS))
def test_bad_invite_is_rejected_cleanly(case: str, sip_stack: SipStack, sip_worker: Worker, out_dir: Path) -> None:
    number, offer = BAD_OFFERS[case]
    before = set(_rooms(sip_stack))
    run = _reject(sip_stack, out_dir / "sip" / case, case, number, offer)
    rc = run.wait(60)
    finals = run.final_statuses()
    assert rc == 0 and finals, f"no final rejection for {case}: {finals}\n{run.log_tail()}"
    assert 400 <= finals[0] < 700, f"{case}: expected a 4xx-6xx rejection, got {finals}"
    # Nothing left behind, nothing broken. livekit-sip creates a call's room before it answers,
    # so once the final rejection has arrived any room this INVITE made would already exist.
    assert set(_rooms(sip_stack)) - before == set(), f"{case} left a room behind"
    assert sip_stack.sip and sip_stack.sip.proc and sip_stack.sip.proc.popen.poll() is None, "livekit-sip died"
    print(f"{case}: SIP {finals[0]}")


def test_inbound_call_answers_the_question(sip_stack: SipStack, sip_worker: Worker, fixtures: Path,
                                           sip_reports: Path, out_dir: Path) -> None:
    """The contract call: INVITE sip:+15550100@127.0.0.1, G.711 µ-law question, BYE."""
    assert sip_stack.sip is not None
    caller = "+15550201"
    work = out_dir / "sip" / "inbound"
    work.mkdir(parents=True, exist_ok=True)
    # A phone sends RTP all call long (silence too): LiveKit SIP hangs up after 15 s without any.
    # The caller asks twice, as people on a bad line do: on a busy machine Whisper tiny.en now
    # and then mishears the band-limited question (the WebRTC path with the same 8 kHz audio
    # too). The latency is measured on the first.
    clip = wav_ulaw_payload(fixtures / "capital_france_8k_ulaw.wav")
    first = caller_stream(clip, lead_s=LEAD_S, tail_s=REPEAT_AFTER_S)
    stream = Stream(first.ulaw + caller_stream(clip, lead_s=0.0, tail_s=ANSWER_S).ulaw,
                    first.speech_start_s, first.speech_end_s)
    stream_pcap(work / "caller.pcap", stream)
    hold_ms = int((stream.duration_s - 1.0) * 1000)  # BYE while the pcap still plays
    rec = RtpRecorder().start()
    t_start = time.time()
    try:
        run = sipp("uac_call.xml", work, name="call", target=f"127.0.0.1:{sip_stack.sip.sip_port}",
                   service=NUMBER, keys={"caller": caller, "rec_port": str(rec.port)},
                   duration_ms=hold_ms, timeout_s=int(hold_ms / 1000) + 60, media_port=rec.port + 2)
        # While this call runs, bad INVITEs must be refused without disturbing it.
        time.sleep(3.0)
        for case, (number, offer) in BAD_OFFERS.items():
            bad = _reject(sip_stack, work / f"during-{case}", f"during-{case}", number, offer)
            assert bad.wait(60) == 0 and bad.final_statuses(), f"{case} during a call:\n{bad.log_tail()}"
        rc = run.wait(hold_ms / 1000 + 90)
    finally:
        rec.stop()
    assert rc == 0, f"the call failed\n{run.log_tail()}"
    ack = run.first(sent=True, startswith="ACK")
    assert ack is not None, run.log_tail()
    speech_start, speech_end = ack.t + stream.speech_start_s, ack.t + stream.speech_end_s

    voice = rec.voice_times()
    assert voice, f"no audio came back from the agent ({len(rec.packets)} RTP packets, all silent)"
    greeting = [t for t in voice if t < speech_start]
    assert greeting, "the agent did not greet before the caller spoke"
    assert max(greeting) < speech_start - 0.2, "greeting overlapped the question (machine overloaded?)"
    reply = [t for t in voice if t > speech_end]
    assert reply, "no spoken answer after the question"
    latency_ms = (reply[0] - speech_end) * 1000
    audio = rec.audio()
    level = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    print(f"phone path: greeting after {(greeting[0] - ack.t) * 1000:.0f} ms, turn latency {latency_ms:.0f} ms, "
          f"{len(rec.packets)} RTP packets, {len(audio) / RATE:.1f} s, rms {level:.0f}")
    (out_dir / "sip" / "inbound-latency.json").write_text(json.dumps({"turn_latency_ms": round(latency_ms, 1)}))

    report = _wait_report(sip_reports, caller, t_start)
    agent_text = " ".join(_texts(report, "assistant"))
    user_text = " ".join(_texts(report, "user"))
    assert "paris" in agent_text.lower(), f"answer without Paris: user={user_text!r} agent={agent_text!r}"
    assert "france" in user_text.lower() or "capital" in user_text.lower(), f"heard: {user_text!r}"
    assert report["phone"]["direction"] == "inbound" and report["phone"]["trunk_number"] == NUMBER
    assert report["phone"]["ended_by"] == "caller"
    # The caller's BYE ended the room too.
    assert _wait_rooms_gone(sip_stack, caller) == [], "the room outlived the call"


def test_keypad_and_agent_hang_up(sip_stack: SipStack, sip_worker: Worker, sip_reports: Path,
                                  out_dir: Path) -> None:
    """RFC 2833 "1" is heard and acknowledged; "#" makes the agent hang up (BYE to the phone)."""
    assert sip_stack.sip is not None
    caller = "+15550202"
    work = out_dir / "sip" / "keypad"
    work.mkdir(parents=True, exist_ok=True)
    stream_pcap(work / "caller.pcap", Stream(bytes([ULAW_SILENCE]) * RATE * 25, 0.0, 0.0))
    rec = RtpRecorder().start()
    t_start = time.time()
    try:
        run = sipp("uac_dtmf_hangup.xml", work, name="keypad", target=f"127.0.0.1:{sip_stack.sip.sip_port}",
                   service=NUMBER, keys={"caller": caller, "rec_port": str(rec.port)}, timeout_s=90,
                   media_port=rec.port + 2)
        rc = run.wait(150)
    finally:
        rec.stop()
    # rc 0 means the scenario got its BYE from LiveKit SIP: the agent really hung up.
    assert rc == 0, f"no BYE from the agent's side\n{run.log_tail()}"
    bye = run.first(sent=False, startswith="BYE")
    ack = run.first(sent=True, startswith="ACK")
    assert bye is not None and ack is not None
    t_one = ack.t + 9.0 + 3.4  # see the scenario: pause, then play_dtmf's schedule
    voice = rec.voice_times()
    assert any(t_one < t < t_one + 8 for t in voice), "no spoken acknowledgement after pressing 1"

    report = _wait_report(sip_reports, caller, t_start)
    assert report["phone"]["dtmf"] == ["1", "#"], report["phone"]
    assert report["phone"]["ended_by"] == "caller keypad"
    said = " ".join(_texts(report, "assistant"))
    assert "You pressed 1." in said and "Goodbye" in said, said
    assert _wait_rooms_gone(sip_stack, caller) == []
    print(f"keypad: BYE {bye.t - t_one:.1f}s after '1' was pressed")


def test_spoken_goodbye_hangs_up(sip_stack: SipStack, sip_worker: Worker, sip_reports: Path,
                                 out_dir: Path) -> None:
    """A caller who only says goodbye is answered with a goodbye and a BYE, without the LLM."""
    assert sip_stack.sip is not None
    caller = "+15550204"
    work = out_dir / "sip" / "goodbye"
    work.mkdir(parents=True, exist_ok=True)
    # Spoken by espeak-ng, made 8 kHz G.711 µ-law by sox, as a phone would send it.
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(work / "goodbye-22k.wav"),
                    "Goodbye, thank you."], check=True, timeout=60)
    subprocess.run(["sox", str(work / "goodbye-22k.wav"), "-r", "8000", "-c", "1", "-e", "u-law", "-b", "8",
                    str(work / "goodbye.wav")], check=True, timeout=60)
    stream = caller_stream(wav_ulaw_payload(work / "goodbye.wav"), lead_s=LEAD_S, tail_s=40.0)
    stream_pcap(work / "caller.pcap", stream)
    rec = RtpRecorder().start()
    t_start = time.time()
    try:
        run = sipp("uac_wait_bye.xml", work, name="goodbye", target=f"127.0.0.1:{sip_stack.sip.sip_port}",
                   service=NUMBER, keys={"caller": caller, "rec_port": str(rec.port)}, timeout_s=90,
                   media_port=rec.port + 2)
        rc = run.wait(150)
    finally:
        rec.stop()
    assert rc == 0, f"the agent did not hang up\n{run.log_tail()}"
    ack = run.first(sent=True, startswith="ACK")
    assert ack is not None
    end = ack.t + stream.speech_end_s
    assert any(t > end for t in rec.voice_times()), "no spoken goodbye before the BYE"
    report = _wait_report(sip_reports, caller, t_start)
    assert report["phone"]["ended_by"] == "caller goodbye", (report["phone"], _texts(report, "user"))
    assert _texts(report, "assistant")[-1] == GOODBYE
    assert _wait_rooms_gone(sip_stack, caller) == []


def test_transfer_to_operator(sip_stack: SipStack, sip_worker: Worker, sip_reports: Path,
                              out_dir: Path) -> None:
    """Keypad 0: the agent cold-transfers the caller (SIP REFER to the phone), then the call ends."""
    run, report = _transfer_call(sip_stack, sip_reports, out_dir / "sip" / "transfer", "+15550203")
    if report["phone"]["transfer"].startswith("failed:") and NO_REFER_RESPONSE in report["phone"]["transfer"]:
        # LiveKit SIP (sipgo) now and then ends its REFER transaction as if no response had come
        # although the phone answered 202 at once (seen once in a CI run on a loaded machine, not
        # reproduced on 6 runs under load). The agent reports that as a failed transfer, rightly;
        # a second call tells a flake of the SIP server from a transfer that never works.
        warnings.warn(f"REFER ended without a response, calling again: {report['phone']['transfer']}\n"
                      f"{_sip_log_lines(sip_stack, 'REFER|refer|transfer|NOTIFY')}", stacklevel=1)
        assert _wait_rooms_gone(sip_stack, "+15550203") == []
        run, report = _transfer_call(sip_stack, sip_reports, out_dir / "sip" / "transfer-again", "+15550205")
    refer = run.message_file.read_text(errors="replace")
    assert "Refer-To:" in refer and "15550123" in refer.split("Refer-To:", 1)[1].splitlines()[0]
    assert report["phone"]["dtmf"] == ["0"], report["phone"]
    assert report["phone"]["transfer"] == f"transferred to {OPERATOR}", (
        report["phone"], _sip_log_lines(sip_stack, "REFER|refer|transfer|NOTIFY"))
    assert report["phone"]["ended_by"] == "transfer"
    assert any("Transferring" in t for t in _texts(report, "assistant"))
    assert _wait_rooms_gone(sip_stack, report["phone"]["number"]) == []


# livekit-sip's wording for a client transaction that ended without any SIP response (pkg/sip/errors.go)
NO_REFER_RESPONSE = "transaction failed to complete (0 intermediate responses)"


def _transfer_call(sip_stack: SipStack, sip_reports: Path, work: Path, caller: str) -> tuple[SippRun, dict]:
    """One call of uac_transfer.xml from `caller`: the sipp run (checked) and the call's session report."""
    assert sip_stack.sip is not None
    work.mkdir(parents=True, exist_ok=True)
    stream_pcap(work / "caller.pcap", Stream(bytes([ULAW_SILENCE]) * RATE * 30, 0.0, 0.0))
    rec = RtpRecorder().start()
    t_start = time.time()
    try:
        run = sipp("uac_transfer.xml", work, name="transfer", target=f"127.0.0.1:{sip_stack.sip.sip_port}",
                   service=NUMBER, keys={"caller": caller, "rec_port": str(rec.port)}, timeout_s=90,
                   media_port=rec.port + 2)
        rc = run.wait(150)
    finally:
        rec.stop()
    assert rc == 0, f"no REFER / BYE from the agent's side\n{run.log_tail()}"
    return run, _wait_report(sip_reports, caller, t_start)


def _sip_log_lines(sip_stack: SipStack, pattern: str, limit: int = 20) -> str:
    """The last lines of LiveKit SIP's log matching `pattern`, for a failure message."""
    assert sip_stack.sip is not None
    rx = re.compile(pattern)
    return "\n".join([ln for ln in sip_stack.sip.proc.log().splitlines() if rx.search(ln)][-limit:])


def test_outbound_dial(sip_stack: SipStack, sip_worker: Worker, sip_env: dict[str, str], uas_port: int,
                       sip_reports: Path, out_dir: Path) -> None:
    """parley-dial rings sipp (as the callee); the agent speaks first once it answers."""
    callee = "+15550142"
    work = out_dir / "sip" / "outbound"
    rec = RtpRecorder().start()
    t_start = time.time()
    try:
        run = sipp("uas_answer.xml", work, name="callee", keys={"rec_port": str(rec.port)}, timeout_s=120,
                   local_port=uas_port, media_port=rec.port + 2)
        time.sleep(0.5)
        dial = subprocess.run([str(BIN / "parley-dial"), callee, "--json"], env=sip_env, capture_output=True,
                              text=True, timeout=90, cwd=ROOT)
        assert dial.returncode == 0, f"parley-dial failed: {dial.stderr}\n{run.log_tail()}"
        result = json.loads(dial.stdout)
        assert result["event"] == "answered" and result["sip_call_id"]
        ok = run.first(sent=True, startswith="SIP/2.0 200")
        assert ok is not None
        deadline = time.time() + 30
        while time.time() < deadline and not [t for t in rec.voice_times() if t > ok.t]:
            time.sleep(0.2)
        voice = [t for t in rec.voice_times() if t > ok.t]
        assert voice, "the agent did not speak after the callee answered"
        time.sleep(4.0)  # let the greeting finish
        _delete_room(sip_stack, result["room"])  # hang up from LiveKit's side
        rc = run.wait(60)
    finally:
        rec.stop()
    assert rc == 0, f"the callee never got its BYE\n{run.log_tail()}"
    before_answer = [t for t in rec.voice_times() if t < ok.t]
    assert not before_answer, "the agent spoke before the callee answered"
    print(f"outbound: answered after {result['answered_after_ms']:.0f} ms of dialing, "
          f"first agent voice {(voice[0] - ok.t) * 1000:.0f} ms after the 200 OK")
    report = _wait_report(sip_reports, callee, t_start)
    assert report["phone"]["direction"] == "outbound"
    assert any("calling" in t for t in _texts(report, "assistant")), _texts(report, "assistant")


def test_outbound_busy_leaves_nothing(sip_stack: SipStack, sip_worker: Worker, sip_env: dict[str, str],
                                       uas_port: int, out_dir: Path) -> None:
    """A busy callee: parley-dial says so in one line, exits 1, and no room is left behind."""
    before = set(_rooms(sip_stack))
    run = sipp("uas_busy.xml", out_dir / "sip" / "busy", name="busy", timeout_s=60, local_port=uas_port)
    time.sleep(0.5)
    dial = subprocess.run([str(BIN / "parley-dial"), "+15550143", "--json"], env=sip_env, capture_output=True,
                          text=True, timeout=90, cwd=ROOT)
    assert run.wait(30) == 0, run.log_tail()
    assert dial.returncode == 1, dial.stdout + dial.stderr
    assert json.loads(dial.stdout)["sip_status_code"] == 486
    assert dial.stderr.strip().splitlines() == [dial.stderr.strip()] and "486" in dial.stderr
    assert "Traceback" not in dial.stderr
    assert _wait_rooms_gone(sip_stack, "dial-15550143") == []
    assert set(_rooms(sip_stack)) - before == set()


def test_dial_rejects_bad_number(sip_env: dict[str, str]) -> None:
    p = subprocess.run([str(BIN / "parley-dial"), "call-me-maybe"], env=sip_env, capture_output=True, text=True,
                       timeout=30, cwd=ROOT)
    assert p.returncode == 2
    assert "is not a phone number" in p.stderr and "Traceback" not in p.stderr
