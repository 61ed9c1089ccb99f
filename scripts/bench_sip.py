"""Turn latency on the phone path vs the WebRTC path, measured the same way.

One stack (Redis + livekit-server + livekit-sip + one worker, loopback, free ports),
then alternating rounds of:
- phone: sipp calls the inbound number and sends the question as G.711 µ-law RTP
  (capital_france_8k_ulaw.wav); latency = end of the caller's speech in the RTP stream
  -> first agent RTP packet with voice (decoded RMS > 500) at the phone;
- webrtc: `parley-call --json` plays the same WAV into a room; its turn_latency_ms is
  end of speech in the published track -> first agent audio frame with RMS > 500.
Both use the same worker, models and audio, one call at a time. Prints a table and
the framework's per-stage figures from the session reports; figures, not pass/fail.

    .venv/bin/python scripts/bench_sip.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.devstack import BIN, Worker  # noqa: E402
from harness.sipstack import SipStack  # noqa: E402
from tests.sip.rtp import ULAW_SILENCE, RtpRecorder, caller_stream, stream_pcap, wav_ulaw_payload  # noqa: E402
from tests.sip.sipp import sipp  # noqa: E402

FIXTURES = Path(os.environ.get("PARLEY_FIXTURES", ROOT / "tests" / "fixtures" / "audio"))
CLIP = FIXTURES / "capital_france_8k_ulaw.wav"
# The phone caller speaks LEAD_S after the call is answered; the WebRTC caller plays the
# same bytes after the same silence (after the greeting), so on both paths the question
# comes well after the job started, when the worker's next idle process (spawned at job
# start, loading models) no longer competes for the CPU.
LEAD_S = 9.0
WEBRTC_LEAD_S = 6.0  # parley-call starts its clip after the ~3 s greeting


def phone_turn(stack: SipStack, work: Path, caller: str) -> float | None:
    assert stack.sip is not None
    stream = caller_stream(wav_ulaw_payload(CLIP), lead_s=LEAD_S, tail_s=15.0)
    work.mkdir(parents=True, exist_ok=True)
    stream_pcap(work / "caller.pcap", stream)
    rec = RtpRecorder().start()
    try:
        run = sipp("uac_call.xml", work, name="call", target=f"127.0.0.1:{stack.sip.sip_port}",
                   service="+15550100", keys={"caller": caller, "rec_port": str(rec.port)},
                   duration_ms=int((stream.duration_s - 1) * 1000), timeout_s=120, media_port=rec.port + 2)
        rc = run.wait(180)
    finally:
        rec.stop()
    ack = run.first(sent=True, startswith="ACK")
    if rc != 0 or ack is None:
        print(f"  phone call failed (rc={rc}): {run.log_tail()[-400:]}", file=sys.stderr)
        return None
    end = ack.t + stream.speech_end_s
    reply = [t for t in rec.voice_times() if t > end]
    return round((reply[0] - end) * 1000, 1) if reply else None


def ulaw_wav(path: Path, ulaw: bytes) -> Path:
    """A G.711 µ-law WAV (format tag 7), which parley-call plays like any other."""
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(ulaw)) + ulaw
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def webrtc_turn(server_env: dict[str, str], clip: Path) -> float | None:
    p = subprocess.run([str(BIN / "parley-call"), "--json", "--timeout", "60", "--audio", str(clip)],
                       env={**os.environ, **server_env}, capture_output=True, text=True, timeout=180, cwd=ROOT)
    turns = [json.loads(line) for line in p.stdout.splitlines() if '"event": "turn"' in line]
    if p.returncode != 0 or not turns:
        print(f"  parley-call failed (rc={p.returncode}): {p.stderr[-400:]}", file=sys.stderr)
        return None
    return turns[0]["turn_latency_ms"]


def call_turn(report_dir: Path, since: float, phone: bool, timeout: float = 30.0) -> dict | None:
    """The worker's own figures for the question turn of the call that started at `since`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for f in sorted(report_dir.glob("*.json"), key=lambda f: f.stat().st_mtime):
            if f.stat().st_mtime < since:
                continue
            data = json.loads(f.read_text())
            if ("phone" in data) == phone:
                return next((t for t in data.get("turns", []) if t.get("user_text")), None)
        time.sleep(0.5)
    return None


