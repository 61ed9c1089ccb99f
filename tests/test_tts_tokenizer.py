"""Piper's stream tokenizer: a reply's first clause is a piece of its own, as soon as it exists."""

from __future__ import annotations

import asyncio

from agent.providers.piper_tts import FirstClauseTokenizer


async def tokens(pushes: list[str], whole: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
    """(tokens out before end_input, all tokens)."""
    stream = FirstClauseTokenizer(whole=whole).stream()
    for text in pushes:
        stream.push_text(text)
    await asyncio.sleep(0.05)
    early = []
    while True:
        try:
            early.append((await asyncio.wait_for(stream.__anext__(), 0.05)).token)
        except TimeoutError:
            break
    stream.end_input()
    rest = [ev.token async for ev in stream]
    await stream.aclose()
    return early, early + rest


async def test_first_clause_leaves_before_the_sentence_is_written():
    early, every = await tokens(["Sure", ",", " the", " capital", " of"])
    assert early == ["Sure,"]
    assert " ".join(t.strip() for t in every) == "Sure, the capital of"


async def test_number_and_abbreviation_dots_do_not_end_a_clause():
    early, _ = await tokens(["It is 3.5", " degrees"])
    assert early == []


async def test_a_remembered_phrase_stays_whole():
    greeting = "Hello, this is Parley. How can I help you today?"
    _, every = await tokens([greeting], whole=frozenset({greeting}))
    assert every == [greeting]


async def test_later_sentences_come_whole_and_in_order():
    _, every = await tokens(["Yes. ", "Paris is the capital of France. ", "It sits on the Seine."])
    assert every[0] == "Yes."
    assert " ".join(t.strip() for t in every) == "Yes. Paris is the capital of France. It sits on the Seine."
