"""Function tools for models that can call them (a cloud LLM or the realtime model).

- `end_call`: says goodbye and ends the call through `Call.end` (agent/callstate.py): the
  room goes (a SIP caller gets a BYE), the job with it.
- `lookup`: answers questions about the business from a pluggable `KnowledgeSource`;
  the default is a small Markdown FAQ (agent/knowledge/faq.md) searched by keywords. A
  lookup that takes longer than `tool_ack_delay` speaks a short acknowledgement first
  (the framework's `RunContext.with_filler`), so the caller never waits in silence.

SmolLM2-135M cannot call tools, so the local LLM is never offered them (`tools_for`).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from livekit.agents import RunContext, function_tool, llm

from .callstate import Call
from .settings import Settings

logger = logging.getLogger("parley.tools")


@dataclass(frozen=True)
class Entry:
    title: str
    text: str
    score: float = 0.0


class KnowledgeSource(Protocol):
    """Where `lookup` finds answers: a file, a database, a search API…"""

    async def search(self, query: str, limit: int = 2) -> list[Entry]: ...


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are at be can do does for from how i in is it me my of on or our the to we what when "
    "where which who why will with you your please tell about parley".split()
)


def _terms(text: str) -> list[str]:
    out = []
    for w in _WORD.findall(text.lower()):
        if w in _STOP:
            continue
        if len(w) > 4 and w.endswith("s"):  # "prices" ~ "price", "hours" stays (len 5 → "hour")
            w = w[:-1]
        out.append(w)
    return out


class KeywordSource:
    """Markdown sections (`## title` + answer) ranked by IDF-weighted keyword overlap.

    Instant and model-free; a title word counts double since titles name the topic.
    """

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self._docs = [Counter(_terms(e.title) * 2 + _terms(e.text)) for e in entries]
        df = Counter(t for d in self._docs for t in d)
        n = len(entries)
        self._idf = {t: math.log(1 + n / c) for t, c in df.items()}

    @classmethod
    def from_markdown(cls, path: Path) -> KeywordSource:
        entries: list[Entry] = []
        title, body = "", []
        for line in path.read_text(encoding="utf-8").splitlines() + ["## "]:
            if line.startswith("## "):
                if title and " ".join(body).strip():
                    entries.append(Entry(title, " ".join(body).strip()))
                title, body = line[3:].strip(), []
            elif title and line.strip():
                body.append(line.strip())
        return cls(entries)

    async def search(self, query: str, limit: int = 2) -> list[Entry]:
        q = set(_terms(query))
        scored = []
        for entry, doc in zip(self.entries, self._docs, strict=True):
            score = sum(self._idf[t] * min(doc[t], 2) for t in q if t in doc)
            if score > 0:
                scored.append(Entry(entry.title, entry.text, round(score, 3)))
        scored.sort(key=lambda e: -e.score)
        return scored[:limit]


END_CALL_DOC = (
    "End the call and hang up. Use it only when the caller says goodbye or clearly has "
    "nothing more to ask. Do not say anything yourself when you call it: the goodbye is spoken for you."
)
LOOKUP_DOC = (
    "Look up facts about Parley the company: opening hours, prices and plans, refunds, "
    "address, contact details, supported languages, privacy. Call it before answering any "
    "such question, and answer from what it returns."
)


def end_call_tool(settings: Settings) -> llm.FunctionTool:
    """`end_call`: ends through `Call.end` (agent/callstate.py) with our fixed goodbye.

    Not the framework's `EndCallTool`: it lets the model generate the goodbye and shuts the
    session down as soon as the tool's turn is done, which drops a fixed goodbye queued from
    the tool (measured with livekit-agents 1.8.9, tests/test_tools.py). The caller must hear
    a goodbye that cannot be talked over, and every way of ending a call records its reason
    in one place.
    """
    goodbye = settings.goodbye

    @function_tool(name="end_call", description=END_CALL_DOC)
    async def end_call(ctx: RunContext[Call]) -> None:
        logger.info("end_call tool: saying goodbye and ending the call")
        # No tool reply is generated for a None result: the goodbye is the last word.
        ctx.userdata.end_soon("agent (end_call)", goodbye=goodbye)

    return end_call


def lookup_tool(settings: Settings, source: KnowledgeSource) -> llm.FunctionTool:
    ack, ack_delay = settings.tool_ack, settings.tool_ack_delay

    @function_tool(name="lookup", description=LOOKUP_DOC)
    async def lookup(ctx: RunContext, question: str) -> str:
        """
        Args:
            question: what the caller wants to know, in a few words
        """
        # A slow source speaks the acknowledgement; a fast one finishes before it fires.
        async with ctx.with_filler(ack, delay=ack_delay):
            entries = await source.search(question)
        logger.info("lookup %r -> %s", question, [e.title for e in entries])
        if not entries:
            return "The knowledge base has nothing on that. Say you do not know."
        return "\n".join(f"{e.title}: {e.text}" for e in entries)

    return lookup


def tools_for(settings: Settings, source: KnowledgeSource | None = None) -> list[llm.FunctionTool]:
    """The tools this configuration's model gets (none for the local LLM)."""
    if not (settings.tools and settings.cloud_llm):
        return []
    source = source or KeywordSource.from_markdown(settings.knowledge_file)
    return [end_call_tool(settings), lookup_tool(settings, source)]
