"""Latency benchmark: real livekit-server + worker on loopback, driven by parley-call.

    .venv/bin/python scripts/bench.py [--rounds 5] [--files capital_france.wav ...]

Prints, per fixture and overall: median and worst turn latency (end of caller
speech → first agent audio, as the caller hears it), greeting latency, worker
start → registered time, job-process RSS, and the per-stage breakdown from the
session reports the worker wrote. Figures only; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.devstack import BIN, ROOT, LiveKitServer, Worker  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "audio"
DEFAULT_FILES = ["capital_france.wav", "name_memory_2.wav", "weather_tool.wav",
                 "joke_computers.wav", "capital_france_8k_ulaw.wav"]


def pct(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"median {statistics.median(values):.0f} ms, worst {max(values):.0f} ms (n={len(values)})"


def watch_rss(root_pid: int, stop: threading.Event, peak: dict[int, float]) -> None:
    while not stop.is_set():
        try:
            for child in psutil.Process(root_pid).children(recursive=True):
                try:
                    peak[child.pid] = max(peak.get(child.pid, 0.0), child.memory_info().rss / 2**20)
                except psutil.Error:
                    pass
        except psutil.Error:
            return
        stop.wait(0.5)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--files", nargs="*", default=DEFAULT_FILES)
    args = ap.parse_args()

    out = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    server = LiveKitServer.create().start(out)
    reports = out / "reports"
    t0 = time.monotonic()
    worker = Worker(env={**server.env(), "PARLEY_REPORT_DIR": str(reports), "PARLEY_LOAD_CPU": "0"})
    worker.start(out)
    registered_s = time.monotonic() - t0
    assert worker.proc is not None
    stop, peak = threading.Event(), {}
    threading.Thread(target=watch_rss, args=(worker.proc.popen.pid, stop, peak), daemon=True).start()

    greetings: list[float] = []
    per_file: dict[str, list[float]] = {f: [] for f in args.files}
    missed: dict[str, int] = {f: 0 for f in args.files}
    try:
        for r in range(args.rounds):
            for name in args.files:
                cmd = [str(BIN / "parley-call"), "--url", server.url, "--api-key", server.api_key,
                       "--api-secret", server.api_secret, "--json", "--audio", str(FIXTURES / name)]
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT)
                events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
                for ev in events:
                    if ev["event"] == "greeting" and ev["latency_ms"] is not None:
                        greetings.append(ev["latency_ms"])
                    elif ev["event"] == "turn":
                        if ev["turn_latency_ms"] is None:
                            missed[name] += 1
                        else:
                            per_file[name].append(ev["turn_latency_ms"])
                        print(f"round {r + 1} {name}: {ev['turn_latency_ms']} ms  "
                              f"{ev['user_transcript']!r} -> {ev['agent_text'][:70]!r}", flush=True)
                if p.returncode != 0:
                    print(f"round {r + 1} {name}: parley-call failed: {p.stderr.strip()}", flush=True)
        time.sleep(2)
    finally:
        stop.set()
        worker.stop()
        server.stop()

    stages: dict[str, list[float]] = {}
    for path in reports.glob("*.json"):
        for turn in json.loads(path.read_text()).get("turns", []):
            if not turn.get("user_text"):
                continue
            for key in ("end_of_utterance_delay_ms", "transcription_delay_ms", "stt_duration_ms",
                        "llm_ttft_ms", "tts_ttfb_ms", "e2e_latency_ms"):
                if turn.get(key) is not None:
                    stages.setdefault(key, []).append(turn[key])

    print("\n== Parley benchmark (offline stack, this machine) ==")
    print(f"worker start -> registered (incl. first job process warm): {registered_s:.1f} s")
    print(f"greeting latency (join -> first agent audio): {pct(greetings)}")
    everything = [v for vs in per_file.values() for v in vs]
    for name, values in per_file.items():
        print(f"turn latency {name}: {pct(values)}, no answer: {missed[name]}")
    print(f"turn latency ALL: {pct(everything)}")
    for key, values in stages.items():
        print(f"stage {key}: median {statistics.median(values):.0f} ms, worst {max(values):.0f} ms")
    job_rss = [v for v in peak.values() if v > 150]
    print(f"peak RSS per job process: {', '.join(f'{v:.0f} MB' for v in sorted(job_rss))}")
    print(f"logs and reports: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
