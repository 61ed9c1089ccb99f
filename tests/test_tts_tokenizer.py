"""Piper's stream tokenizer: a reply's first clause is a piece of its own, as soon as it
exists; the rest comes in clauses short enough that the next is ready before one has played."""

from __future__ import annotations

import asyncio

from agent.providers.piper_tts import MAX_WORDS, MIN_WORDS, FirstClauseTokenizer, spoken


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


async def test_a_long_sentence_leaves_clause_by_clause_while_it_is_written():
    words = ("Certainly! A rainy week in London calls for a few things, such as a pair of rain "
             "boots, a light jacket, an umbrella and a warm scarf").split(" ")
    early, every = await tokens([w if i == 0 else " " + w for i, w in enumerate(words)])
    assert early[:2] == ["Certainly!", " A rainy week in London calls for a few things,"]
    assert "".join(every) == " ".join(words)  # the transcript is made of the pieces
    for piece in every[1:-1]:
        assert MIN_WORDS <= len(piece.split()) <= MAX_WORDS, every


async def test_a_sentence_without_commas_is_cut_after_max_words():
    text = " ".join(f"word{i}" for i in range(MAX_WORDS * 2 + 3)) + " "
    early, _ = await tokens(["Sure. ", text])
    assert early[0] == "Sure."
    assert [len(p.split()) for p in early[1:]] == [MAX_WORDS, MAX_WORDS]


async def test_a_title_before_a_name_does_not_end_a_piece():
    early, _ = await tokens(["Yes, ", "you can see Dr. Smith tomorrow at ten. ", "Bring"])
    assert early == ["Yes,", " you can see Dr. Smith tomorrow at ten."]


async def test_a_sentence_end_leaves_without_waiting_for_the_next_token():
    early, _ = await tokens(["My", " name", " is", " Parley", "."])
    assert early == ["My name is Parley."]
    early, _ = await tokens(["Is", " that", " all", "?"])
    assert early == ["Is that all?"]


async def test_a_dot_after_a_digit_waits_for_the_next_token():
    early, every = await tokens(["It", " is", " 3", "."])
    assert early == []
    _, every = await tokens(["It", " is", " 3", ".", "5", " degrees", "."])
    assert every == ["It is 3.5 degrees."]


async def test_a_long_first_clause_is_cut_before_a_phrase_opener():
    early, every = await tokens(["The", " capital", " of", " Canada", " is", " Ott"])
    assert early == ["The capital of Canada"]
    _, every = await tokens(["The", " capital", " of", " Canada", " is", " Ottawa", "."])
    assert every == ["The capital of Canada", " is Ottawa."]
    # As soon as the opener is written: the token after it would only confirm it.
    early, _ = await tokens(["The", " capital", " of", " Canada", " is"])
    assert early == ["The capital of Canada"]
    # Not before the phrase has its words ("The capital | of"), nor at a capitalised word
    # that may be a name still being written ("Is|abel").
    early, _ = await tokens(["The", " capital", " of"])
    assert early == []
    early, _ = await tokens(["My", " friend", " called", " Is"])
    assert early == []


async def test_only_the_first_piece_is_cut_at_a_phrase():
    _, every = await tokens(["Sure", ".", " The", " capital", " of", " Canada", " is", " Ottawa", ".", " Bye"])
    assert every == ["Sure.", " The capital of Canada is Ottawa.", " Bye"]


def test_a_piece_cut_before_its_punctuation_is_spoken_as_the_start_of_a_sentence():
    assert spoken("The capital of Canada") == "The capital of Canada,"
    assert spoken("is Ottawa.") == "is Ottawa."
    assert spoken("Really?") == "Really?"
