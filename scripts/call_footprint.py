"""Measure what one call costs a worker (CPU, memory), to size Kubernetes pods.

Starts a real livekit-server and one worker on loopback, places N concurrent calls
with parley-call and samples the worker's whole process tree (main process, fork
server, job processes) with psutil. Prints figures, never pass/fail:

    .venv/bin/python scripts/call_footprint.py --calls 1
    .venv/bin/python scripts/call_footprint.py --calls 2 --json

CPU is in cores (1.0 = one core busy). Memory is PSS (shared pages split between the
processes that map them), which is what the pod's cgroup is charged, plus the RSS of
the largest job process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.devstack import BIN, LiveKitServer, Worker  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "audio"
DEFAULT_AUDIO = ["capital_france.wav", "joke_computers.wav"]


@dataclass
class Sample:
    t: float
    cpu_s: float  # cumulative CPU seconds of the whole tree (live processes + reaped ones)
    pss_mb: float
    job_rss_mb: float  # largest single job process


@dataclass
class Sampler:
    root_pid: int
    interval: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _last_cpu: dict[int, float] = field(default_factory=dict)
    _dead_cpu: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _tree(self) -> list[psutil.Process]:
        root = self._procs.setdefault(self.root_pid, psutil.Process(self.root_pid))
        out = [root]
        for child in root.children(recursive=True):
            out.append(self._procs.setdefault(child.pid, child))
        return out

    def sample(self) -> Sample:
        cpu = pss = job_rss = 0.0
        seen: set[int] = set()
        for p in self._tree():
            try:
                t = p.cpu_times()
                used = t.user + t.system
                mem = p.memory_full_info()
                cmd = " ".join(p.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            seen.add(p.pid)
            self._last_cpu[p.pid] = used
            cpu += used
            pss += mem.pss / 2**20
            if "forkserver" in cmd and p.ppid() != self.root_pid:  # a job process
                job_rss = max(job_rss, mem.rss / 2**20)
        for pid in list(self._last_cpu):  # keep the CPU of processes that exited
            if pid not in seen:
                self._dead_cpu += self._last_cpu.pop(pid)
                self._procs.pop(pid, None)
        return Sample(time.monotonic(), cpu + self._dead_cpu, pss, job_rss)

    def run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval)

    def between(self, t0: float, t1: float) -> list[Sample]:
        return [s for s in self.samples if t0 <= s.t <= t1]


def place_call(server: LiveKitServer, audio: list[str], timeout: float) -> dict:
    cmd = [str(BIN / "parley-call"), "--url", server.url, "--api-key", server.api_key,
           "--api-secret", server.api_secret, "--json", "--timeout", str(timeout)]
    for a in audio:
        cmd += ["--audio", str(FIXTURES / a)]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 6, cwd=ROOT)
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return {"rc": p.returncode, "seconds": round(time.monotonic() - t0, 1), "events": events,
            "stderr": p.stderr.strip()[-300:]}


def measure(calls: int, audio: list[str], timeout: float, idle_s: float) -> dict:
    log_dir = Path(tempfile.mkdtemp(prefix="parley-footprint-"))
    server = LiveKitServer.create().start(log_dir)
    worker = Worker(env={**server.env(), "PARLEY_IDLE_PROCESSES": str(calls),
                         "PARLEY_MAX_CALLS": str(calls), "PARLEY_LOAD_CPU": "0",
                         "PARLEY_REPORT_DIR": str(log_dir / "reports")})
    try:
        worker.start(log_dir)
        assert worker.proc is not None
        # wait until every idle job process has loaded its models
        deadline = time.monotonic() + 180
        while worker.proc.log().count("local models ready") < calls and time.monotonic() < deadline:
            time.sleep(0.5)
        sampler = Sampler(worker.proc.popen.pid)
        thread = threading.Thread(target=sampler.run, daemon=True)
        thread.start()
        time.sleep(idle_s)
        idle = sampler.between(0, time.monotonic())
        results: list[dict] = [{} for _ in range(calls)]
        t_start = time.monotonic()

        def one(i: int) -> None:
            results[i] = place_call(server, audio, timeout)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(calls)]
        for th in threads:
            th.start()
            time.sleep(1.0)  # a burst of simultaneous dispatches is not what we measure
        for th in threads:
            th.join()
        t_end = time.monotonic()
        time.sleep(1.0)
        sampler._stop.set()
        thread.join()
        during = sampler.between(t_start, t_end)

        idle_rate = (idle[-1].cpu_s - idle[0].cpu_s) / max(idle[-1].t - idle[0].t, 1e-6)
        wall = during[-1].t - during[0].t
        cpu_s = during[-1].cpu_s - during[0].cpu_s
        # busiest 2-second window: what the cgroup must absorb without throttling the audio
        peak = 0.0
        for i, s in enumerate(during):
            j = next((k for k in range(i, len(during)) if during[k].t - s.t >= 2.0), None)
            if j is not None:
                peak = max(peak, (during[j].cpu_s - s.cpu_s) / (during[j].t - s.t))
        turns = [e for r in results for e in r.get("events", []) if e.get("event") == "turn"]
        return {
            "calls": calls,
            "audio": audio,
            "call_rc": [r.get("rc") for r in results],
            "call_seconds": [r.get("seconds") for r in results],
            "answers": [e.get("agent_text", "")[:60] for e in turns],
            "turn_latency_ms": [e.get("turn_latency_ms") for e in turns],
            "idle_worker_cores": round(idle_rate, 3),
            "cpu_seconds_total": round(cpu_s, 1),
            "cpu_seconds_per_call": round((cpu_s - idle_rate * wall) / calls, 1),
            "avg_cores_during_calls": round(cpu_s / wall, 2),
            "avg_cores_per_call": round((cpu_s / wall - idle_rate) / calls, 2),
            "peak_cores_2s": round(peak, 2),
            "pss_idle_mb": round(idle[-1].pss_mb),
            "pss_peak_mb": round(max(s.pss_mb for s in during)),
            "job_rss_peak_mb": round(max(s.job_rss_mb for s in during)),
            "wall_seconds": round(wall, 1),
            "log_dir": str(log_dir),
        }
    finally:
        worker.stop()
        server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=1, help="concurrent calls on one worker (default 1)")
    p.add_argument("--audio", action="append", help=f"fixture files per call (default {DEFAULT_AUDIO})")
    p.add_argument("--timeout", type=float, default=60.0, help="parley-call --timeout")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle baseline before calling")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    res = measure(args.calls, args.audio or DEFAULT_AUDIO, args.timeout, args.idle)
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>24}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
