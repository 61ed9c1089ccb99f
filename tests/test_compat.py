"""The private livekit-agents internals agent/compat.py relies on still exist.

A framework upgrade that moves one fails here, naming the installed version and the
internal, instead of breaking a call at run time."""

from __future__ import annotations

import pytest

from agent import compat


@pytest.mark.parametrize(("where", "owner", "attr"), compat.internals(), ids=lambda v: v if isinstance(v, str) else "")
def test_private_internal_is_still_there(where, owner, attr):
    assert hasattr(owner, attr), (
        f"livekit-agents {compat.FRAMEWORK_VERSION} (Parley tested with {compat.TESTED_WITH}) no longer "
        f"has {where}.{attr}: update agent/compat.py")


def test_installed_framework_is_the_pinned_one():
    assert compat.FRAMEWORK_VERSION == compat.TESTED_WITH, (
        f"livekit-agents {compat.FRAMEWORK_VERSION} is installed; agent/compat.py was checked against "
        f"{compat.TESTED_WITH}: re-check every internal it uses, then update TESTED_WITH")


def test_vad_floor_is_the_frameworks():
    """PARLEY_VAD_MIN_SILENCE is refused below the least the framework's turn detection accepts;
    below it, livekit-agents raises when each call's session starts."""
    from livekit.agents.inference.eot.base import MIN_SILENCE_DURATION_MS

    from agent.settings import VAD_MIN_SILENCE_FLOOR

    assert (MIN_SILENCE_DURATION_MS + 50) / 1000 == VAD_MIN_SILENCE_FLOOR, (
        f"livekit-agents {compat.FRAMEWORK_VERSION} asks a VAD min_silence_duration of at least "
        f"{(MIN_SILENCE_DURATION_MS + 50) / 1000}s beside a streaming turn detector: update agent/settings.py")
