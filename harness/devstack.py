"""Start real local processes on loopback: livekit-server and Parley workers.

Used by the tests and the benchmark so both run the same stack `make run` starts,
on free ports so several stacks never collide.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child if the test run that started it dies (no orphans)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_EPHEMERAL_LOW = _ephemeral_low()
_handed_out: set[tuple[int, int]] = set()
_rng = random.Random()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nobody holds, below the kernel's ephemeral range.

    A port from bind(0) comes out of the range the kernel also gives outgoing connections,
    so in the seconds before the process it is meant for binds it, a connection to
    livekit-server could take it (seen in CI: 'metrics port ... is already in use').
    Ports below that range are only ever taken by a bind; never hand one out twice.
    """
    for _ in range(1000):
        port = _rng.randrange(20000, max(_EPHEMERAL_LOW, 20001))
        if (kind, port) in _handed_out:
            continue
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed_out.add((kind, port))
        return port
    with socket.socket(socket.AF_INET, kind) as s:  # a crowded machine: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern: str, timeout: float, *, start: int = 0) -> re.Match[str] | None:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := rx.search(self.log(), start):
                return m
            if self.popen.poll() is not None:
                return rx.search(self.log(), start)
            time.sleep(0.1)
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


@dataclass
class LiveKitServer:
    port: int
    rtc_tcp_port: int
    rtc_udp_port: int
    api_key: str
    api_secret: str
    proc: Proc | None = None
    extra_config: str = ""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def config(self) -> str:
        return (
            f"port: {self.port}\n"
            "bind_addresses: [127.0.0.1]\n"
            "rtc:\n"
            f"  tcp_port: {self.rtc_tcp_port}\n"
            f"  udp_port: {self.rtc_udp_port}\n"
            "  use_external_ip: false\n"
            "  node_ip: 127.0.0.1\n"
            f"keys:\n  {self.api_key}: {self.api_secret}\n"
            "logging:\n  level: info\n" + self.extra_config
        )

    @classmethod
    def create(cls, *, extra_config: str = "") -> LiveKitServer:
        return cls(
            port=free_port(),
            rtc_tcp_port=free_port(),
            rtc_udp_port=free_port(socket.SOCK_DGRAM),
            api_key="parley-" + secrets.token_hex(4),
            api_secret=secrets.token_hex(24),  # hex: a leading "-" would read as a CLI flag
            extra_config=extra_config,
        )

    def start(self, log_dir: Path, timeout: float = 30.0) -> LiveKitServer:
        binary = BIN / "livekit-server"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run `make install`")
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"livekit-server-{self.port}.log"
        out = log_path.open("ab")
        popen = subprocess.Popen(
            [str(binary), "--config-body", self.config()], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        self.proc = Proc("livekit-server", popen, log_path)
        if not wait_port(self.port, timeout):
            self.proc.stop()
            raise RuntimeError(f"livekit-server did not listen on {self.port}:\n{self.proc.log()[-2000:]}")
        return self

    def env(self) -> dict[str, str]:
        return {"LIVEKIT_URL": self.url, "LIVEKIT_API_KEY": self.api_key, "LIVEKIT_API_SECRET": self.api_secret}

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


@dataclass
class Worker:
    env: dict[str, str]
    mode: str = "start"
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)  # PARLEY_METRICS_PORT; env wins
    module: str = "agent"  # tests run the same worker with faults wrapped around it (tests/faultworker)
    proc: Proc | None = None

    def start(self, log_dir: Path, *, name: str = "worker", timeout: float = 180.0,
              wait: bool = True) -> Worker:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}-{self.health_port}.log"
        env = {**os.environ, "PARLEY_METRICS_PORT": str(self.metrics_port), **self.env,
               "PARLEY_HEALTH_PORT": str(self.health_port), "PYTHONUNBUFFERED": "1"}
        self.metrics_port = int(env["PARLEY_METRICS_PORT"] or 0)
        out = log_path.open("ab")
        popen = subprocess.Popen(
            [str(BIN / "python"), "-m", self.module, self.mode], cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )
        self.proc = Proc(name, popen, log_path)
        if not wait:
            return self
        if not self.proc.wait_log(r"registered worker", timeout):
            log, rc = self.proc.log(), self.proc.popen.poll()
            self.proc.stop(signal.SIGKILL)
            why = f"exited (rc {rc})" if rc is not None else f"did not register within {timeout}s"
            raise RuntimeError(f"worker {why}:\n{log[-4000:]}")
        # A call is only as fast as the idle job process that takes it: wait until one is warm.
        self.proc.wait_log(r"local models ready", timeout)
        return self

    def health(self, path: str = "/") -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> str:
        """The worker's /metrics page (Prometheus text format)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        return self.proc.stop(sig, timeout) if self.proc else None


@dataclass
class TokenService:
    """`parley-tokens` (token service + built frontend) on a free loopback port."""

    env: dict[str, str]
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    proc: Proc | None = None
    # /metrics on a free port of its own (PARLEY_TOKEN_METRICS_PORT in env wins; "0" = off),
    # so several services can run side by side.
    metrics_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, log_dir: Path, *, name: str = "parley-tokens", timeout: float = 30.0) -> TokenService:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}-{self.port}.log"
        env = {**os.environ, "PARLEY_TOKEN_METRICS_PORT": str(self.metrics_port), **self.env,
               "PYTHONUNBUFFERED": "1"}
        self.metrics_port = int(env["PARLEY_TOKEN_METRICS_PORT"] or 0)
        out = log_path.open("ab")
        popen = subprocess.Popen(
            [str(BIN / "parley-tokens"), "--host", self.host, "--port", str(self.port)], cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )
        self.proc = Proc(name, popen, log_path)
        if not wait_port(self.port, timeout) or popen.poll() is not None:
            log = self.proc.log()
            self.proc.stop(signal.SIGKILL)
            raise RuntimeError(f"parley-tokens did not listen on {self.port}:\n{log[-2000:]}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        return self.proc.stop(sig, timeout) if self.proc else None


@dataclass
class Call:
    """`parley-call --json` running in the background; every event is kept with the
    monotonic time it arrived, so tests can relate a call's answers to other events
    (a SIGTERM, a crash) while it runs."""

    server: LiveKitServer
    audio: list[Path]
    room: str = field(default_factory=lambda: "call-" + secrets.token_hex(4))
    timeout: float = 60.0
    agent: str | None = None  # None: parley-call's default (PARLEY_AGENT_NAME or "parley")
    popen: subprocess.Popen[str] | None = None
    events: list[tuple[float, dict[str, object]]] = field(default_factory=list)
    stderr: str = ""
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Call:
        cmd = [str(BIN / "parley-call"), "--url", self.server.url, "--api-key", self.server.api_key,
               "--api-secret", self.server.api_secret, "--json", "--room", self.room,
               "--timeout", str(self.timeout)]
        if self.agent:
            cmd += ["--agent", self.agent]
        for clip in self.audio:
            cmd += ["--audio", str(clip)]
        # No preexec_fn: tests start callers while other callers' reader threads run, and a
        # fork with threads must exec at once. A caller ends by itself (its --timeout).
        self.popen = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)

        def read_events(stream: IO[str]) -> None:
            for line in stream:
                if line.startswith("{"):
                    self.events.append((time.monotonic(), json.loads(line)))

        def read_stderr(stream: IO[str]) -> None:
            self.stderr = stream.read()

        assert self.popen.stdout and self.popen.stderr
        self._threads = [threading.Thread(target=read_events, args=(self.popen.stdout,), daemon=True),
                         threading.Thread(target=read_stderr, args=(self.popen.stderr,), daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def wait(self, timeout: float = 240.0) -> int:
        assert self.popen is not None
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            rc = self.popen.wait(5)
        for t in self._threads:
            t.join(5)
        return rc

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def describe(self) -> str:
        """One line for a failure message: what the caller process is doing."""
        if self.popen is None:
            return "not started"
        if self.popen.poll() is not None:
            return f"exited {self.popen.returncode}: {self.stderr.strip()[-500:]}"
        try:
            pid = self.popen.pid
            cmd = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:120]
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError as e:
            return f"running, unreadable: {e}"
        return f"running pid {pid} in {wchan!r}, {len(self.events)} events: {cmd}"

    def of(self, kind: str) -> list[tuple[float, dict[str, object]]]:
        return [(t, e) for t, e in self.events if e.get("event") == kind]

    @property
    def answers(self) -> list[str]:
        return [str(e.get("agent_text") or "") for _, e in self.of("turn")]
