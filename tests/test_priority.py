"""Fast layer: a job process loads its models at low CPU priority and serves a call at
normal priority (agent/priority.py), thread by thread as Linux schedules them."""

from __future__ import annotations

import os
import threading

import pytest

from agent import priority


def nice_of(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def test_loading_threads_are_lowered_and_a_call_restores_them():
    seen: dict[str, int] = {}
    release, started, loaded = threading.Event(), threading.Event(), threading.Event()

    def pool_thread() -> None:  # a model's thread pool, created while loading
        seen["pool_tid"] = threading.get_native_id()
        started.set()
        release.wait(10)

    def loader() -> None:  # prewarm
        priority.lower_for_loading()
        seen["loader"] = nice_of(0)
        t = threading.Thread(target=pool_thread)
        t.start()
        started.wait(10)
        seen["pool"] = nice_of(seen["pool_tid"])
        loaded.set()
        t.join()

    t = threading.Thread(target=loader)
    t.start()
    loaded.wait(10)
    try:
        assert seen["loader"] == priority.LOADING_NICE and seen["pool"] == priority.LOADING_NICE
        if os.geteuid() != 0:
            pytest.skip("restoring nice 0 needs CAP_SYS_NICE")
        priority.restore()
        assert nice_of(seen["pool_tid"]) == 0
    finally:
        release.set()
        t.join()
