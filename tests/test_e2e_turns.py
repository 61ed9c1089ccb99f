"""End to end: turn-taking with the offline stack (parley-call -> livekit-server -> worker).

A pause inside a sentence is not the end of the turn; a backchannel while the agent
talks does not stop it. Both are asserted on the session report the worker writes
(what was committed as the caller's turns, whether the reply was interrupted), never
on a timing."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.conftest import wait_report

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def questions(fixtures: Path) -> Path:
    return fixtures.parent / "questions"


def messages(report: dict, role: str) -> list[dict]:
    return [i for i in report["chat_history"]["items"] if i.get("type") == "message" and i.get("role") == role]


def text(item: dict) -> str:
    content = item.get("content") or []
    return " ".join(c for c in content if isinstance(c, str))


def longest_pause(questions: Path, kind: str) -> str:
    """The pause clip with the longest in-sentence silence whose first part ends in `kind`
    punctuation ("," inside a sentence, "." between a preamble and the question)."""
    clips = [c for c in json.loads((questions / "manifest.json").read_text())
             if c["set"] == "pause" and c["pause_s"] and c["pause_after"].rstrip().endswith(kind)]
    return max(clips, key=lambda c: c["pause_s"])["file"]


@pytest.mark.parametrize("kind", [",", "."])
def test_no_reply_at_a_pause_inside_the_turn(call, questions, report_dir, kind):
    room = f"t-pause-{secrets.token_hex(3)}"
    r = call("--room", room, "--audio", str(questions / longest_pause(questions, kind)))
    assert r.rc == 0, r.stderr
    (turn,) = r.turns
    assert turn["agent_text"], turn  # answered once the caller had finished
    report = wait_report(report_dir, room)
    users = messages(report, "user")
    # Answered at the pause, the first half would be a turn of its own (and the agent's
    # reply to it would be cut off by the second half).
    assert len(users) == 1, [text(u) for u in users]
    assert not any(a.get("interrupted") for a in messages(report, "assistant")), messages(report, "assistant")


def test_backchannel_does_not_stop_the_agent(call, fixtures, questions, report_dir):
    room = f"t-backchannel-{secrets.token_hex(3)}"
    r = call("--room", room, "--barge-in", "--barge-in-delay", "1.0",
             "--audio", str(fixtures / "long_question.wav"),
             "--audio", str(questions / "b01_uh_huh.wav"))
    assert r.rc == 0, r.stderr
    report = wait_report(report_dir, room)
    users = messages(report, "user")
    assert len(users) == 1, [text(u) for u in users]  # "uh-huh" was not a turn
    replies = messages(report, "assistant")[1:]  # after the greeting
    assert len(replies) == 1, [text(a) for a in replies]  # nothing answered the "uh-huh"
    # The reply went on after the backchannel: agent audio followed it with no new turn,
    # and the history holds more of the reply than had been said when the caller spoke
    # (1 s of it; at most 5 words a second). A reply still playing when the caller hangs
    # up is marked interrupted by the hang-up, so that flag is not what is checked.
    after = r.turns[-1]
    assert after["agent_audio_s"] and after["agent_audio_s"] > 1.0, after
    assert len(text(replies[0]).split()) > 5 * (1.0 + 1.5), text(replies[0])
