"""Run sipp (Debian sip-tester) scenarios from tests/sip/ and read its message trace."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent

_BLOCK = re.compile(
    r"^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n(?:UDP|TCP) message (sent|received)[^\n]*\n\n([^\r\n]+)",
    re.M,
)


@dataclass(frozen=True)
class Msg:
    t: float  # wall clock (epoch seconds) when sipp sent or received it
    sent: bool
    line: str  # the request or status line

    @property
    def status(self) -> int | None:
        m = re.match(r"SIP/2\.0 (\d{3})", self.line)
        return int(m[1]) if m else None


@dataclass
class SippRun:
    workdir: Path
    name: str
    popen: subprocess.Popen[str]

    @property
    def message_file(self) -> Path:
        return self.workdir / f"{self.name}-messages.log"

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
            raise

    def messages(self) -> list[Msg]:
        try:
            text = self.message_file.read_text(errors="replace")
        except OSError:
            return []
        return [Msg(datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f").timestamp(), d == "sent", line.strip())
                for ts, d, line in _BLOCK.findall(text)]

    def first(self, *, sent: bool, startswith: str) -> Msg | None:
        return next((m for m in self.messages() if m.sent == sent and m.line.startswith(startswith)), None)

    def final_statuses(self) -> list[int]:
        return [s for m in self.messages() if not m.sent and (s := m.status) is not None and s >= 200]

    def log_tail(self) -> str:
        parts = [f"sipp {self.name} rc={self.popen.returncode} (logs in {self.workdir})"]
        for suffix in ("stdout", "errors"):
            f = self.workdir / f"{self.name}-{suffix}.log"
            if f.exists():
                parts.append(f.read_text(errors="replace")[-1200:])
        return "\n".join(parts)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sipp(scenario: str, workdir: Path, *, name: str, target: str | None = None, service: str | None = None,
         keys: dict[str, str] | None = None, duration_ms: int | None = None, timeout_s: int = 90,
         local_port: int | None = None, media_port: int | None = None) -> SippRun:
    """Start one call of `scenario` in the background (cwd `workdir`, where its pcaps are)."""
    binary = shutil.which("sipp")
    if binary is None:
        raise RuntimeError("sipp is not installed (Debian sip-tester; run scripts/install-system-deps.sh)")
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary]
    if target:
        args.append(target)
    args += ["-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1",
             "-p", str(local_port or free_udp_port()), "-m", "1", "-l", "1",
             "-timeout", str(timeout_s), "-timeout_error", "-nostdin",
             "-trace_msg", "-message_file", f"{name}-messages.log",
             "-trace_err", "-error_file", f"{name}-errors.log"]
    if media_port:
        args += ["-mp", str(media_port)]
    if service:
        args += ["-s", service]
    if duration_ms:
        args += ["-d", str(duration_ms)]
    for k, v in (keys or {}).items():
        args += ["-key", k, v]
    # sipp redraws its statistics screen on stdout all call long: a file, not a pipe that fills up.
    with (workdir / f"{name}-stdout.log").open("w") as out:
        popen = subprocess.Popen(args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, text=True)
    return SippRun(workdir, name, popen)
