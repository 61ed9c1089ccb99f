"""What the caller's words say about turn-taking, read from the transcript alone.

Two questions the audio cannot answer on its own, asked of Whisper's punctuated text:

- Has the caller finished? (`transcript_verdict`) Whisper punctuates what it hears as
  a finished sentence and leaves a trailing comma, an ellipsis or no full stop on a
  phrase cut short; English also never ends a finished sentence on "the", "and", "of",
  "my" or "um". A question or a request is something the agent can answer now; a bare
  statement ("Let me think.", "Quick question.") is often the caller's preamble, so it
  gets a longer wait than a question does, and a phrase that cannot be the end gets
  the longest.
- Is this talking over the agent only a backchannel? (`is_backchannel`) "uh-huh",
  "yeah", "okay", "right", "mm-hmm" said while the agent speaks are the caller
  listening, not asking for the floor; "stop", "wait", "no", a question or a request are
  not. A lone word that is none of those counts as listening too: Whisper often
  misspells a short listening noise ("yet.", "them.").

Pure functions on strings: no models, nothing to load (tests/test_turns.py).
"""

from __future__ import annotations

import itertools
import re
from typing import Literal

Verdict = Literal["complete", "open", "incomplete"]

# Words a finished English sentence does not end on: conjunctions, articles,
# prepositions, possessives and determiners, fillers and discourse openers.
_CONTINUES = frozenset("""
    and or but so because if then when while although though unless until since nor yet plus
    a an the some any every each either neither no another
    of to in on at for with from by about into onto over under between through during
    than as like via per without within toward towards
    my your his her our their its whose
    um uh er erm uhm hmm mm ah eh well anyway basically actually also
    i what which who whom where how whether
""".split())
# A question may end on a preposition ("where are you from?"), not on an article,
# a conjunction or a filler.
_PREPOSITIONS = frozenset("of to in on at for with from by about into over under like as".split())
# Words that open a request the agent can carry out at once ("count from one to ten.").
_REQUEST_VERBS = frozenset("""
    tell say count name list spell give add subtract multiply divide explain describe repeat
    translate define recommend suggest remind remember help calculate compute convert summarize
    summarise read play call book set find show check compare guess sing keep
    stop wait hold hang pause continue go start cancel listen look
""".split())
# Openers of an indirect request ("I would like to know what ..."): a request once
# enough words follow them to name what is wanted.
_WANT_OPENERS = ("i would like", "i'd like", "i want", "i need", "i wanna", "i was wondering")
# Sentences that hand the floor back ("thank you.", "nice to meet you.").
_CLOSERS = ("thank you", "thanks", "nice to meet you", "good to meet you", "pleased to meet you",
            "goodbye", "bye", "that's all", "that's it", "over to you")

# "Tell me", "can you show us": a verb that takes two objects, with only the person given.
_DITRANSITIVE = frozenset("tell show give ask send bring teach remind let".split())
_PERSONS = frozenset("me us you him her them".split())
_WH = frozenset("what which who whom whose where when why how".split())
# How a question starts when Whisper leaves off its question mark.
_QUESTION_START = frozenset("""
    what which who whom whose where when why how is are was were am do does did can could would
    will should shall may might have has had
""".split())

# Discourse markers that open an utterance without changing what it is: "and what is two
# plus two." asks as "what is two plus two." does.
_OPENERS = frozenset("""
    and so but okay ok well um uh er erm hmm oh now then also right alright hey anyway actually
""".split())

_TRAILING_OPEN = ("...", "…", ",", ";", ":", "-", "–", "—")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("’", "'"))


def _last_sentence(text: str) -> str:
    parts = [p for p in re.split(r"(?<=[.?!])\s+", text.strip()) if p.strip()]
    return parts[-1] if parts else ""


