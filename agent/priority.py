"""CPU priority within a job process: low while it loads its models, normal once it has a
call; and the voice before the LLM while a reply is spoken (`VOICE_FIRST`).

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

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
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


class VoiceFirst:
    """While Piper synthesizes a piece of a reply, the LLM writing the reply waits.

    Both want the two cores at once: the LLM goes on writing the rest of the reply while
    Piper makes the piece the caller is waiting to hear. A first clause took Piper 62 ms
    alone and 127 ms beside llama.cpp decoding (median of 15 short clauses on this 2-core
    machine). The LLM's text is far ahead of speech (~25 tokens/s written, ~3 words/s
    spoken), so pausing it for a piece costs the caller nothing; `MAX_WAIT_S` bounds a
    wait should a synthesis hang."""

    MAX_WAIT_S = 0.5

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._speaking = 0
        self._quiet = threading.Event()
        self._quiet.set()

    @contextlib.contextmanager
    def speaking(self) -> Iterator[None]:
        """Around one blocking step of speech synthesis (any thread)."""
        with self._lock:
            self._speaking += 1
            self._quiet.clear()
        try:
            yield
        finally:
            with self._lock:
                self._speaking -= 1
                if not self._speaking:
                    self._quiet.set()

    def wait(self) -> None:
        """Called by a generating LLM between tokens: returns once no synthesis runs."""
        self._quiet.wait(self.MAX_WAIT_S)


# One per process: a job process holds one call's models (interpreter mode: one translator
# shared by every speaker of the room).
VOICE_FIRST = VoiceFirst()
