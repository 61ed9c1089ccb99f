"""Prometheus metrics of the worker, aggregated over its job processes.

Every call runs in its own job process, and a job process exits when its call ends (or
is killed). The metrics therefore use prometheus_client's multiprocess mode: each process
writes its values to memory-mapped files in one directory (the framework's public
`AgentServer(prometheus_multiproc_dir=...)` option sets PROMETHEUS_MULTIPROC_DIR before the
job processes start and empties the directory at start-up), and the worker's main process
serves `/metrics` on PARLEY_METRICS_PORT by reading them all. Why files rather than
sending each value to the main process over the framework's IPC: a value is on disk (in
the page cache) the moment it is recorded, so a call's counters survive its process being
SIGKILLed or OOM-killed mid-call, and the IPC channel is private framework API.

Two things plain multiprocess mode gets wrong for a worker that starts one process per
call, both fixed by `Compactor`, which runs in the main process before every scrape:
- a "live" gauge (`parley_calls_active`) of a process killed mid-call would stay at 1
  forever: the files of dead processes' live gauges are removed (`mark_process_dead`);
- every finished call leaves its files behind, so a scrape would read thousands of
  files after a day: counters and histograms of dead processes are summed into one
  archive file per type and their files deleted, keeping the scrape O(live processes).

Labels are bounded: stages, outcomes, providers, error kinds; never rooms or identities.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.mmap_dict import MmapedDict

logger = logging.getLogger("parley.metrics")

# Stages of a turn, in the order a reply goes through them; `listener` is measured by the
# caller's side (web app, parley-call) and sent back to the agent over the room.
STAGES = ("end_of_utterance", "stt", "llm_ttft", "tts_ttfb", "e2e", "listener")
OUTCOMES = ("completed", "caller_hangup", "agent_ended", "error", "rejected")
# 50 ms .. 10 s: turn latencies of a 2-core CPU pipeline land between 0.1 and 3 s; the
# budget (PARLEY_LATENCY_BUDGET_MS, 1.5 s by default) sits on a bucket boundary.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)

CALLS_ACTIVE = Gauge(
    "parley_calls_active", "Calls in progress on this worker (one per busy job process)",
    multiprocess_mode="livesum",
)
CALLS_TOTAL = Counter("parley_calls", "Calls ended, by how they ended", ["outcome"])
TURN_LATENCY = Histogram(
    "parley_turn_latency_seconds",
    "Per-turn latency by stage: end_of_utterance (end of speech to turn committed), stt, "
    "llm_ttft, tts_ttfb, e2e (end of speech to first agent audio, server side), listener "
    "(end of speech to agent audio audible at the caller, measured by the caller)",
    ["stage"], buckets=LATENCY_BUCKETS,
)
BUDGET_EXCEEDED = Counter(
    "parley_turn_budget_exceeded", "Turns over PARLEY_LATENCY_BUDGET_MS, by their slowest stage", ["stage"])
FALLBACKS = Counter(
    "parley_fallbacks", "A cloud provider failed and the local one took over", ["stage", "provider"])
INTERRUPTIONS = Counter("parley_interruptions", "Agent replies cut off by the caller (barge-in)")
ERRORS = Counter(
    "parley_errors", "Errors the session reported during calls, by the failing model (stt, llm, tts, ...)", ["kind"])
JOB_RSS = Gauge(
    "parley_job_rss_bytes", "Resident memory of the largest live job process",
    multiprocess_mode="livemax",
)

# Stages a turn over budget can be blamed on (TurnMetrics.stages(); e2e when none is known).
BUDGET_STAGES = ("end_of_utterance", "stt", "llm_ttft", "tts_ttfb", "network", "e2e")
ERROR_KINDS = ("stt", "llm", "tts", "realtimemodel", "other")

# Pre-create every bounded label value: a series that exists at 0 makes increase() count
# its first event (a series born at 1 counts nothing) and dashboards show 0, not "no data".
# (parley_fallbacks_total's provider values depend on the configured cloud providers.)
for _stage in STAGES:
    TURN_LATENCY.labels(stage=_stage)
for _outcome in OUTCOMES:
    CALLS_TOTAL.labels(outcome=_outcome)
for _stage in BUDGET_STAGES:
    BUDGET_EXCEEDED.labels(stage=_stage)
for _kind in ERROR_KINDS:
    ERRORS.labels(kind=_kind)


# --- recording (job processes) ------------------------------------------------------------


def call_started() -> None:
    CALLS_ACTIVE.inc()
    sample_rss()


def call_ended(outcome: str) -> None:
    CALLS_ACTIVE.dec()
    CALLS_TOTAL.labels(outcome=outcome if outcome in OUTCOMES else "error").inc()


def observe_stage(stage: str, ms: float | None) -> None:
    if ms is not None and ms >= 0 and stage in STAGES:
        TURN_LATENCY.labels(stage=stage).observe(ms / 1000.0)


def budget_exceeded(stage: str) -> None:
    BUDGET_EXCEEDED.labels(stage=stage if stage in BUDGET_STAGES else "e2e").inc()


def fallback(stage: str, provider: str) -> None:
    FALLBACKS.labels(stage=stage, provider=provider).inc()


def interruption() -> None:
    INTERRUPTIONS.inc()


def error(kind: str) -> None:
    ERRORS.labels(kind=kind if kind in ERROR_KINDS else "other").inc()


def sample_rss() -> None:
    try:
        JOB_RSS.set(psutil.Process().memory_info().rss)
    except psutil.Error:  # /proc unreadable (hardened container): leave the last value
        pass


# --- serving (main process) ---------------------------------------------------------------

_ADDITIVE = ("counter", "histogram", "summary")


def _pid_of(path: str) -> int | None:
    stem = os.path.basename(path)[: -len(".db")]
    tail = stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Compactor:
    """Folds the files of exited job processes into per-type archive files (see module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def dead_files(self) -> Iterator[tuple[str, int]]:
        for f in glob.glob(str(self.path / "*.db")):
            pid = _pid_of(f)
            if pid is not None and pid != os.getpid() and not _alive(pid):
                yield f, pid

    def compact(self) -> int:
        """Returns how many files were folded or removed."""
        done = 0
        with self._lock:
            for f, pid in list(self.dead_files()):
                typ = os.path.basename(f).split("_", 1)[0]
                try:
                    if typ in _ADDITIVE:
                        self._fold(f, typ)
                        os.remove(f)
                    elif typ == "gauge" and os.path.basename(f).split("_")[1].startswith("live"):
                        multiprocess.mark_process_dead(pid, str(self.path))
                    else:
                        continue  # max/min/all/sum gauges keep dead processes' values by design
                    done += 1
                except FileNotFoundError:
                    continue
        return done

    def _fold(self, f: str, typ: str) -> None:
        archive = MmapedDict(str(self.path / f"{typ}_archive.db"))
        try:
            for key, value, timestamp, _pos in MmapedDict.read_all_values_from_file(f):
                old, _ = archive.read_value(key)
                archive.write_value(key, old + value, timestamp)
        finally:
            archive.close()


class _FilesCollector:
    """What `/metrics` returns: every process's values, read afresh after compaction."""

    def __init__(self, path: Path) -> None:
        self.compactor = Compactor(path)
        self._reader = multiprocess.MultiProcessCollector(None, path=str(path))

    def collect(self) -> Any:
        self.compactor.compact()
        return self._reader.collect()


class WorkerCollector:
    """The main process's own figures, computed at scrape time: capacity (for the capacity
    alert and the dashboard) and drain state (for the drain-stuck alert)."""

    def __init__(self, *, draining: Callable[[], bool], capacity: int, drain_timeout: float) -> None:
        self._draining, self.capacity, self.drain_timeout = draining, capacity, drain_timeout
        self._since: float | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        draining = bool(self._draining())
        if draining and self._since is None:
            self._since = time.monotonic()
        seconds = time.monotonic() - self._since if draining and self._since is not None else 0.0
        yield GaugeMetricFamily("parley_worker_capacity_calls", "Calls this worker takes at once (PARLEY_MAX_CALLS)",
                                value=self.capacity)
        yield GaugeMetricFamily("parley_worker_draining", "1 while the worker drains (SIGTERM received)",
                                value=int(draining))
        yield GaugeMetricFamily("parley_worker_draining_seconds", "Seconds since the worker started draining (0: not)",
                                value=round(seconds, 1))
        yield GaugeMetricFamily("parley_worker_drain_timeout_seconds", "PARLEY_DRAIN_TIMEOUT",
                                value=self.drain_timeout)


class MetricsServer:
    """`/metrics` on PARLEY_METRICS_HOST:PARLEY_METRICS_PORT in the worker's main process."""

    def __init__(self, path: Path, host: str, port: int, *, worker: WorkerCollector | None = None) -> None:
        self.path, self.host, self.port = path, host, port
        self.worker = worker
        self._httpd: Any = None
        self._stop = threading.Event()

    def start(self) -> None:
        from prometheus_client import start_http_server

        self.path.mkdir(parents=True, exist_ok=True)
        files = _FilesCollector(self.path)
        registry = CollectorRegistry()
        registry.register(files)
        if self.worker is not None:
            registry.register(self.worker)
        self._httpd, _thread = start_http_server(self.port, addr=self.host, registry=registry)
        # Compact also between scrapes, so a worker nobody scrapes keeps few files.
        threading.Thread(target=self._compact_every, args=(files.compactor, 60.0),
                         name="parley-metrics-compact", daemon=True).start()
        logger.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def _compact_every(self, compactor: Compactor, period: float) -> None:
        while not self._stop.wait(period):
            try:
                compactor.compact()
            except Exception:
                logger.exception("metrics compaction failed")

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


def default_dir() -> Path:
    """Per worker process: two workers on one machine never share (or wipe) each other's files."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"parley-metrics-{os.getpid()}"


# Text stream topics between the agent and the caller's side (web app, parley-call).
# Caller → agent: {"seq": n, "listener_latency_ms": ms} once agent audio is audible.
LISTENER_TOPIC = "parley.listener"
# Agent → caller: each finished turn's stages, {"seq", "index", "stages", "e2e_ms", ...}.
TURN_TOPIC = "parley.turn"