def transcript_verdict(text: str) -> Verdict:
    """'complete': a question or request the agent can answer now; 'open': a finished
    statement that may be a preamble ("Let me think.") or a phrase Whisper left without
    a full stop; 'incomplete': cannot be the end of the turn."""
    t = text.strip().strip('"').strip()
    words = _words(t)
    if not words:
        return "incomplete"
    if t.endswith(_TRAILING_OPEN):
        return "incomplete"
    last = words[-1]
    if last in _CONTINUES and not (t.endswith("?") and last in _PREPOSITIONS):
        return "incomplete"
    sentence = _words(_last_sentence(t))
    if (last in _PERSONS and len(sentence) >= 2 and sentence[-2] in _DITRANSITIVE
            and sentence[0] not in _WH):
        return "open"  # "can you tell me?" / "tell me." - what, is still to come ("what did I tell you?" is whole)
    if sentence[-2:] == ["you", "please"]:
        # "could you please" ... do what; also with its first word misheard ("God, you please.")
        return "open"
    if t.endswith("?"):
        return "complete"
    core = list(itertools.dropwhile(lambda w: w in _OPENERS, sentence))
    asks = bool(core) and (core[0] in _QUESTION_START or core[0] in _REQUEST_VERBS)
    if asks and len(core) >= 4 and last not in _QUESTION_START:
        # Whisper writes some finished questions and requests with a full stop or with
        # nothing: one that has a verb, an object and no dangling last word is answerable.
        return "complete"
    if not t.endswith((".", "!")):
        # Whisper leaves a phrase it heard as unfinished without a full stop.
        return "open"
    joined = " ".join(sentence)
    if core and (core[0] in _REQUEST_VERBS or "please" in sentence):
        return "complete"
    if any(joined == c or joined.endswith(" " + c) for c in _CLOSERS):
        return "complete"
    for opener in _WANT_OPENERS:
        if joined.startswith(opener + " ") and len(sentence) >= len(opener.split()) + 4:
            return "complete"
    return "open"


# Listening noises, one-word acknowledgements and laughter, as Whisper spells them: what a
# listener says without taking the floor.
_BACKCHANNEL_WORDS = frozenset("""
    uh huh uhhuh mm hmm mhm mmhmm hm um yeah yep yup yes yeh ya
    okay ok right sure alright aha ah oh cool nice great good wow true exactly
    ha haha hah heh hehe
""".split())
_BACKCHANNEL_PHRASES = frozenset({"i see", "got it", "oh okay", "oh right", "okay okay", "yeah yeah",
                                  "right right", "uh huh", "mm hmm", "all right", "oh yeah",
                                  "yeah okay", "okay yeah", "yeah right", "sure sure", "i know"})
# One-word barge-ins that always mean "stop talking".
_STOP_WORDS = frozenset("stop wait hold hang pause quiet sorry excuse no nope shut enough but".split())


def is_backchannel(text: str) -> bool:
    """True when `text` (heard while the agent talks) is only the caller listening."""
    t = text.strip().lower()
    if not t or "?" in t:
        return False
    words = _words(t.replace("-", " "))
    if not words or len(words) > 3:
        return False
    if any(w in _STOP_WORDS for w in words):
        return False
    phrase = " ".join(words)
    if phrase in _BACKCHANNEL_PHRASES or all(w in _BACKCHANNEL_WORDS for w in words):
        return True
    # A lone word that is neither a stop word nor a request is not a bid for the floor:
    # most often it is a listening noise Whisper misspelled ("mm-hmm" heard as "them.").
    # One a letter away from a stop word is that stop word misspelled ("wait" as "wit").
    if len(words) != 1 or words[0] in _REQUEST_VERBS or words[0].isdigit():
        return False
    return not any(len(s) >= 4 and _one_edit(words[0], s) for s in _STOP_WORDS)


def _one_edit(a: str, b: str) -> bool:
    """a and b differ by at most one inserted, deleted or replaced letter."""
    if abs(len(a) - len(b)) > 1:
        return False
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    return a[i + 1:] == b[i + 1:] or a[i:] == b[i + 1:] or a[i + 1:] == b[i:]
