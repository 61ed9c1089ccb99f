"""The telephony stack on loopback: Redis, livekit-server (with that Redis) and livekit-sip.

`python -m harness.sipstack up|down|status` is what `make sip-up` / `make sip-down` run:
the processes start in the background (their own session, so a closed terminal does
not stop them), pid files and logs live in `logs/sip/`. The tests use the same classes
on free ports, so `make test` runs the stack `make sip-up` starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from ops.settings import OpsSettings as Settings
from ops.settings import SettingsError
from ops.sip import SetupError, run_setup

from .devstack import BIN, ROOT, Proc, free_port, wait_port

STATE_DIR = ROOT / "logs" / "sip"


class StackError(RuntimeError):
    """The stack could not start (message is a one-line reason)."""


def _port_of(url: str) -> int:
    return urlparse(url).port or 7880


def udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tcp_port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def redis_answers(port: int) -> bool:
    """Whether a Redis server (any: ours, or a system one) answers PING on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def _spawn(name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> Proc:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = log_path.open("ab")
    popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                             env={**os.environ, **(env or {})}, cwd=ROOT)
    out.close()
    return Proc(name, popen, log_path)


@dataclass
class Redis:
    port: int
    proc: Proc | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, log_dir: Path, timeout: float = 15.0) -> Redis:
        # No persistence: SIP trunks and rules are re-provisioned by `parley-sip setup`.
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--protected-mode", "yes"]
        try:
            self.proc = _spawn("redis", argv, log_dir / f"redis-{self.port}.log")
        except FileNotFoundError:
            raise StackError("redis-server is not installed (run scripts/install-system-deps.sh)") from None
        if not wait_port(self.port, timeout):
            self.stop()
            raise StackError(f"redis-server did not listen on {self.address}: {self.proc.log()[-500:]}")
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


@dataclass
class SipService:
    """livekit-sip: SIP signalling on UDP/TCP 127.0.0.1:<sip_port>, RTP in <rtp_ports>."""

    sip_port: int
    rtp_ports: tuple[int, int]
    ws_url: str
    api_key: str
    api_secret: str
    redis_address: str
    proc: Proc | None = None
    extra_config: str = ""

    def config(self) -> str:
        # nat_1_to_1_ip pins both the signalling and the media address LiveKit SIP
        # announces (Contact, SDP) to loopback instead of the first network interface.
        return (
            f"api_key: {self.api_key}\n"
            f"api_secret: {self.api_secret}\n"
            f"ws_url: {self.ws_url}\n"
            f"redis:\n  address: {self.redis_address}\n"
            f"sip_port: {self.sip_port}\n"
            "listen_ip: 127.0.0.1\n"
            "nat_1_to_1_ip: 127.0.0.1\n"
            "use_external_ip: false\n"
            f"rtp_port: {self.rtp_ports[0]}-{self.rtp_ports[1]}\n"
            # By default livekit-sip refuses calls ("cpu exhausted") above 90 % machine-wide
            # CPU; on a small dev box the agent's own models cross that while it is busy.
            # Capacity is the worker's job (it reports its load to LiveKit), not the bridge's.
            "max_cpu_utilization: 1.0\n"
            "logging:\n  level: info\n" + self.extra_config
        )

    def start(self, log_dir: Path, timeout: float = 30.0) -> SipService:
        binary = BIN / "livekit-sip"
        if not binary.exists():
            raise StackError(f"{binary} is missing: run `make install` (scripts/install-livekit-sip.sh)")
        # The config goes through the environment so the secret never shows in `ps`.
        self.proc = _spawn("livekit-sip", [str(binary)], log_dir / f"livekit-sip-{self.sip_port}.log",
                           env={"SIP_CONFIG_BODY": self.config()})
        if not self.proc.wait_log(r"sip signaling listening on.*\"udp\"", timeout):
            log = self.proc.log()
            self.stop()
            raise StackError(f"livekit-sip did not start on UDP 127.0.0.1:{self.sip_port}:\n{log[-1500:]}")
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


def lk_redis_config(redis_address: str) -> str:
    """The livekit-server config lines that let it reach livekit-sip (psrpc over Redis)."""
    return f"redis:\n  address: {redis_address}\n"


