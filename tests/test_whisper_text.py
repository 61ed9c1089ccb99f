"""Whisper's text clean-up, without the model: a sentence decoded twice in a row is kept once."""

from __future__ import annotations

import pytest

from agent.providers.whisper_stt import drop_repeated_sentences


@pytest.mark.parametrize(("heard", "kept"), [
    ("La playa está muy cerca del hotel. La playa está muy cerca del hotel",
     "La playa está muy cerca del hotel."),
    ("I like coffee with milk. I like coffee with milk.", "I like coffee with milk."),
    ("What time is it? What time is it? Thanks.", "What time is it? Thanks."),
    ("where is the station where is the station", "where is the station"),
    ("Stop. Stop. Stop. Wait a second.", "Stop. Stop. Stop. Wait a second."),
    ("Bye bye.", "Bye bye."),
    ("It is 3.5 degrees. It is warm.", "It is 3.5 degrees. It is warm."),
    ("", ""),
])
def test_a_sentence_decoded_twice_is_kept_once(heard: str, kept: str) -> None:
    assert drop_repeated_sentences(heard) == kept
