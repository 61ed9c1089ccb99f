"""The production worker (agent.worker) with faults injected from outside, for tests only.

Nothing in agent/ knows about this: the worker's own entrypoint is wrapped here, in the
job process, and the faults are put into the third-party runtimes (llama.cpp) or into
the job process itself, so the production code paths under test are the real ones.
Run as `python -m tests.faultworker start` (harness.devstack.Worker(module=...)).

PARLEY_TEST_FAULTS (comma-separated, read only by this module):
- `llm_once`: the first llama.cpp generation in each job process raises RuntimeError.
- `hog:<prefix>`: a job whose room name starts with <prefix> allocates 64 MB every 0.2 s
  (pages written, so they count) until the framework's memory limit kills the process,
  capped at PARLEY_TEST_HOG_CAP_MB (default 6000) so a broken limit cannot take the machine.
"""

from __future__ import annotations

import asyncio
import logging
import os

from livekit.agents import JobContext

from agent import worker as _worker

logger = logging.getLogger("parley.test.faults")

FAULTS = {f.strip() for f in os.environ.get("PARLEY_TEST_FAULTS", "").split(",") if f.strip()}
_real_entrypoint = _worker.entrypoint


def _fail_first_generation() -> None:
    import llama_cpp

    real = llama_cpp.Llama.generate
    state = {"n": 0}

    def generate(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        state["n"] += 1
        if state["n"] == 1:
            raise RuntimeError("injected llama.cpp failure (test)")
        return real(self, *args, **kwargs)

    llama_cpp.Llama.generate = generate  # type: ignore[method-assign]


async def _hog() -> None:
    import numpy as np

    cap_mb = int(os.environ.get("PARLEY_TEST_HOG_CAP_MB", "6000"))
    held = []
    while len(held) * 64 < cap_mb:
        held.append(np.ones(64 * 1024 * 1024, dtype=np.uint8))  # written pages: real footprint
        logger.info("hog holds %d MB", len(held) * 64)
        await asyncio.sleep(0.2)
    await asyncio.Event().wait()


async def entrypoint(ctx: JobContext) -> None:
    if "llm_once" in FAULTS:
        _fail_first_generation()
    hog = [f.split(":", 1)[1] for f in FAULTS if f.startswith("hog:")]
    if hog and ctx.job.room.name.startswith(hog[0]):
        task = asyncio.create_task(_hog())
        ctx.add_shutdown_callback(lambda *_: task.cancel())
    await _real_entrypoint(ctx)


# The framework sends the entrypoint to job processes by reference: this module's function.
_worker.server._entrypoint_fnc = entrypoint  # noqa: SLF001 (test harness only)
