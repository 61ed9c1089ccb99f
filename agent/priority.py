"""CPU priority of a job process: low while it loads its models, normal once it has a call.

The framework keeps `num_idle_processes` job processes warm: the moment a call takes
the idle one, it starts a replacement, which loads Whisper, llama.cpp and Piper (about a
core for several seconds). On 2 cores that load lands on the new call's greeting and
first turn. Loading at nice 10 lets the scheduler give the call the CPU first
(CFS weights 1024 vs 110); the loader still finishes, on what the call leaves.

Linux priorities are per thread, and threads inherit their creator's: model thread pools
created while loading start at nice 10 too, so `restore` resets every thread of the
process. Lowering a nice value needs CAP_SYS_NICE: where the process lacks it (a
non-root container), the job process keeps nice 10, like every other job process on the
node, and only the worker's main process (health, dispatch) stays above them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("parley.priority")

LOADING_NICE = 10


def lower_for_loading() -> None:
    """Call at the start of prewarm, before any model thread pool exists."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, LOADING_NICE)  # Linux: this thread; new threads inherit it
    except OSError as e:
        logger.debug("cannot lower priority: %s", e)


def restore() -> None:
    """Call when a call is assigned: every thread of this process back to nice 0."""
    failed = 0
    try:
        tids = [int(t.name) for t in Path(f"/proc/{os.getpid()}/task").iterdir()]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, 0)
        except OSError:  # no CAP_SYS_NICE, or the thread has exited
            failed += 1
    if failed:
        logger.debug("priority restored on %d of %d threads", len(tids) - failed, len(tids))
