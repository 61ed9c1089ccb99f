"""agent/load.py, the load a worker reports to LiveKit's dispatcher. No processes here:
tests/test_scale.py proves the dispatch with real workers and calls."""

from __future__ import annotations

import threading
import time

import pytest

from agent.load import LoadOptions, WorkerLoad, call_load
from agent.settings import Settings, SettingsError


class _Server:
    """The one attribute of AgentServer the load function reads."""

    def __init__(self, calls: int) -> None:
        self.active_jobs = [object()] * calls


def test_call_slots_stay_below_threshold_until_max_calls():
    opts = LoadOptions(max_calls=3, threshold=0.7, use_cpu=False)
    loads = [call_load(n, opts) for n in range(6)]
    assert loads[0] == 0.0
    assert all(0 < x < opts.threshold for x in loads[1:3]), loads
    assert loads[3:] == [1.0, 1.0, 1.0], "full (and weight 0 for LiveKit) at max_calls"
    assert loads == sorted(loads)


def test_worker_load_counts_calls_without_cpu():
    load = WorkerLoad(LoadOptions(max_calls=2, threshold=0.75, use_cpu=False))
    assert [load(_Server(n)) for n in (0, 1, 2)] == [0.0, 0.375, 1.0]


def test_measured_cpu_counts_when_higher():
    load = WorkerLoad(LoadOptions(max_calls=100, threshold=0.75, use_cpu=True))
    stop = time.monotonic() + 3.0

    def burn() -> None:
        while time.monotonic() < stop:
            sum(i * i for i in range(10_000))

    t = threading.Thread(target=burn)
    t.start()
    try:
        load(_Server(0))  # starts the sampler
        time.sleep(2.0)
        value = load(_Server(0))
    finally:
        t.join()
    assert 0.0 < value <= 1.0, value
    assert value > call_load(0, load.opts)


def test_threshold_is_a_fraction(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PARLEY_LOAD_THRESHOLD", "1.5")
    with pytest.raises(SettingsError, match="PARLEY_LOAD_THRESHOLD"):
        Settings.load()
    monkeypatch.setenv("PARLEY_LOAD_THRESHOLD", "0.75")
    monkeypatch.setenv("PARLEY_MAX_CALLS", "0")
    with pytest.raises(SettingsError, match="PARLEY_MAX_CALLS"):
        Settings.load()
