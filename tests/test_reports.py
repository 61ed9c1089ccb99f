"""Session report files: atomic, never overwritten, a failed write costs one log line and
leaves nothing behind, retention by count and age. Real files, real OS errors (no mocks)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.report import TurnMetrics, prune_reports, write_report
from harness.devstack import ROOT


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_same_room_same_second_never_overwrites(tmp_path: Path) -> None:
    paths = [write_report(tmp_path, "room-a", {"n": i}, [TurnMetrics(user_text=f"q{i}")]) for i in range(5)]
    assert all(p is not None for p in paths)
    assert len({p.name for p in paths if p}) == 5, paths
    bodies = sorted(json.loads(p.read_text())["n"] for p in paths if p)
    assert bodies == [0, 1, 2, 3, 4]
    assert all(p.name.startswith("room-a-") and p.suffix == ".json" for p in paths if p)
    assert leftovers(tmp_path) == []


def test_unwritable_dir_is_one_error_line_and_no_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "reports"
    blocker.write_text("a file where the directory should be")  # mkdir fails even as root
    with caplog.at_level(logging.INFO, logger="parley.report"):
        assert write_report(blocker / "sub", "room-b", {"x": 1}, []) is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    assert "room-b" in errors[0].getMessage() and "Not a directory" in errors[0].getMessage()
    assert errors[0].exc_info is None  # one line, no traceback


def test_full_disk_leaves_no_temp_file(tmp_path: Path) -> None:
    # A real "file too large" from the kernel (RLIMIT_FSIZE) stands in for a full disk: the
    # write fails part-way, after the temporary file exists.
    code = (
        "import resource, signal, sys, logging\n"
        "from pathlib import Path\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))\n"
        "from agent.report import write_report\n"
        "p = write_report(Path(sys.argv[1]), 'room-c', {'pad': 'x' * 100000}, [])\n"
        "print('RESULT', p)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "RESULT None" in p.stdout, p.stdout + p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "room-c" in errors[0] and "too large" in errors[0], p.stderr
    assert "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_retention_by_count_and_age(tmp_path: Path) -> None:
    now = time.time()
    for i in range(10):
        f = tmp_path / f"old-{i}.json"
        f.write_text("{}")
        os.utime(f, (now - 3600 * (i + 1), now - 3600 * (i + 1)))  # old-0 newest
    ancient = tmp_path / "ancient.json"
    ancient.write_text("{}")
    os.utime(ancient, (now - 40 * 86400, now - 40 * 86400))
    stale_tmp = tmp_path / ".report-dead.json"  # left by a SIGKILLed job
    stale_tmp.write_text("{")
    os.utime(stale_tmp, (now - 7200, now - 7200))
    fresh_tmp = tmp_path / ".report-live.json"  # another job writing right now
    fresh_tmp.write_text("{")

    assert prune_reports(tmp_path, keep=0, max_age_days=30) == 2  # ancient + stale temp
    assert not ancient.exists() and not stale_tmp.exists() and fresh_tmp.exists()

    p = write_report(tmp_path, "room-d", {}, [], keep=4, max_age_days=30)
    assert p is not None
    kept = sorted(f.name for f in tmp_path.glob("*.json") if not f.name.startswith("."))
    assert kept == sorted([p.name, "old-0.json", "old-1.json", "old-2.json"]), kept


def test_retention_by_age_alone(tmp_path: Path) -> None:
    now = time.time()
    for i, days in enumerate((0.5, 2, 3)):
        f = tmp_path / f"r-{i}.json"
        f.write_text("{}")
        os.utime(f, (now - days * 86400, now - days * 86400))
    assert prune_reports(tmp_path, keep=0, max_age_days=1) == 2
    assert [f.name for f in tmp_path.iterdir()] == ["r-0.json"]
