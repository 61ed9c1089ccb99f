"""Scenario files: YAML in, validated dataclasses out, every error naming file, line and key.

The loader keeps the line of every mapping key (PyYAML's node marks), so a mistake deep in
`turns:` is reported where the author made it, before any call is placed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..audio import AudioFileError, read_wav

NOISE_KINDS = ("pink", "white", "brown")
LATENCY_PERCENTILES = ("p50", "p90", "p95", "p99", "max")


class ScenarioError(ValueError):
    """An unreadable or invalid scenario; str() is one line: `file:line: key: reason`."""

    def __init__(self, path: Path | str, line: int | None, key: str, reason: str) -> None:
        self.path, self.line, self.key, self.reason = str(path), line, key, reason
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


class _LineDict(dict[str, Any]):
    """A YAML mapping that remembers where it and each of its keys start (1-based lines)."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        d = _LineDict(super().construct_mapping(node, deep=True))
        d.line = node.start_mark.line + 1
        d.key_lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
        return d


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Expect:
    any: tuple[str, ...] = ()
    all: tuple[str, ...] = ()
    none: tuple[str, ...] = ()  # lower-case substrings the reply must not contain
    silent_during_pause: bool = False
    interrupted: bool = False
    no_reply: bool = False

    @property
    def wants_reply(self) -> bool:
        return not self.no_reply


@dataclass(frozen=True)
class Turn:
    index: int  # 1-based
    line: int
    say: str | None = None
    audio: Path | None = None
    silence_ms: int | None = None  # a turn of pure silence (the caller says nothing)
    text: str | None = None  # what the caller says, for the WER (default: `say`)
    voice: str | None = None
    rate: int | None = None  # words per minute for `say`
    pause_after: str | None = None
    pause_ms: int = 1000
    noise: str | None = None
    noise_volume: float = 0.05
    barge_in_after_ms: int | None = None
    phone: bool = False
    judge: str | None = None
    expect: Expect = field(default_factory=Expect)
    expect_given: bool = False
    timeout_s: float | None = None

    @property
    def reference(self) -> str | None:
        return self.text if self.text is not None else self.say


@dataclass(frozen=True)
class Budgets:
    latency_ms: dict[str, float] = field(default_factory=dict)  # percentile -> ms
    pass_rate: float | None = None
    wer: float | None = None
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.latency_ms and self.pass_rate is None and self.wer is None


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    turns: tuple[Turn, ...]
    agent: str | None = None
    voice: str | None = None
    rate: int = 170
    budgets: Budgets = field(default_factory=Budgets)
    lines: dict[str, int] = field(default_factory=dict)  # top-level key -> line


TOP_KEYS = {"name", "agent", "voice", "rate", "budgets", "turns", "description"}
TURN_KEYS = {"say", "audio", "silence_ms", "text", "voice", "rate", "pause_after", "pause_ms", "noise",
             "noise_volume", "barge_in_after_ms", "phone", "judge", "expect", "timeout_s", "note"}
EXPECT_KEYS = {"any", "all", "none", "silent_during_pause", "interrupted", "no_reply"}
BUDGET_KEYS = {"turn_latency_ms", "pass_rate", "wer"}


class _Ctx:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, node: Any, key: str, reason: str, line: int | None = None) -> ScenarioError:
        if line is None and isinstance(node, _LineDict):
            leaf = key.rsplit(".", 1)[-1].split("[", 1)[0]
            line = node.key_lines.get(leaf, node.line)
        return ScenarioError(self.path, line, key, reason)

    def mapping(self, parent: _LineDict, key: str, prefix: str) -> _LineDict:
        value = parent[key]
        if not isinstance(value, _LineDict):
            raise self.fail(parent, f"{prefix}{key}", f"must be a mapping, not {_kind(value)}")
        return value

    def keys(self, d: _LineDict, allowed: set[str], prefix: str) -> None:
        for k in d:
            if str(k) not in allowed:
                raise self.fail(d, f"{prefix}{k}", f"unknown key (expected one of: {', '.join(sorted(allowed))})",
                                d.key_lines.get(str(k), d.line))

    def string(self, d: _LineDict, key: str, prefix: str, *, empty: bool = False) -> str | None:
        if key not in d or d[key] is None:
            return None
        v = d[key]
        if not isinstance(v, str) or (not empty and not v.strip()):
            raise self.fail(d, f"{prefix}{key}", f"must be a non-empty string, not {_kind(v)}")
        return v

    def number(self, d: _LineDict, key: str, prefix: str, lo: float, hi: float, *,
               integer: bool = False) -> float | None:
        if key not in d or d[key] is None:
            return None
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
            raise self.fail(d, f"{prefix}{key}", f"must be {'an integer' if integer else 'a number'}, not {_kind(v)}")
        if not lo <= v <= hi:
            raise self.fail(d, f"{prefix}{key}", f"must be between {lo:g} and {hi:g}, not {v}")
        return v

    def boolean(self, d: _LineDict, key: str, prefix: str) -> bool:
        if key not in d or d[key] is None:
            return False
        if not isinstance(d[key], bool):
            raise self.fail(d, f"{prefix}{key}", f"must be true or false, not {_kind(d[key])}")
        return bool(d[key])

    def words(self, d: _LineDict, key: str, prefix: str) -> tuple[str, ...]:
        if key not in d or d[key] is None:
            return ()
        v = d[key]
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str | int) and str(x).strip() for x in v):
            raise self.fail(d, f"{prefix}{key}", "must be a non-empty list of non-empty strings")
        return tuple(str(x).strip().lower() for x in v)


