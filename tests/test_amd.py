"""Answering-machine detection's pure parts: the decision rules and the beep detector
(no models, no processes; the real calls are in test_amd_sip.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from agent.amd import AmdDecider, BeepDetector, machine_phrase
from tests.conftest import FIXTURES

RATE = 16000


def tone(hz: float, seconds: float, amp: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


@pytest.mark.parametrize("hz", [440.0, 850.0, 1000.0, 1400.0, 2000.0])
def test_beep_is_found_with_its_start_end_and_pitch(hz: float) -> None:
    events = BeepDetector().push(np.concatenate([quiet(0.5), tone(hz, 0.4), quiet(0.5)]), 0.0)
    kinds = [e[0] for e in events]
    assert kinds == ["start", "end"], events
    (_, start, f0), (_, end, _) = events
    assert abs(start - 0.5) <= 0.04 and abs(end - 0.9) <= 0.04, events
    assert abs(f0 - hz) <= 25, events


def test_too_short_or_too_quiet_or_noisy_tone_is_no_beep() -> None:
    rng = np.random.default_rng(1)
    assert BeepDetector().push(np.concatenate([quiet(0.2), tone(1000, 0.08), quiet(0.3)]), 0.0) == []
    assert BeepDetector().push(tone(1000, 0.5, amp=100.0), 0.0) == []
    noise = (rng.normal(0, 3000, int(RATE * 1.0))).astype(np.int16)
    assert BeepDetector().push(noise, 0.0) == []
    # A tone under loud noise is not a clean beep either (half the energy is elsewhere).
    assert BeepDetector().push((tone(1000, 0.5, 3000) + noise[: int(RATE * 0.5)] * 1.5).astype(np.int16), 0.0) == []


def test_speech_fixtures_have_no_beep() -> None:
    """Every spoken clip in the repository (103, nine voices, some with noise or 8 kHz µ-law)."""
    clips = sorted(FIXTURES.glob("*.wav")) + sorted((FIXTURES.parent / "questions").glob("*.wav"))
    assert len(clips) > 20
    found = []
    for clip in clips:
        raw = subprocess.run(["sox", str(clip), "-t", "raw", "-r", str(RATE), "-e", "signed", "-b", "16", "-c", "1",
                              "-"], capture_output=True, check=True, timeout=30).stdout
        events = BeepDetector().push(np.frombuffer(raw, np.int16), 0.0)
        if events:
            found.append((Path(clip).name, events[0]))
    assert not found, f"speech taken for a beep: {found}"


def test_chunked_push_equals_one_push() -> None:
    x = np.concatenate([quiet(0.3), tone(1000, 0.5), quiet(0.3)])
    whole = BeepDetector().push(x, 0.0)
    d = BeepDetector()
    parts = [e for i in range(0, len(x), 321) for e in d.push(x[i : i + 321], None if i else 0.0)]
    assert [(k, round(t, 2)) for k, t, _ in parts] == [(k, round(t, 2)) for k, t, _ in whole]


@pytest.mark.parametrize("text", [
    "Hi, you've reached Alex. Please leave a message after the tone.",
    "The person you are calling is not available.",
    "The subscriber you have dialed is unavailable",
    "I can't take your call right now",
    "Welcome to the voicemail of 555 0142",
])
def test_machine_phrases(text: str) -> None:
    assert machine_phrase(text), text


@pytest.mark.parametrize("text", ["Hello?", "Hi, this is Sam.", "Yes, who's calling?", "Hey, what's up?"])
def test_a_persons_hello_has_no_machine_phrase(text: str) -> None:
    assert machine_phrase(text) is None, text


def test_short_hello_then_silence_is_a_person() -> None:
    d = AmdDecider()
    d.speech_start(0.6)
    d.speech_end(1.1)
    assert d.poll(1.5) is None  # pausing, maybe to go on
    decision = d.poll(1.95)
    assert decision is not None and decision.answered_by == "human" and decision.at_s == pytest.approx(1.95)


def test_nobody_speaks_is_a_person_waiting() -> None:
    d = AmdDecider()
    assert d.poll(2.0) is None
    assert (dec := d.poll(2.6)) is not None and dec.answered_by == "human" and "silence" in dec.reason


def test_long_greeting_is_a_machine_while_it_still_plays() -> None:
    d = AmdDecider()
    d.speech_start(0.3)
    assert d.poll(1.9) is None
    dec = d.poll(2.2)
    assert dec is not None and dec.answered_by == "machine" and "long greeting" in dec.reason
    # ... and the message waits for the end of the greeting.
    assert d.ready_for_message(4.0) is None
    d.speech_end(5.0)
    assert d.ready_for_message(6.0) is None
    assert d.ready_for_message(6.6) == "end of greeting"


def test_phrase_decides_before_the_timing_does() -> None:
    d = AmdDecider()
    d.speech_start(0.2)
    d.speech_end(1.0)
    d.transcript("Please leave a message", 1.3)
    assert d.decision is not None and d.decision.answered_by == "machine" and d.decision.reason.startswith("phrase")


def test_beep_is_a_machine_and_the_message_follows_its_end() -> None:
    d = AmdDecider()
    d.beep_start(0.9)
    assert d.decision is not None and d.decision.answered_by == "machine" and d.decision.reason == "beep"
    assert d.ready_for_message(1.0) is None
    d.beep_end(1.4)
    assert d.ready_for_message(1.45) == "after the beep"


def test_beep_after_a_long_greeting_releases_the_message() -> None:
    d = AmdDecider()
    d.speech_start(0.3)
    d.poll(2.5)
    d.speech_end(5.6)
    d.beep_start(5.9)
    assert d.decision is not None and d.decision.reason.startswith("long greeting")
    assert d.ready_for_message(6.0) is None  # not during the beep
    d.beep_end(6.4)
    assert d.ready_for_message(6.4) == "after the beep"


def test_decision_never_changes_and_waiting_is_bounded() -> None:
    d = AmdDecider()
    d.speech_start(0.2)
    d.speech_end(0.7)
    first = d.poll(1.6)
    assert first is not None and first.answered_by == "human"
    d.transcript("leave a message", 2.0)
    assert d.poll(2.0) is first
    m = AmdDecider()
    m.speech_start(0.1)
    m.poll(2.0)
    assert m.ready_for_message(29.0) is None  # the greeting never ends
    assert m.ready_for_message(30.0) == "waited too long"


def test_stuck_tone_does_not_hold_the_message_forever() -> None:
    d = AmdDecider()
    d.beep_start(1.0)
    assert d.ready_for_message(3.5) is None
    assert d.ready_for_message(4.1) == "beep did not end"
