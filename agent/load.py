"""The load a worker reports to LiveKit, which decides where calls go.

LiveKit offers a job only to workers whose status is "available", picking among them
weighted by (1 - load); the framework marks a worker full once its load reaches
PARLEY_LOAD_THRESHOLD, and a draining worker is always full.

CPU alone (the framework's default) is a poor capacity signal for voice calls: a call
is nearly idle while the caller talks and bursts while Whisper, llama.cpp and Piper
run, so a CPU-only worker accepts too many calls in a quiet moment and all of them
stutter at the next burst. So a worker counts its calls: with PARLEY_MAX_CALLS calls
(sized from the measured per-call CPU, see the README's deployment section) it reports
full whatever the CPU says. Measured CPU still counts when it is higher (a heavier
model than the one we sized for), unless PARLEY_LOAD_CPU=0: several workers sharing
one host (tests, a laptop) all see that host's CPU and would turn each other away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import compat
from .settings import Settings

if TYPE_CHECKING:
    from livekit.agents import AgentServer


@dataclass(frozen=True)
class LoadOptions:
    max_calls: int  # calls one worker serves at once; at this many it reports full
    threshold: float  # PARLEY_LOAD_THRESHOLD: the load at which the framework stops taking jobs
    use_cpu: bool = True  # also report measured CPU (cgroup-aware) when it is higher

    @classmethod
    def from_settings(cls, settings: Settings) -> LoadOptions:
        return cls(max_calls=settings.max_calls, threshold=settings.load_threshold,
                   use_cpu=settings.load_cpu)


def call_load(calls: int, opts: LoadOptions) -> float:
    """Load from call slots alone: below the threshold until max_calls, then 1.0 (full)."""
    if calls >= opts.max_calls:
        return 1.0
    return opts.threshold * calls / opts.max_calls


class WorkerLoad:
    """`load_fnc` for AgentServer: max(call slots used, measured CPU), in [0, 1]."""

    def __init__(self, opts: LoadOptions) -> None:
        self.opts = opts

    def __call__(self, server: AgentServer) -> float:
        load = call_load(len(server.active_jobs), self.opts)
        if self.opts.use_cpu:
            # The framework's own CPU figure (started on first use, in the main process only).
            load = max(load, compat.default_cpu_load(server))
        return min(load, 1.0)