def _kind(v: Any) -> str:
    if v is None:
        return "empty"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return f"the string {v!r}" if len(v) < 40 else "a string"
    return f"{type(v).__name__} {v!r}"


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario file; raises ScenarioError (one line) on any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ScenarioError(p, None, "", f"cannot read the file ({reason})") from None
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise ScenarioError(p, line, "", f"not valid YAML ({e.problem or e.context})") from None
    except yaml.YAMLError as e:
        raise ScenarioError(p, None, "", f"not valid YAML ({e})") from None
    ctx = _Ctx(p)
    if not isinstance(doc, _LineDict):
        raise ScenarioError(p, 1, "", f"a scenario is a YAML mapping (name, turns, ...), not {_kind(doc)}")
    ctx.keys(doc, TOP_KEYS, "")
    name = ctx.string(doc, "name", "")
    if name is None:
        raise ScenarioError(p, doc.line, "name", "required key is missing")
    agent = ctx.string(doc, "agent", "")
    voice = ctx.string(doc, "voice", "")
    rate = ctx.number(doc, "rate", "", 60, 450, integer=True)
    budgets = _budgets(ctx, doc) if doc.get("budgets") is not None else Budgets()
    if "turns" not in doc or doc["turns"] is None:
        raise ScenarioError(p, doc.line, "turns", "required key is missing")
    raw_turns = doc["turns"]
    if not isinstance(raw_turns, list) or not raw_turns:
        raise ctx.fail(doc, "turns", f"must be a non-empty list of turns, not {_kind(raw_turns)}")
    turns = tuple(_turn(ctx, doc, raw, i + 1) for i, raw in enumerate(raw_turns))
    return Scenario(name=name.strip(), path=p, turns=turns, agent=agent, voice=voice,
                    rate=int(rate) if rate is not None else 170, budgets=budgets, lines=dict(doc.key_lines))


def _budgets(ctx: _Ctx, doc: _LineDict) -> Budgets:
    b = ctx.mapping(doc, "budgets", "")
    ctx.keys(b, BUDGET_KEYS, "budgets.")
    latency: dict[str, float] = {}
    if b.get("turn_latency_ms") is not None:
        lat = ctx.mapping(b, "turn_latency_ms", "budgets.")
        ctx.keys(lat, set(LATENCY_PERCENTILES), "budgets.turn_latency_ms.")
        for k in lat:
            v = ctx.number(lat, k, "budgets.turn_latency_ms.", 1, 600_000)
            if v is not None:
                latency[str(k)] = float(v)
        if not latency:
            raise ctx.fail(b, "budgets.turn_latency_ms", "names no percentile (p50, p90, p95, p99, max)")
    pass_rate = ctx.number(b, "pass_rate", "budgets.", 0, 1)
    wer = ctx.number(b, "wer", "budgets.", 0, 10)
    return Budgets(latency_ms=latency, pass_rate=None if pass_rate is None else float(pass_rate),
                   wer=None if wer is None else float(wer), lines=dict(b.key_lines))