@dataclass
class SipStack:
    """All three processes for a test or benchmark, on free loopback ports."""

    log_dir: Path
    redis: Redis | None = None
    server: object | None = None  # devstack.LiveKitServer
    sip: SipService | None = None
    rtp_ports: tuple[int, int] = field(default=(0, 0))

    @classmethod
    def start(cls, log_dir: Path) -> SipStack:
        from .devstack import LiveKitServer

        stack = cls(log_dir)
        try:
            stack.redis = Redis(free_port()).start(log_dir)
            server = LiveKitServer.create(extra_config=lk_redis_config(stack.redis.address))
            stack.server = server.start(log_dir)
            stack.rtp_ports = _free_udp_range(40)
            stack.sip = SipService(
                sip_port=_free_udp_tcp_port(), rtp_ports=stack.rtp_ports, ws_url=server.url,
                api_key=server.api_key, api_secret=server.api_secret, redis_address=stack.redis.address,
            ).start(log_dir)
        except BaseException:
            stack.stop()
            raise
        return stack

    def stop(self) -> None:
        for part in (self.sip, self.server, self.redis):
            if part is not None:
                part.stop()  # type: ignore[attr-defined]


def _free_udp_tcp_port() -> int:
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        if tcp_port_free(port):
            return port
    raise StackError("no free port for SIP signalling")


def _free_udp_range(size: int) -> tuple[int, int]:
    """A run of `size` free UDP ports in the ephemeral range (best effort: checked, not held)."""
    for _ in range(100):
        base = free_port(socket.SOCK_DGRAM) // 2 * 2
        if base + size > 65535:
            continue
        if all(udp_port_free(p) for p in range(base, base + size)):
            return base, base + size - 1
    raise StackError(f"no run of {size} free UDP ports")


# --- `make sip-up` / `make sip-down` -----------------------------------------------------

def _pid_file(name: str) -> Path:
    return STATE_DIR / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_BINARIES = {"redis": "redis-server", "livekit-server": "livekit-server", "livekit-sip": "livekit-sip"}


