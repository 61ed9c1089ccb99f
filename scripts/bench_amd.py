"""Answering-machine detection: accuracy and time to decide over real outbound calls.

One SIP stack (Redis, livekit-server, livekit-sip, a worker, trunks from `parley-sip setup`);
then N calls answered by a machine (five greetings, five espeak-ng voices, beeps at 850-1400 Hz)
and N answered by a person (five short hellos), each placed with `parley-dial` to sipp as
the callee (tests/sip/uas_greeting.xml). Per call: what the report's `phone` section says
(answered_by, amd.decision_ms), and for machines whether the agent's voice started only
after the beep.

  .venv/bin/python scripts/bench_amd.py --calls 10 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.devstack import BIN, Worker  # noqa: E402
from harness.sipstack import SipStack  # noqa: E402
from tests.sip import callee  # noqa: E402
from tests.sip.rtp import RtpRecorder  # noqa: E402
from tests.sip.sipp import free_udp_port, sipp  # noqa: E402

BEEPS = [1000.0, 850.0, 1400.0, 1000.0, 950.0]


def report_for(reports: Path, number: str, since: float, timeout: float = 45.0) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for f in reports.glob("*.json"):
            if f.stat().st_mtime >= since:
                data = json.loads(f.read_text())
                if data.get("phone", {}).get("number") == number:
                    return data
        time.sleep(0.5)
    return None


def delete_room(stack: SipStack, room: str) -> None:
    import asyncio

    from livekit import api

    server = stack.server

    async def go() -> None:
        lk = api.LiveKitAPI(server.url.replace("ws://", "http://"), server.api_key, server.api_secret)  # type: ignore[attr-defined]
        try:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        except api.TwirpError:
            pass
        finally:
            await lk.aclose()

    asyncio.run(go())


def one_call(i: int, kind: str, stack: SipStack, env: dict[str, str], uas_port: int, reports: Path,
             work: Path) -> dict:
    number = f"+1555019{i:02d}" if kind == "machine" else f"+1555029{i:02d}"
    d = work / f"{kind}-{i:02d}"
    voice = callee.VOICES[i % len(callee.VOICES)]
    if kind == "machine":
        audio = callee.machine(d, callee.MACHINE_GREETINGS[i % len(callee.MACHINE_GREETINGS)], voice=voice,
                               beep_hz=BEEPS[i % len(BEEPS)])
    else:
        audio = callee.human(d, callee.HUMAN_GREETINGS[i % len(callee.HUMAN_GREETINGS)], voice=voice)
    callee.write_pcap(d, audio)
    rec = RtpRecorder().start()
    t0 = time.time()
    run = sipp("uas_greeting.xml", d, name="callee", keys={"rec_port": str(rec.port)}, timeout_s=120,
               local_port=uas_port, media_port=rec.port + 2)
    try:
        time.sleep(0.5)
        dial = subprocess.run([str(BIN / "parley-dial"), number, "--json"], env=env, capture_output=True, text=True,
                              timeout=90, cwd=ROOT)
        room = json.loads(dial.stdout).get("room", "") if dial.stdout.startswith("{") else ""
        if kind == "human":
            # A person would talk with the agent; here the test hangs up once it has greeted.
            deadline = time.time() + 20
            while time.time() < deadline:
                ack = run.first(sent=False, startswith="ACK")
                if ack and [t for t in rec.voice_times() if t > ack.t + audio.speech_end_s]:
                    break
                time.sleep(0.2)
            time.sleep(1.0)
            delete_room(stack, room)
        rc = run.wait(120)
    finally:
        rec.stop()
    ack = run.first(sent=False, startswith="ACK")
    report = report_for(reports, number, t0) or {}
    phone = report.get("phone", {})
    amd = phone.get("amd") or {}
    voice_after = [t - ack.t for t in rec.voice_times() if ack and t > ack.t]
    row = {"kind": kind, "i": i, "voice": voice, "answered_by": phone.get("answered_by"),
           "decision_ms": amd.get("decision_ms"), "reason": amd.get("reason"), "sipp_rc": rc,
           "first_agent_voice_s": round(voice_after[0], 2) if voice_after else None}
    if kind == "machine":
        assert audio.beep_end_s is not None
        row["beep_end_s"] = round(audio.beep_end_s, 2)
        row["message_after_beep"] = bool(voice_after) and voice_after[0] > audio.beep_end_s
        row["ended_by"] = phone.get("ended_by")
    else:
        row["hello_end_s"] = round(audio.speech_end_s, 2)
    row["correct"] = row["answered_by"] == kind
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=10, help="calls of each kind")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-amd-") as tmp:
        work = Path(tmp)
        stack = SipStack.start(work / "logs")
        worker = None
        try:
            uas_port = free_udp_port()
            env = {**os.environ, **stack.server.env(), "PARLEY_SIP_OUTBOUND_ADDRESS": f"127.0.0.1:{uas_port}"}  # type: ignore[attr-defined]
            setup = subprocess.run([str(BIN / "parley-sip"), "setup", "--json"], env=env, capture_output=True,
                                   text=True, timeout=60, cwd=ROOT)
            if setup.returncode != 0:
                print(setup.stderr, file=sys.stderr)
                return 1
            reports = work / "reports"
            worker = Worker(env={**env, "PARLEY_REPORT_DIR": str(reports), "PARLEY_IDLE_PROCESSES": "1",
                                 "PARLEY_LOAD_CPU": "0", "PARLEY_METRICS_PORT": "0"})
            worker.start(work / "logs", name="amd-worker")
            for i in range(args.calls):
                for kind in ("machine", "human"):
                    row = one_call(i, kind, stack, env, uas_port, reports, work)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            if worker is not None:
                worker.stop()
            stack.stop()
    summary = {}
    for kind in ("machine", "human"):
        rs = [r for r in rows if r["kind"] == kind]
        ms = sorted(r["decision_ms"] for r in rs if r["decision_ms"] is not None)
        summary[kind] = {
            "calls": len(rs), "correct": sum(r["correct"] for r in rs),
            "decision_ms_median": statistics.median(ms) if ms else None,
            "decision_ms_max": max(ms) if ms else None,
        }
        if kind == "machine":
            summary[kind]["message_after_beep"] = sum(bool(r.get("message_after_beep")) for r in rs)
    print(json.dumps({"summary": summary}), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
