"""scripts/build-llama-wheel.sh: which CPU level's llama.cpp wheel an install uses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build-llama-wheel.sh"
VERSION = "0.3.36"
ZEN4_FLAGS = ("fpu sse2 avx avx2 fma f16c bmi2 avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl "
              "avx512_bf16 avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq")
HASWELL_FLAGS = "fpu sse2 avx avx2 fma f16c bmi2"


def wheel_dir(tmp_path: Path, *, level: str = "auto", flags: str = ZEN4_FLAGS) -> subprocess.CompletedProcess[str]:
    """Run the script with a wheel already built for each level (so nothing compiles)."""
    wheels = tmp_path / "wheels"
    for name in ("x86-64-v3", "avx512-vnni"):
        d = wheels / f"llama-cpp-python-{VERSION}-{name}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"llama_cpp_python-{VERSION}-py3-none-linux_x86_64.whl").write_bytes(b"")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    env = {**os.environ, "PARLEY_WHEEL_DIR": str(wheels), "PARLEY_CPUINFO": str(cpuinfo),
           "PARLEY_LLAMA_CPU": level, "LLAMA_CPP_PYTHON_VERSION": VERSION}
    return subprocess.run(["bash", str(SCRIPT), "/nonexistent/pip"], env=env, capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize(("flags", "level"), [
    (ZEN4_FLAGS, "avx512-vnni"),
    (HASWELL_FLAGS, "x86-64-v3"),
    # AVX512 without VNNI (Skylake-X): the portable build, not one that would fault
    (ZEN4_FLAGS.replace(" avx512_vnni", ""), "x86-64-v3"),
])
def test_auto_picks_the_level_the_cpu_runs(tmp_path: Path, flags: str, level: str):
    done = wheel_dir(tmp_path, flags=flags)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "wheels" / f"llama-cpp-python-{VERSION}-{level}")


def test_a_forced_level_wins_over_the_cpu(tmp_path: Path):
    done = wheel_dir(tmp_path, level="x86-64-v3", flags=ZEN4_FLAGS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"llama-cpp-python-{VERSION}-x86-64-v3")


def test_an_unknown_level_is_one_line_and_builds_nothing(tmp_path: Path):
    done = wheel_dir(tmp_path, level="native")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == "PARLEY_LLAMA_CPU=native: use auto, x86-64-v3 or avx512-vnni"