def _read_pid(name: str) -> int | None:
    """The pid sip-up recorded, if that process still runs (and is still ours, not a reused pid)."""
    try:
        pid = int(_pid_file(name).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and _BINARIES[name].encode() in cmdline else None


def _lk_server_config(settings: Settings) -> str:
    port = _port_of(settings.livekit_url)
    return (
        f"port: {port}\n"
        "bind_addresses: [127.0.0.1]\n"
        "rtc:\n  tcp_port: 7881\n  udp_port: 7882\n  use_external_ip: false\n  node_ip: 127.0.0.1\n"
        f"keys:\n  {settings.livekit_api_key}: {settings.secret}\n"
        + lk_redis_config(settings.redis_address)
        + "logging:\n  level: info\n"
    )


def _host_port(address: str, what: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        raise StackError(f"{what}={address!r}: the dev stack runs on 127.0.0.1 only (host:port)")
    return "127.0.0.1", int(port)


def up(settings: Settings) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    url = urlparse(settings.livekit_url)
    if url.hostname not in ("127.0.0.1", "localhost"):
        raise StackError(f"LIVEKIT_URL={settings.livekit_url}: sip-up starts a local server on 127.0.0.1 only")
    lk_port = _port_of(settings.livekit_url)
    _, redis_port = _host_port(settings.redis_address, "PARLEY_REDIS_ADDRESS")
    lo, hi = (int(x) for x in settings.sip_rtp_ports.split("-"))
    print(f"==> telephony stack: logs and pid files in {STATE_DIR.relative_to(ROOT)}/")

    if pid := _read_pid("redis"):
        print(f"    redis-server already running (pid {pid}) on {settings.redis_address}")
    elif not tcp_port_free(redis_port) and redis_answers(redis_port):
        # e.g. Debian's redis-server service: any Redis will do, LiveKit keeps its own keys.
        print(f"    using the Redis already answering on {settings.redis_address} (not started by sip-up)")
    else:
        if not tcp_port_free(redis_port):
            raise StackError(f"port {redis_port} is taken by a program that is not Redis: set PARLEY_REDIS_ADDRESS")
        r = Redis(redis_port).start(STATE_DIR)
        _pid_file("redis").write_text(str(r.proc.popen.pid))  # type: ignore[union-attr]
        print(f"    redis-server on {r.address} (pid {r.proc.popen.pid})")  # type: ignore[union-attr]

    if pid := _read_pid("livekit-server"):
        print(f"    livekit-server already running (pid {pid}) on {settings.livekit_url}")
    else:
        if not tcp_port_free(lk_port):
            raise StackError(
                f"a LiveKit server not started by sip-up already listens on 127.0.0.1:{lk_port} "
                "and has no Redis, so SIP cannot reach it: stop it (or `make sip-down`) and retry"
            )
        binary = BIN / "livekit-server"
        if not binary.exists():
            raise StackError(f"{binary} is missing: run `make install`")
        log = STATE_DIR / "livekit-server.log"
        # The config travels in the environment (LIVEKIT_CONFIG) so the secret stays out of `ps`.
        proc = _spawn("livekit-server", [str(binary)], log, env={"LIVEKIT_CONFIG": _lk_server_config(settings)})
        if not wait_port(lk_port, 30):
            proc.stop()
            raise StackError(f"livekit-server did not listen on {lk_port}:\n{proc.log()[-1500:]}")
        _pid_file("livekit-server").write_text(str(proc.popen.pid))
        print(f"    livekit-server on {settings.livekit_url} with Redis {settings.redis_address} "
              f"(pid {proc.popen.pid}, log {log.relative_to(ROOT)})")

    if pid := _read_pid("livekit-sip"):
        print(f"    livekit-sip already running (pid {pid}) on udp 127.0.0.1:{settings.sip_port}")
    else:
        if not udp_port_free(settings.sip_port) or not tcp_port_free(settings.sip_port):
            raise StackError(f"SIP port {settings.sip_port} is taken by another program: set PARLEY_SIP_PORT")
        sip = SipService(
            sip_port=settings.sip_port, rtp_ports=(lo, hi), ws_url=settings.livekit_url,
            api_key=settings.livekit_api_key, api_secret=settings.secret,
            redis_address=settings.redis_address,
        ).start(STATE_DIR)
        assert sip.proc is not None
        _pid_file("livekit-sip").write_text(str(sip.proc.popen.pid))
        print(f"    livekit-sip on udp/tcp 127.0.0.1:{settings.sip_port}, RTP {lo}-{hi} "
              f"(pid {sip.proc.popen.pid}, log {sip.proc.log_path.relative_to(ROOT)})")


def down() -> int:
    stopped = 0
    for name in ("livekit-sip", "livekit-server", "redis"):
        pid = _read_pid(name)
        _pid_file(name).unlink(missing_ok=True)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        print(f"==> stopped {name} (pid {pid})")
        stopped += 1
    if not stopped:
        print("==> telephony stack was not running")
    return stopped


def status() -> bool:
    running = True
    for name in ("redis", "livekit-server", "livekit-sip"):
        pid = _read_pid(name)
        running &= pid is not None
        print(f"{name:15s} {f'running (pid {pid})' if pid else 'stopped'}")
    return running


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.sipstack",
                                description="Start/stop Redis + livekit-server + livekit-sip on loopback.")
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--no-setup", action="store_true", help="up: do not provision trunks and dispatch rule")
    args = p.parse_args(argv)
    try:
        if args.action == "down":
            down()
            return 0
        if args.action == "status":
            return 0 if status() else 1
        settings = Settings.load()
        up(settings)
        if not args.no_setup:
            try:
                asyncio.run(run_setup(settings, quiet=False))
            except SetupError as e:
                print(f"sip-up: provisioning failed: {e}", file=sys.stderr)
                return 1
        print(f"==> ready: call sip:{settings.sip_number}@127.0.0.1:{settings.sip_port} "
              "(start the worker with `.venv/bin/python -m agent start`; stop with `make sip-down`)")
        return 0
    except (StackError, SettingsError) as e:
        print(f"sip-up: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
