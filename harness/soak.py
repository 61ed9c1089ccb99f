"""`make soak`: a bounded soak with faults, on loopback only; it stops by itself.

One livekit-server, two Parley workers (LLM: the OpenAI-compatible fake from
tests/fakes/openai.py, with the local model behind it as fallback), `--calls` calls of
several turns each (`parley-call`, `--concurrency` at a time) spread over `--duration`
seconds, while on a schedule (fractions of the duration):

  kill_job       SIGKILL a job process that is serving a call
  provider_down  the cloud LLM answers HTTP 500 (the local model takes the turns) ...
  provider_up    ... and recovers
  drain          SIGTERM one worker: it drains its calls and exits while the other takes
                 new calls; then it is started again (a rolling update)
  lk_restart     livekit-server stops and starts again on the same ports

Printed at the end: calls placed, answered, reports written, calls that hung, turns
answered after each fault, RSS of the workers at start and end, and the targets (every
answered call has its report, except a call whose job process was SIGKILLed: a killed
process writes nothing; no call hangs past its bound; worker RSS grows < 10 %).
Exit 0 when the targets are met, 1 otherwise.

    python -m harness.soak [--calls 20] [--duration 600] [--concurrency 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .devstack import ROOT, Call, LiveKitServer, Worker

FIXTURES = Path(os.environ.get("PARLEY_FIXTURES", ROOT / "tests" / "fixtures" / "audio"))
CLIPS = ("capital_france.wav", "name_memory_1.wav", "name_memory_2.wav", "count_to_five.wav")
# When each fault happens, as a fraction of the soak's duration.
SCHEDULE: tuple[tuple[float, str], ...] = (
    (0.15, "kill_job"), (0.30, "provider_down"), (0.42, "provider_up"),
    (0.52, "drain"), (0.75, "lk_restart"),
)
RSS_GROWTH_MAX = 0.10


@dataclass
class Fault:
    name: str
    at: float = 0.0  # monotonic time it happened (0 = not yet)
    detail: str = ""


@dataclass
class Placed:
    call: Call
    started: float
    bound_s: float  # past this the caller is hung: killed and counted
    hung: bool = False
    ended: float = 0.0
    rc: int | None = None

    @property
    def answered(self) -> bool:
        return any(e.get("agent_text") or e.get("latency_ms") is not None for _, e in self.call.of("greeting"))

    def answered_turns(self) -> list[float]:
        return [t for t, e in self.call.of("turn") if float(e.get("agent_audio_s") or 0) > 0.2]


@dataclass
class Soak:
    calls: int = 20
    duration_s: float = 600.0
    concurrency: int = 2
    turns: int = 3
    call_timeout_s: float = 30.0
    out_dir: Path = ROOT / "test-output" / "soak"
    schedule: tuple[tuple[float, str], ...] = SCHEDULE
    log: Any = print
    placed: list[Placed] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    rss: dict[str, list[float]] = field(default_factory=dict)
    killed_rooms: set[str] = field(default_factory=set)
    job_peak: dict[int, tuple[float, float]] = field(default_factory=dict)  # pid -> peak (RSS, PSS) MB

    def say(self, msg: str) -> None:
        self.log(f"[soak {time.monotonic() - self._t0:6.1f}s] {msg}")

    # --- processes -----------------------------------------------------------------

    def _worker(self, name: str) -> Worker:
        env = {**self.server.env(), "PARLEY_REPORT_DIR": str(self.reports), "PARLEY_IDLE_PROCESSES": "1",
               "PARLEY_MAX_CALLS": "2", "PARLEY_LOAD_CPU": "0", "PARLEY_DRAIN_TIMEOUT": "150",
               "PARLEY_LLM": "openai", "OPENAI_API_KEY": "sk-soak", "OPENAI_BASE_URL": self.fake.base_url,
               "PARLEY_LLM_MODEL": "soak-llm", "PARLEY_FALLBACK_TIMEOUT": "3"}
        return Worker(env=env).start(self.out_dir / "logs", name=name)

    @staticmethod
    def _rss_mb(w: Worker) -> float:
        try:
            return psutil.Process(w.proc.popen.pid).memory_info().rss / 2**20 if w.proc else 0.0
        except psutil.Error:
            return 0.0

    def _job_pid(self, w: Worker) -> tuple[int, str] | None:
        """A job process of `w` serving a call that is still running (from its JSON log)."""
        if w.proc is None:
            return None
        running = {p.call.room for p in self.placed if p.call.running() and p.call.of("greeting")}
        for line in reversed(w.proc.log().splitlines()):
            if line.startswith("{") and '"call dispatched' in line:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                room = str(r.get("room") or "")  # the job's log context field
                if room in running and psutil.pid_exists(int(r["pid"])):
                    return int(r["pid"]), room
        return None

    def _sample_jobs(self) -> None:
        """Peak RSS and PSS (what the framework's memory limit measures) of every job process."""
        for w in self.workers.values():
            if w.proc is None or w.proc.popen.poll() is not None:
                continue
            try:
                kids = psutil.Process(w.proc.popen.pid).children(recursive=True)
            except psutil.Error:
                continue
            for k in kids:
                try:
                    m = k.memory_full_info()
                except psutil.Error:
                    continue
                if m.rss < 200 * 2**20:  # the forkserver and helpers, not a job process with models
                    continue
                rss, pss = self.job_peak.get(k.pid, (0.0, 0.0))
                self.job_peak[k.pid] = (max(rss, m.rss / 2**20), max(pss, getattr(m, "pss", 0) / 2**20))

    # --- faults --------------------------------------------------------------------

    def _fault(self, name: str) -> str:
        if name == "kill_job":
            for w in self.workers.values():
                if found := self._job_pid(w):
                    pid, room = found
                    os.kill(pid, signal.SIGKILL)
                    self.killed_rooms.add(room)
                    return f"SIGKILL job pid {pid} (room {room})"
            return ""  # no call in progress yet: the main loop tries again
        if name == "provider_down":
            self.fake.llm_mode = "http500"
            return "cloud LLM answers HTTP 500"
        if name == "provider_up":
            self.fake.llm_mode = "ok"
            return "cloud LLM answers again"
        if name == "drain":
            w = self.workers["worker-a"]
            self.rss["worker-a"].append(self._rss_mb(w))
            assert w.proc is not None
            w.proc.popen.send_signal(signal.SIGTERM)
            self._draining = w
            return f"SIGTERM worker-a (pid {w.proc.popen.pid}); worker-b takes new calls"
        if name == "lk_restart":
            live = [w for w in self.workers.values() if w.proc is not None and w.proc.popen.poll() is None]
            before = [w.proc.log().count("registered worker") for w in live if w.proc]
            self.server.stop()
            self.server.start(self.out_dir / "logs")
            up = time.monotonic()
            # The next calls need workers: wait (bounded) until each has registered again.
            deadline = up + 60
            while time.monotonic() < deadline and any(
                    w.proc is not None and w.proc.log().count("registered worker") <= n for w, n in zip(live, before, strict=True)):
                time.sleep(0.2)
            return (f"livekit-server stopped and started on the same ports; workers registered again "
                    f"{time.monotonic() - up:.1f} s after it listened")
        raise ValueError(name)

    def _check_drain(self) -> None:
        """Once the drained worker has exited, start it again (a rolling update)."""
        w = self._draining
        if w is None or w.proc is None or w.proc.popen.poll() is None:
            return
        self._draining = None
        self.say(f"worker-a drained and exited {w.proc.popen.returncode}; starting it again")
        self.workers["worker-a"] = self._worker("worker-a2")
        self.rss["worker-a2"] = [self._rss_mb(self.workers["worker-a"])]

    # --- the run -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from tests.fakes.openai import OpenAIFake  # the cloud provider stand-in, loopback only

        self._t0 = time.monotonic()
        self._draining: Worker | None = None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.reports = self.out_dir / "reports"
        self.reports.mkdir(exist_ok=True)
        clips = [FIXTURES / c for c in CLIPS]
        self.fake = OpenAIFake().start()
        self.server = LiveKitServer.create().start(self.out_dir / "logs")
        self.workers: dict[str, Worker] = {}
        try:
            for name in ("worker-a", "worker-b"):
                self.workers[name] = self._worker(name)
            time.sleep(2)  # idle job processes finish warming before the first RSS sample
            for name, w in self.workers.items():
                self.rss[name] = [self._rss_mb(w)]
            self.say(f"stack up: livekit-server :{self.server.port}, 2 workers, fake cloud LLM :{self.fake.port}")
            start = time.monotonic()
            pending = [Fault(n) for _, n in self.schedule]
            due = [start + f * self.duration_s for f, _ in self.schedule]
            spacing = self.duration_s / max(1, self.calls / self.concurrency) * 0.85
            next_slot = [start] * self.concurrency
            hard_end = start + self.duration_s * 1.5 + 300
            last_sample = 0.0
            while time.monotonic() < hard_end:
                now = time.monotonic()
                for i, f in enumerate(pending):
                    if not f.at and now >= due[i]:
                        detail = self._fault(f.name)
                        if not detail and now < due[i] + 60:
                            continue  # not possible yet (no call to kill): next round
                        f.at, f.detail = time.monotonic(), detail or "no call in progress within 60 s"
                        self.faults.append(f)
                        self.say(f"fault {f.name}: {f.detail}")
                self._check_drain()
                if now - last_sample >= 5.0:
                    last_sample = now
                    self._sample_jobs()
                for p in self.placed:
                    if p.ended:
                        continue
                    if not p.call.running():
                        p.ended, p.rc = time.monotonic(), p.call.wait(5)
                        self.say(f"call {p.call.room} ended rc={p.rc} answered={p.answered} "
                                 f"turns={len(p.answered_turns())}/{self.turns}")
                    elif time.monotonic() - p.started > p.bound_s:
                        p.hung, p.ended = True, time.monotonic()
                        p.rc = p.call.wait(0.1)  # kills it
                        self.say(f"call {p.call.room} HUNG past {p.bound_s:.0f}s: killed")
                active = [p for p in self.placed if not p.ended]
                if len(self.placed) < self.calls and len(active) < self.concurrency:
                    slot = min(range(self.concurrency), key=lambda i: next_slot[i])
                    if now >= next_slot[slot]:
                        n = len(self.placed)
                        turn_clips = [clips[(n + k) % len(clips)] for k in range(self.turns)]
                        c = Call(self.server, turn_clips, room=f"soak-{n:02d}-{int(time.time())}",
                                 timeout=self.call_timeout_s).start()
                        bound = self.call_timeout_s * (2 + self.turns) + 30 * self.turns
                        self.placed.append(Placed(c, time.monotonic(), bound))
                        next_slot[slot] = max(now, next_slot[slot]) + spacing
                        self.say(f"call {c.room} placed ({n + 1}/{self.calls})")
                if (len(self.placed) >= self.calls and not any(not p.ended for p in self.placed)
                        and all(f.at for f in pending)):
                    break
                time.sleep(0.5)
            for p in self.placed:
                if not p.ended:
                    p.hung, p.ended, p.rc = True, time.monotonic(), p.call.wait(0.1)
            # Reports are written at job shutdown: give the last ones a moment.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self._missing_reports():
                time.sleep(0.5)
            for name, w in self.workers.items():
                key = "worker-a2" if name == "worker-a" and "worker-a2" in self.rss else name
                self.rss[key].append(self._rss_mb(w))
            return self.summary()
        finally:
            for w in self.workers.values():
                w.stop(timeout=30)
            if self._draining is not None:
                self._draining.stop(signal.SIGKILL, timeout=5)
            self.server.stop()
            self.fake.stop()

    def _missing_reports(self) -> list[str]:
        return [p.call.room for p in self.placed
                if p.answered and p.call.room not in self.killed_rooms
                and not list(self.reports.glob(f"{p.call.room}-*.json"))]

    def summary(self) -> dict[str, Any]:
        answered = [p for p in self.placed if p.answered]
        reports = sorted({f.name.rsplit("-", 1)[0] for f in self.reports.glob("soak-*.json")})
        after: dict[str, int] = {}
        marks = sorted(f.at for f in self.faults)
        for f in self.faults:
            nxt = min((t for t in marks if t > f.at), default=float("inf"))
            after[f.name] = sum(1 for p in self.placed for t in p.answered_turns() if f.at <= t < nxt)
        rss = {k: [round(v, 1) for v in vals] for k, vals in self.rss.items()}
        growth = {k: (v[-1] - v[0]) / v[0] for k, v in self.rss.items() if len(v) >= 2 and v[0] > 0}
        missing = self._missing_reports()
        hung = [p.call.room for p in self.placed if p.hung]
        targets = {
            "every_answered_call_has_its_report": not missing,
            "no_call_hung": not hung,
            "worker_rss_growth_below_10pct": all(g < RSS_GROWTH_MAX for g in growth.values()),
            "every_fault_happened": len(self.faults) == len(self.schedule)
                                    and not any(f.detail.startswith("no call") for f in self.faults),
        }
        return {
            "calls_placed": len(self.placed),
            "calls_answered": len(answered),
            "reports_written": len(reports),
            "answered_without_report": missing,
            "killed_job_rooms": sorted(self.killed_rooms),
            "calls_hung": hung,
            "turns_answered": sum(len(p.answered_turns()) for p in self.placed),
            "turns_placed": self.turns * len(self.placed),
            "turns_answered_after_fault": after,
            "faults": [{"name": f.name, "at_s": round(f.at - self._t0, 1), "detail": f.detail} for f in self.faults],
            "worker_rss_mb": rss,
            "worker_rss_growth": {k: round(v, 4) for k, v in growth.items()},
            "job_processes_sampled": len(self.job_peak),
            "job_peak_rss_mb": _spread([r for r, _ in self.job_peak.values()]),
            "job_peak_pss_mb": _spread([p for _, p in self.job_peak.values()]),
            "targets": targets,
            "ok": all(targets.values()),
            "wall_s": round(time.monotonic() - self._t0, 1),
        }


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)
    return {"median": round(v[len(v) // 2], 1), "max": round(v[-1], 1)}


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"calls placed:    {s['calls_placed']}",
        f"calls answered:  {s['calls_answered']}",
        f"reports written: {s['reports_written']}"
        + (f"  (answered without a report: {s['answered_without_report']})" if s["answered_without_report"] else "")
        + (f"  (SIGKILLed job, no report possible: {s['killed_job_rooms']})" if s["killed_job_rooms"] else ""),
        f"calls hung:      {len(s['calls_hung'])} {s['calls_hung'] or ''}".rstrip(),
        f"turns answered:  {s['turns_answered']} of {s['turns_placed']}",
        "turns answered after each fault (until the next one):",
        *[f"  {f['at_s']:7.1f}s {f['name']:<14} {s['turns_answered_after_fault'].get(f['name'], 0):3d}   {f['detail']}"
          for f in s["faults"]],
        "worker RSS (MB), start -> end:",
        *[f"  {k:<10} {' -> '.join(str(v) for v in vals)}"
          + (f"  ({s['worker_rss_growth'][k] * 100:+.1f} %)" if k in s["worker_rss_growth"] else "")
          for k, vals in s["worker_rss_mb"].items()],
        f"job processes ({s['job_processes_sampled']} sampled), peak RSS MB {s['job_peak_rss_mb']}, "
        f"peak PSS MB {s['job_peak_pss_mb']}",
        "targets: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in s["targets"].items()),
        f"wall time: {s['wall_s']} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds over which calls are placed")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--turns", type=int, default=3, help="caller turns per call")
    ap.add_argument("--out", type=Path, default=ROOT / "test-output" / f"soak-{int(time.time())}")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    a = ap.parse_args(argv)
    if a.calls < 1 or a.concurrency < 1 or a.turns < 1 or a.duration <= 0:
        print("soak: --calls, --concurrency, --turns and --duration must be positive", file=sys.stderr)
        return 2
    soak = Soak(calls=a.calls, duration_s=a.duration, concurrency=a.concurrency, turns=a.turns, out_dir=a.out,
                log=lambda m: print(m, flush=True))
    s = soak.run()
    print("\n" + format_summary(s), flush=True)
    if a.json:
        a.json.write_text(json.dumps(s, indent=2))
    return 0 if s["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