def _turn(ctx: _Ctx, doc: _LineDict, raw: Any, n: int) -> Turn:
    prefix = f"turns[{n}]."
    if not isinstance(raw, _LineDict):
        line = doc.key_lines.get("turns", doc.line)
        raise ScenarioError(ctx.path, line, f"turns[{n}]", f"a turn is a mapping (say/audio, expect, ...), not {_kind(raw)}")
    ctx.keys(raw, TURN_KEYS, prefix)
    sources = [k for k in ("say", "audio", "silence_ms") if raw.get(k) is not None]
    if len(sources) != 1:
        raise ScenarioError(ctx.path, raw.line, f"turns[{n}]",
                            "needs exactly one of say, audio, silence_ms" + (f" (has {', '.join(sources)})" if sources else ""))
    say = ctx.string(raw, "say", prefix)
    audio: Path | None = None
    if (audio_s := ctx.string(raw, "audio", prefix)) is not None:
        audio = (ctx.path.parent / audio_s).resolve() if not Path(audio_s).is_absolute() else Path(audio_s)
        try:
            read_wav(audio)
        except AudioFileError as e:
            raise ctx.fail(raw, prefix + "audio", str(e)) from None
    silence = ctx.number(raw, "silence_ms", prefix, 100, 60_000, integer=True)
    text = ctx.string(raw, "text", prefix)
    voice = ctx.string(raw, "voice", prefix)
    rate = ctx.number(raw, "rate", prefix, 60, 450, integer=True)
    pause_after = ctx.string(raw, "pause_after", prefix)
    pause_ms = ctx.number(raw, "pause_ms", prefix, 50, 10_000, integer=True)
    if pause_after is not None:
        if say is None:
            raise ctx.fail(raw, prefix + "pause_after", "only works with `say` (a recorded clip has its own pauses)")
        if not _find_word_end(say, pause_after):
            raise ctx.fail(raw, prefix + "pause_after", f"{pause_after!r} does not occur in the `say` text")
    elif pause_ms is not None:
        raise ctx.fail(raw, prefix + "pause_ms", "needs `pause_after` (where to insert the silence)")
    noise = ctx.string(raw, "noise", prefix)
    if noise is not None and noise not in NOISE_KINDS:
        raise ctx.fail(raw, prefix + "noise", f"must be one of {', '.join(NOISE_KINDS)}, not {noise!r}")
    noise_volume = ctx.number(raw, "noise_volume", prefix, 0.001, 1.0)
    barge = ctx.number(raw, "barge_in_after_ms", prefix, 0, 60_000, integer=True)
    if barge is not None and n == 1:
        raise ctx.fail(raw, prefix + "barge_in_after_ms", "the first turn has no previous reply to interrupt")
    phone = ctx.boolean(raw, "phone", prefix)
    judge = ctx.string(raw, "judge", prefix)
    timeout = ctx.number(raw, "timeout_s", prefix, 1, 600)
    expect = Expect()
    if raw.get("expect") is not None:
        e = ctx.mapping(raw, "expect", prefix)
        ep = prefix + "expect."
        ctx.keys(e, EXPECT_KEYS, ep)
        expect = Expect(any=ctx.words(e, "any", ep), all=ctx.words(e, "all", ep), none=ctx.words(e, "none", ep),
                        silent_during_pause=ctx.boolean(e, "silent_during_pause", ep),
                        interrupted=ctx.boolean(e, "interrupted", ep), no_reply=ctx.boolean(e, "no_reply", ep))
        if expect.silent_during_pause and pause_after is None:
            raise ctx.fail(e, ep + "silent_during_pause", "needs `pause_after` on the turn")
        if expect.interrupted and barge is None:
            raise ctx.fail(e, ep + "interrupted", "needs `barge_in_after_ms` on the turn")
        if expect.no_reply and (expect.any or expect.all):
            raise ctx.fail(e, ep + "no_reply", "cannot be combined with any/all (they check a reply)")
    return Turn(
        index=n, line=raw.line, say=say, audio=audio, silence_ms=int(silence) if silence is not None else None,
        text=text, voice=voice, rate=int(rate) if rate is not None else None, pause_after=pause_after,
        pause_ms=int(pause_ms) if pause_ms is not None else 1000, noise=noise,
        noise_volume=float(noise_volume) if noise_volume is not None else 0.05,
        barge_in_after_ms=int(barge) if barge is not None else None, phone=phone, judge=judge,
        expect=expect, expect_given=raw.get("expect") is not None,
        timeout_s=float(timeout) if timeout is not None else None,
    )


def _find_word_end(text: str, words: str) -> int | None:
    """Character index just after the first whole-word occurrence of `words` in `text`."""
    m = re.search(r"(?<!\w)" + re.escape(words.strip()) + r"(?!\w)", text, re.IGNORECASE)
    return m.end() if m else None


def split_at_pause(text: str, words: str) -> tuple[str, str]:
    end = _find_word_end(text, words)
    assert end is not None
    return text[:end].strip(), text[end:].strip()


def load_all(paths: list[str]) -> list[Scenario]:
    """Every scenario, in order; the first problem raises (before anything is played)."""
    return [load_scenario(p) for p in paths]
