"""Small deterministic skills for the local LLM: arithmetic, counting, days, months, date and time.

A sub-1B model guesses at "what is seventeen times three" and miscounts; these requests have
exactly one right answer, so they are computed, the way a large model would call a tool.
`answer` returns a reply only when the whole utterance is such a request (or several joined
by "and"); anything else goes to the model. `facts` finds the computable parts of a longer
request ("what is two plus two and why is the sky blue") so the model can be told the result.
General parsing of the request's structure, never a list of expected sentences.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

_UNITS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000}
# Words a recogniser writes for a number said with th-fronting ("free" for "three", as many
# English speakers say it and as Whisper hears espeak-ng's voices): read as numbers only where a
# number must stand (an operand, the bounds of a count).
_HEARD_AS = {"free": "three"}
_NUMBER_WORDS = set(_UNITS) | set(_TENS) | set(_SCALES) | {"a", "and", "negative", "minus", "point"}

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december"]

_ORDINAL_WORDS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
                  "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12}

# Spoken operators, longest first so "multiplied by" wins over "by".
_OPS: list[tuple[str, str]] = [
    ("multiplied by", "*"), ("times", "*"), ("x", "*"), ("×", "*"), ("*", "*"),
    ("divided by", "/"), ("over", "/"), ("÷", "/"), ("/", "/"),
    ("plus", "+"), ("+", "+"), ("added to", "+"),
    ("minus", "-"), ("take away", "-"), ("-", "-"), ("less", "-"),
]
_OP_WORD = {"*": "times", "/": "divided by", "+": "plus", "-": "minus"}

_FILLERS = re.compile(
    r"^(?:(?:ok(?:ay)?|so|well|hey|hi|um+|uh+|and|now|also|then|alright|all right|parley)[, ]+)*"
    r"(?:(?:can|could|would|will) you (?:please )?(?:tell me|say|work out|figure out|calculate|compute|do)?"
    r"|(?:please )?(?:tell me|do you know|i want to know|i'd like to know)"
    r"|(?:please )?(?:calculate|compute|work out))?\s*",
)


@dataclass(frozen=True)
class SkillAnswer:
    text: str
    skill: str


def normalize(text: str) -> str:
    t = text.lower().replace("’", "'").replace("−", "-")
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 1,000 -> 1000
    t = re.sub(r"(\d)([+*/×÷x])(\d)", r"\1 \2 \3", t)
    t = re.sub(r"(?<=\d)-(?=\d)", " - ", t)
    t = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", t)  # twenty-three
    t = re.sub(r"[?!,;:\"]|\.(?!\d)", " ", t)
    t = re.sub(r"\s+", " ", t).strip()
    t = re.sub(r"\b(?:please|for me|thanks|thank you)\b", " ", t)
    t = re.sub(r"\s+", " ", t).strip()
    return _FILLERS.sub("", t, count=1).strip()


def parse_number(words: str) -> float | None:
    """'seventy two' -> 72, '3.5' -> 3.5, 'a hundred and five' -> 105, 'negative 4' -> -4."""
    w = words.strip()
    if not w:
        return None
    if re.fullmatch(r"-?\d+(?:\.\d+)?", w):
        return float(w)
    toks = [_HEARD_AS.get(t, t) for t in w.split()]
    sign = 1
    if toks[0] in ("negative", "minus"):
        sign, toks = -1, toks[1:]
    if not toks or any(t not in _NUMBER_WORDS and not t.isdigit() for t in toks):
        return None
    if "point" in toks:
        i = toks.index("point")
        whole = parse_number(" ".join(toks[:i])) if i else 0.0
        digits = toks[i + 1:]
        if whole is None or not digits or any(d not in _UNITS or _UNITS[d] > 9 for d in digits):
            return None
        return sign * (whole + float("0." + "".join(str(_UNITS[d]) for d in digits)))
    total, current, seen = 0, 0, False
    for t in toks:
        if t == "and":
            continue
        if t == "a":
            current = max(current, 1) if not seen else current
            continue
        if t.isdigit():
            current += int(t)
        elif t in _UNITS:
            current += _UNITS[t]
        elif t in _TENS:
            current += _TENS[t]
        elif t == "hundred":
            current = max(current, 1) * 100
        else:  # thousand, million, billion
            total += max(current, 1) * _SCALES[t]
            current = 0
        seen = True
    return float(sign * (total + current)) if seen else None


def say_number(x: float) -> str:
    if math.isclose(x, round(x), abs_tol=1e-9):
        return str(int(round(x)))
    return f"{x:.4f}".rstrip("0").rstrip(".")



def _split_ops(expr: str) -> list[str] | None:
    """'7 times 8 plus 2' -> ['7', '*', '8', '+', '2'] (operands still as words)."""
    ops = sorted(_OPS, key=lambda o: -len(o[0]))
    pattern = "|".join(re.escape(o) for o, _ in ops)
    parts = re.split(rf"(?:^| )({pattern})(?: |$)", expr)
    if len(parts) < 3:
        return None
    out: list[str] = []
    for i, p in enumerate(parts):
        p = p.strip()
        if i % 2:
            out.append(dict(_OPS)[p])
        else:
            if not p:
                return None
            out.append(p)
    return out


def _arithmetic(t: str) -> str | None:
    # "what in": Whisper tiny.en often hears "what is" so (4 of the question set's 51 turns in a call).
    m = re.fullmatch(r"(?:what(?: is|'s|s| in)|how much is|what does|whats) (.+?)(?: equal| equals| make| come to)?", t)
    m = m or re.fullmatch(r"what (.+?) (?:is|equals|makes)", t)
    expr = m.group(1) if m else t
    expr = re.sub(r"^(?:the )?(?:sum|result|answer) of ", "", expr)
    m = re.fullmatch(r"(?:the )?square root of (.+)", expr)
    if m and (n := parse_number(m.group(1))) is not None and n >= 0:
        return f"The square root of {say_number(n)} is {say_number(math.sqrt(n))}."
    m = re.fullmatch(r"(.+?) squared", expr)
    if m and (n := parse_number(m.group(1))) is not None:
        return f"{say_number(n)} squared is {say_number(n * n)}."
    m = re.fullmatch(r"(.+?) (?:percent|%) of (.+)", expr.replace("%", " percent"))
    if m and (p := parse_number(m.group(1))) is not None and (n := parse_number(m.group(2))) is not None:
        return f"{say_number(p)} percent of {say_number(n)} is {say_number(p * n / 100)}."
    m = re.fullmatch(r"(?:add|sum) (.+?) and (.+)", expr)
    if m:
        expr = f"{m.group(1)} plus {m.group(2)}"
    m = re.fullmatch(r"subtract (.+?) from (.+)", expr)
    if m:
        expr = f"{m.group(2)} minus {m.group(1)}"
    m = re.fullmatch(r"multiply (.+?) (?:by|and) (.+)", expr)
    if m:
        expr = f"{m.group(1)} times {m.group(2)}"
    m = re.fullmatch(r"divide (.+?) by (.+)", expr)
    if m:
        expr = f"{m.group(1)} divided by {m.group(2)}"
    parts = _split_ops(expr)
    if parts is None or len(parts) > 9:
        return None
    nums = [parse_number(p) for p in parts[0::2]]
    if any(n is None for n in nums):
        return None
    values: list[float] = [n for n in nums if n is not None]
    ops = parts[1::2]
    # Usual precedence: * and / before + and -.
    vals, pending = [values[0]], []
    for op, v in zip(ops, values[1:], strict=True):
        if op in "*/":
            if op == "/" and v == 0:
                return "You can't divide by zero."
            vals[-1] = vals[-1] * v if op == "*" else vals[-1] / v
        else:
            pending.append(op)
            vals.append(v)
    result = vals[0]
    for op, v in zip(pending, vals[1:], strict=True):
        result = result + v if op == "+" else result - v
    spoken = " ".join(say_number(values[0]) if i == 0 else f"{_OP_WORD[op]} {say_number(v)}"
                      for i, (op, v) in enumerate(zip(["", *ops], values, strict=True)))
    return f"{spoken} is {say_number(result)}."


_NUMBER_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                 "nineteen", "twenty"]


def _count(t: str) -> str | None:
    m = re.fullmatch(
        r"(?:(?:can|could) you |let's |lets )?count(?: (?:up|down|backwards|backward))?"
        r"(?: from (?P<a>.+?))?(?: (?:to|up to|down to|until) (?P<b>.+?))?(?: by (?P<step>.+?))?"
        r"(?: (?P<back>backwards|backward|in reverse))?", t)
    if not m or not (m.group("a") or m.group("b")):
        return None
    a = parse_number(m.group("a")) if m.group("a") else 1.0
    b = parse_number(m.group("b")) if m.group("b") else (1.0 if "back" in t or "down" in t else None)
    step = parse_number(m.group("step")) if m.group("step") else 1.0
    if a is None or b is None or step is None or step <= 0:
        return None
    if not all(float(x).is_integer() for x in (a, b, step)):
        return None
    a_i, b_i, s_i = int(a), int(b), int(step)
    seq = list(range(a_i, b_i + 1, s_i)) if b_i >= a_i else list(range(a_i, b_i - 1, -s_i))
    if not 1 <= len(seq) <= 50:
        return None
    words = [_NUMBER_NAMES[n] if 0 <= n <= 20 else str(n) for n in seq]
    return (", ".join(words) + ".").capitalize()


def _relative(t: str, names: list[str], kind: str) -> str | None:
    alt = "|".join(names)
    m = re.fullmatch(
        rf"(?:what|which) {kind}(?: of the \w+)? (?:comes |is |falls |goes )?(?P<dir>after|before|following|"
        rf"preceding|prior to) (?P<x>{alt})|what(?: is|'s) the {kind} (?P<dir2>after|before) (?P<x2>{alt})"
        rf"|(?:what|which) {kind} (?:follows|precedes) (?P<x3>{alt})", t)
    if not m:
        return None
    x = m.group("x") or m.group("x2") or m.group("x3")
    direction = m.group("dir") or m.group("dir2") or ("after" if "follows" in t else "before")
    delta = 1 if direction in ("after", "following", "follows") else -1
    i = names.index(x)
    out = names[(i + delta) % len(names)]
    return f"{out.capitalize()} comes {'after' if delta > 0 else 'before'} {x.capitalize()}."


def _days_weeks(t: str) -> str | None:
    if m := re.fullmatch(r"how many days (?:are )?(?:there )?in a (week|year|leap year|fortnight)", t):
        n = {"week": 7, "year": 365, "leap year": 366, "fortnight": 14}[m.group(1)]
        return f"There are {n} days in a {m.group(1)}."
    if m := re.fullmatch(r"how many (days|months|weeks|hours|minutes|seconds) (?:are )?(?:there )?in an? "
                         r"(week|year|day|hour|minute)", t):
        table = {("days", "week"): 7, ("months", "year"): 12, ("weeks", "year"): 52, ("hours", "day"): 24,
                 ("minutes", "hour"): 60, ("seconds", "minute"): 60, ("days", "year"): 365,
                 ("minutes", "day"): 1440, ("seconds", "hour"): 3600}
        n = table.get((m.group(1), m.group(2)))
        if n is not None:
            return f"There are {n} {m.group(1)} in a{'n' if m.group(2) == 'hour' else ''} {m.group(2)}."
    return None


def _calendar(t: str, now: dt.datetime) -> str | None:
    day_of = {"today": 0, "tomorrow": 1, "yesterday": -1, "the day after tomorrow": 2,
              "the day before yesterday": -2}
    alt = "|".join(sorted(day_of, key=len, reverse=True))
    if m := re.fullmatch(rf"what(?: day(?: of the week)?| is| day is| was|'s)? ?(?:it |is it |was it )?"
                         rf"(?P<when>{alt})(?: be)?|what day (?:is|was|will) (?P<w2>{alt})(?: be)?"
                         rf"|what day (?:will it be|is it|was it) (?P<w3>{alt})"
                         rf"|what day (?:is it|of the week is it)(?: today)?", t):
        when = m.group("when") or m.group("w2") or m.group("w3") or "today"
        day = now + dt.timedelta(days=day_of[when])
        verb = "is" if when == "today" else ("was" if day_of[when] < 0 else "will be")
        return f"{when.capitalize()} {verb} {day.strftime('%A')}."
    if re.fullmatch(r"what(?: is|'s)? (?:the )?(?:date|today's date)(?: today)?(?: is it)?|what date is it(?: today)?"
                    r"|what is today's date|what's today's date", t):
        return f"Today is {now.strftime('%A')}, {now.strftime('%B')} {now.day}, {now.year}."
    if re.fullmatch(r"what(?: is|'s)? (?:the )?(?:current )?time(?: is it)?(?: now| right now)?|what time is it"
                    r"(?: now| right now)?", t):
        hour = now.hour % 12 or 12
        return f"It's {hour}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}."
    if re.fullmatch(r"what (?:month|year) is it(?: now)?|what(?: is|'s) the (?:current )?(?:month|year)", t):
        return (f"It's {now.strftime('%B')} {now.year}." if "month" in t else f"It's {now.year}.")
    return None


SKILLS: list[tuple[str, Callable[[str, dt.datetime], str | None]]] = [
    ("count", lambda t, _now: _count(t)),
    ("days", lambda t, _now: _relative(t, DAYS, "day")),
    ("months", lambda t, _now: _relative(t, MONTHS, "month")),
    ("calendar", _calendar),
    ("units", lambda t, _now: _days_weeks(t)),
    ("arithmetic", lambda t, _now: _arithmetic(t)),
]


def _one(clause: str, now: dt.datetime) -> SkillAnswer | None:
    t = normalize(clause)
    if not t:
        return None
    for name, fn in SKILLS:
        out = fn(t, now)
        if out:
            return SkillAnswer(out, name)
    return None


def _clauses(text: str) -> list[str]:
    # "What is two plus two, and what day comes after Friday?" -> two requests. A bare " and "
    # inside arithmetic ("add two and three") is not a split point: split only where a new
    # question word follows.
    return [c for c in re.split(r"(?:[,;.?!]\s*|\s)(?:and|also|then)\s+(?=(?:what|which|how|count|tell|"
                                r"can|could)\b)|[?!.]\s+(?=\w)", text, flags=re.I) if c.strip()]


def answer(text: str, now: dt.datetime | None = None) -> SkillAnswer | None:
    """A complete reply when every part of the utterance is a skill request, else None."""
    now = now or dt.datetime.now()
    parts = _clauses(text)
    if not parts or len(parts) > 4:
        return None
    answers = [_one(p, now) for p in parts]
    if any(a is None for a in answers):
        return None
    found = [a for a in answers if a is not None]
    return SkillAnswer(" ".join(a.text for a in found), "+".join(a.skill for a in found))


def facts(text: str, now: dt.datetime | None = None) -> list[str]:
    """Exact results for the parts of a longer request that a skill can compute."""
    now = now or dt.datetime.now()
    return [a.text for p in _clauses(text) if (a := _one(p, now)) is not None]
