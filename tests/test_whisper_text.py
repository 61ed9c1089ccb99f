"""Whisper's text clean-up, without the model: a sentence decoded twice in a row is kept once,
and an unfinished repeat of its start is dropped."""

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
    ("What is the largest planet in our solar system? What is the largest planet in our",
     "What is the largest planet in our solar system?"),
    ("Tell me a joke. Tell me a", "Tell me a joke."),
    ("I want tea. I want", "I want tea. I want"),  # two words: maybe a new sentence
    ("Is it cold? Is it cold and wet", "Is it cold? Is it cold and wet"),  # longer: new words
    ("Count to three. Count to three please", "Count to three. Count to three please"),
])
def test_a_sentence_decoded_twice_is_kept_once(heard: str, kept: str) -> None:
    assert drop_repeated_sentences(heard) == kept
