"""A small soak (harness/soak.py, what `make soak` runs at full size): a few calls on two
workers with one fault of each kind: a job process SIGKILLed, the cloud LLM failing and
recovering, a worker drained by SIGTERM (and started again), livekit-server restarted."""

from __future__ import annotations

import sys

import pytest

from harness.soak import Soak, format_summary

pytestmark = pytest.mark.e2e


def test_small_soak_with_one_fault_of_each_kind(out_dir, fixtures):
    soak = Soak(calls=5, duration_s=110, concurrency=2, turns=2, call_timeout_s=25,
                out_dir=out_dir / "soak-small",
                # The restart comes before the last call is placed, so that call shows recovery.
                schedule=((0.1, "kill_job"), (0.2, "provider_down"), (0.35, "provider_up"),
                          (0.4, "drain"), (0.6, "lk_restart")),
                log=lambda m: sys.stderr.write(m + "\n"))
    s = soak.run()
    text = format_summary(s)
    sys.stderr.write(text + "\n")
    assert s["calls_placed"] == 5, text
    assert s["calls_answered"] >= 4, text
    assert s["targets"]["every_fault_happened"], text
    assert s["targets"]["no_call_hung"], text
    assert s["targets"]["every_answered_call_has_its_report"], text
    assert s["targets"]["worker_rss_growth_below_10pct"], text
    # The cloud outage is short here (~16 s for 5 calls) and may hold no turn at all, so the small
    # soak checks only that nothing hangs or is lost through it; the local model answering inside
    # an outage is proven by test_cloud_e2e (the same turn) and by `make soak` (10 turns).
    # After the restart of livekit-server, calls are answered again.
    assert s["turns_answered_after_fault"]["lk_restart"] >= 1, text