def summary(name: str, values: list[float | None]) -> str:
    ok = [v for v in values if v is not None]
    if not ok:
        return f"{name:8s} n=0"
    return (f"{name:8s} n={len(ok)}  median {statistics.median(ok):7.0f} ms  min {min(ok):7.0f}  "
            f"max {max(ok):7.0f}  ({', '.join(f'{v:.0f}' for v in ok)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    out = ROOT / "test-output" / "bench-sip"
    reports = out / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    stack = SipStack.start(out / "logs")
    worker = None
    try:
        env = stack.server.env()  # type: ignore[attr-defined]
        setup = subprocess.run([str(BIN / "parley-sip"), "setup", "--json"], env={**os.environ, **env},
                               capture_output=True, text=True, timeout=60, cwd=ROOT)
        if setup.returncode != 0:
            print(setup.stderr, file=sys.stderr)
            return 1
        worker = Worker(env={**env, "PARLEY_REPORT_DIR": str(reports), "PARLEY_LOAD_CPU": "0"})
        worker.start(out / "logs", name="bench-sip-worker")
        webrtc_clip = ulaw_wav(out / "webrtc-question.wav",
                               bytes([ULAW_SILENCE]) * int(WEBRTC_LEAD_S * 8000) + wav_ulaw_payload(CLIP))
        measured: dict[str, list[float | None]] = {"phone": [], "webrtc": []}
        turns: dict[str, list[dict]] = {"phone": [], "webrtc": []}
        for i in range(args.rounds):
            for path in ("phone", "webrtc"):
                t0 = time.time()
                ms = phone_turn(stack, out / f"round{i}", f"+1555030{i}") if path == "phone" else webrtc_turn(env, webrtc_clip)
                turn = call_turn(reports, t0, phone=path == "phone")
                measured[path].append(ms)
                if turn:
                    turns[path].append({**turn, "measured_ms": ms})
                e2e = turn.get("e2e_latency_ms") if turn else None
                print(f"round {i + 1} {path:6s}: {ms} ms as heard; worker e2e {e2e} ms; "
                      f"heard {turn.get('user_text', '?')!r} -> {turn.get('agent_text', '?')[:50]!r}"
                      if turn else f"round {i + 1} {path:6s}: {ms} ms (no report)", flush=True)
        print("\nturn latency: end of caller speech -> first agent voice, as the caller hears it")
        for path in ("phone", "webrtc"):
            print(summary(path, measured[path]))
        keys = ("end_of_utterance_delay_ms", "stt_duration_ms", "llm_ttft_ms", "tts_ttfb_ms", "e2e_latency_ms")
        for path in ("phone", "webrtc"):
            ts = turns[path]
            if not ts:
                continue
            med = {k: statistics.median([t[k] for t in ts if t.get(k) is not None] or [0]) for k in keys}
            # What the transport adds on top of the worker's own end-of-speech -> first-audio figure.
            extra = [t["measured_ms"] - t["e2e_latency_ms"] for t in ts
                     if t.get("measured_ms") is not None and t.get("e2e_latency_ms") is not None]
            print(f"{path:8s} worker stages (median ms): " + "  ".join(f"{k[:-3]}={v:.0f}" for k, v in med.items())
                  + (f"  | transport+playout beyond worker e2e: median {statistics.median(extra):.0f} ms" if extra else ""))
        print(json.dumps({"phone_ms": measured["phone"], "webrtc_ms": measured["webrtc"]}))
        return 0
    finally:
        if worker:
            worker.stop()
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
