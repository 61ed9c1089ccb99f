"""`make eval`: start a private stack on free loopback ports, run parley-eval against it, stop it.

    python -m harness.eval.stack [parley-eval arguments]   (default: evals/*.yaml)

WebRTC: livekit-server + one worker. `--transport sip`: Redis + livekit-server + livekit-sip
(harness.sipstack, what `make sip-up` runs), trunks and dispatch rule from `parley-sip setup`,
and the worker. The worker writes its session reports where parley-eval reads them, so the
report shows per-stage figures. parley-eval's exit code is this program's exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..devstack import BIN, ROOT, LiveKitServer, Worker


def _max_concurrency(args: list[str]) -> int:
    values = [b for a, b in zip(args, args[1:], strict=False) if a == "--concurrency"]
    values += [a.split("=", 1)[1] for a in args if a.startswith("--concurrency=")]
    levels = [int(x) for v in values for x in v.split(",") if x.strip().isdigit()]
    return max(levels or [1])


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a.endswith((".yaml", ".yml")) for a in args):
        args = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "evals").glob("*.yaml")) + args
    sip = "--transport=sip" in args or any(a == "--transport" and b == "sip" for a, b in zip(args, args[1:], strict=False))
    work = Path(tempfile.mkdtemp(prefix="parley-eval-stack-"))
    logs, reports = work / "logs", work / "reports"
    reports.mkdir(parents=True)
    stack = None
    server: LiveKitServer | None = None
    worker: Worker | None = None
    try:
        env: dict[str, str] = {}
        if sip:
            from ..sipstack import SipStack

            print(f"==> starting Redis + livekit-server + livekit-sip (logs in {logs})", flush=True)
            stack = SipStack.start(logs)
            server = stack.server  # type: ignore[assignment]
            assert server is not None and stack.sip is not None
            env = {**server.env(), "PARLEY_SIP_PORT": str(stack.sip.sip_port)}
            setup = subprocess.run([str(BIN / "parley-sip"), "setup", "--json"], env={**os.environ, **env},
                                   capture_output=True, text=True, timeout=60, cwd=ROOT)
            if setup.returncode != 0:
                print(f"parley-eval stack: parley-sip setup failed: {setup.stderr.strip()}", file=sys.stderr)
                return 1
        else:
            print(f"==> starting livekit-server (logs in {logs})", flush=True)
            server = LiveKitServer.create().start(logs)
            env = server.env()
        print("==> starting the worker and waiting for its models", flush=True)
        # PARLEY_LOAD_CPU=0: on a shared machine, other programs' CPU must not make the only
        # worker refuse the evaluation's calls (the capacity curve is what measures load).
        # One warm job process per concurrent call, as a deployment sized for that load would keep,
        # and one call slot more than the run places at once: a worker that reports itself full
        # as one batch ends gets the next batch's dispatch only on LiveKit's retry (~30 s later),
        # which would measure admission, not latency under load.
        n = _max_concurrency(args)
        env_worker = {**env, "PARLEY_REPORT_DIR": str(reports), "PARLEY_LOAD_CPU": "0",
                      "PARLEY_IDLE_PROCESSES": str(n), "PARLEY_MAX_CALLS": str(n + 1)}
        worker = Worker(env=env_worker)
        worker.start(logs)
        print(f"==> parley-eval {' '.join(args)}", flush=True)
        p = subprocess.run([str(BIN / "parley-eval"), *args], cwd=ROOT,
                           env={**os.environ, **env, "PARLEY_REPORT_DIR": str(reports)})
        return p.returncode
    except RuntimeError as e:
        print(f"parley-eval stack: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        if worker is not None:
            worker.stop()
        if stack is not None:
            stack.stop()
        elif server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
