#!/usr/bin/env python3
"""Regenerate Parley's spoken test fixtures with espeak-ng and sox.

    python3 scripts/make_fixtures.py audio     [--out DIR] [--compare DIR]
    python3 scripts/make_fixtures.py questions [--out DIR] [--compare DIR]
    python3 scripts/make_fixtures.py all
    python3 scripts/make_fixtures.py heldout   --out DIR

`audio` renders every clip listed in tests/fixtures/audio/manifest.json (text, voice, words
per minute, silences, phone version, digital silence, pink noise) into --out (default: that
folder, in place). `questions` renders issue 9's question set, defined in QUESTION_CALLS,
PAUSE_CALLS, BACKCHANNELS and INTERRUPTIONS below, into tests/fixtures/questions with its
manifest.json. `heldout` renders HELD_OUT (30 other questions, each in three of the question set's
voice/speed/condition combinations) into DIR only: a check that no setting was fitted to the
fixture clips (`scripts/bench_models.py --questions DIR`); it is never kept in the repo, so
nothing can be tuned on it by accident. `--compare DIR` then checks the result against the clips in DIR (format equal,
duration within 5 %) and exits 1 when they differ.

Deterministic: espeak-ng is; sox runs with -R (fixed seed for dither and noise), so the same
espeak-ng and sox versions give byte-identical files. Needs espeak-ng and sox on PATH
(scripts/install-system-deps.sh installs both); standard library only otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AUDIO_DIR = ROOT / "tests" / "fixtures" / "audio"
QUESTIONS_DIR = ROOT / "tests" / "fixtures" / "questions"

RATE = 16000
PHONE_RATE = 8000
LEAD_S = 0.5  # silence before the speech, as in the original clips
TRAIL_S = 1.5  # silence after it
# The question set keeps under ~8 MB: espeak-ng's own silence is cut ("trimmed") and the padding
# is shorter where a longer one buys nothing (callers stream silence after a clip anyway); the
# pause set keeps 1.5 s so the end of a turn is a longer silence than any pause inside it.
PADDING_S = {"questions": (0.3, 1.0), "pause": (0.3, 1.5), "backchannel": (0.3, 0.5), "interruption": (0.3, 1.0)}
NOISE_VOLUME = 0.05  # sox `vol` for "low pink noise": about -40 dBFS RMS, the original pink_noise_5s level
ULAW = "G.711 mu-law"
PCM = "pcm_s16le"


class FixtureError(Exception):
    """A problem worth one line to the user (missing tool, unknown voice, bad manifest)."""


def say(msg: str) -> None:
    print(msg, flush=True)


def run(cmd: list[str]) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise FixtureError(f"{cmd[0]} not found (scripts/install-system-deps.sh installs espeak-ng and sox)") from e
    # espeak-ng reports an unknown voice on stderr but may still exit 0
    if proc.returncode != 0 or "Error" in proc.stderr:
        raise FixtureError(f"{' '.join(cmd[:3])}… failed: {(proc.stderr or proc.stdout).strip()[:300]}")


def sox(*args: str) -> None:
    # -R: repeatable (fixed seed for dither and synth noise); -V1: errors only
    run(["sox", "-R", "-V1", *args])


# ---------------------------------------------------------------------------- WAV reading


@dataclass
class WavInfo:
    format_tag: int  # 1 = PCM, 7 = mu-law
    channels: int
    rate: int
    bits: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate

    @property
    def encoding(self) -> str:
        return {1: PCM, 7: ULAW}.get(self.format_tag, f"format {self.format_tag}")


def wav_info(path: Path) -> WavInfo:
    """Header of a RIFF/WAVE file (the stdlib `wave` module cannot read mu-law)."""
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise FixtureError(f"{path}: not a RIFF/WAVE file")
    pos, fmt, size = 12, None, None
    while pos + 8 <= len(data):
        cid, clen = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", data[pos + 8:pos + 24])
        elif cid == b"data":
            size = min(clen, len(data) - pos - 8)
            break
        pos += 8 + clen + (clen & 1)
    if fmt is None or size is None:
        raise FixtureError(f"{path}: WAV without fmt or data chunk")
    tag, channels, rate, _byte_rate, align, bits = fmt
    return WavInfo(tag, channels, rate, bits, size // align)


# ---------------------------------------------------------------------------- voices


def check_voices(voices: set[str]) -> None:
    """espeak-ng falls back silently on an unknown variant (en-us+nosuch speaks en-us): refuse."""
    try:
        listing = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True).stdout
        version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    except FileNotFoundError as e:
        raise FixtureError("espeak-ng not found (scripts/install-system-deps.sh installs it)") from e
    if shutil.which("sox") is None:
        raise FixtureError("sox not found (scripts/install-system-deps.sh installs it)")
    languages = {line.split()[1] for line in listing.splitlines()[1:] if len(line.split()) > 1}
    data_dir = Path(version.split("Data at:")[-1].strip()) if "Data at:" in version else None
    for voice in sorted(voices):
        base, _, variant = voice.partition("+")
        if base not in languages:
            raise FixtureError(f"espeak-ng has no voice {base!r} (see `espeak-ng --voices`)")
        if variant and data_dir is not None and not (data_dir / "voices" / "!v" / variant).exists():
            raise FixtureError(f"espeak-ng has no voice variant {variant!r} (in {data_dir}/voices/!v)")
    say(f"espeak-ng: {version.strip().splitlines()[0]}; sox: "
        f"{subprocess.run(['sox', '--version'], capture_output=True, text=True).stdout.split('SoX')[-1].strip()}")


def espeak_voice(entry: dict[str, Any]) -> str:
    voice = str(entry.get("voice", ""))
    return voice.removeprefix("espeak-ng ").strip()


# ---------------------------------------------------------------------------- rendering


def speak(text: str, voice: str, wpm: int, out: Path) -> None:
    """espeak-ng at its own 22.05 kHz; resampled later so every path shares one resampler."""
    run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(out), text])


def trim(src: Path, dst: Path, *, head: bool, tail: bool) -> None:
    """Cut espeak-ng's own silence (below 0.1 % of full scale) at the start and/or end."""
    effects: list[str] = []
    if head:
        effects += ["silence", "1", "0.01", "0.1%"]
    if tail:
        effects += ["reverse", "silence", "1", "0.01", "0.1%", "reverse"]
    sox(str(src), str(dst), *effects)


def to_16k(src: Path, dst: Path, *effects: str) -> None:
    sox(str(src), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(dst), *effects)


def render_speech(entry: dict[str, Any], dst: Path, tmp: Path) -> dict[str, Any]:
    """16 kHz mono s16 clip: lead silence, speech (optionally split by a pause), trail silence,
    optionally low pink noise over the whole clip. Returns the measured fields."""
    voice, wpm = espeak_voice(entry), int(entry.get("words_per_minute", 175))
    text = str(entry.get("espeak_input") or entry["text"])
    lead, trail = float(entry.get("leading_silence_s", LEAD_S)), float(entry.get("trailing_silence_s", TRAIL_S))
    measured: dict[str, Any] = {}
    clean = tmp / "clean.wav"
    before = entry.get("pause_after")
    if before:
        # Two utterances joined by exact silence: the pause sits where the manifest says, and
        # espeak-ng's own phrase-final silence after the first part is cut so it does not add to it.
        rest = text[len(before):].strip()
        if not text.startswith(before) or not rest:
            raise FixtureError(f"{entry['file']}: pause_after {before!r} is not a leading part of the text")
        speak(before, voice, wpm, tmp / "a_raw.wav")
        speak(rest, voice, wpm, tmp / "b_raw.wav")
        trim(tmp / "a_raw.wav", tmp / "a_trim.wav", head=False, tail=True)
        trim(tmp / "b_raw.wav", tmp / "b_trim.wav", head=True, tail=bool(entry.get("trimmed")))
        to_16k(tmp / "a_trim.wav", tmp / "a.wav", "pad", str(lead), str(entry["pause_s"]))
        to_16k(tmp / "b_trim.wav", tmp / "b.wav", "pad", "0", str(trail))
        sox(str(tmp / "a.wav"), str(tmp / "b.wav"), str(clean))
        measured["pause_start_s"] = round(wav_info(tmp / "a.wav").duration_s - float(entry["pause_s"]), 3)
    else:
        speak(text, voice, wpm, tmp / "raw.wav")
        if entry.get("trimmed"):
            trim(tmp / "raw.wav", tmp / "trim.wav", head=True, tail=True)
            shutil.move(tmp / "trim.wav", tmp / "raw.wav")
        to_16k(tmp / "raw.wav", clean, "pad", str(lead), str(trail))
    if entry.get("noise") == "pink":
        frames = wav_info(clean).frames
        sox("-n", "-r", str(RATE), "-c", "1", "-b", "16", str(tmp / "noise.wav"),
            "synth", f"{frames}s", "pinknoise", "vol", str(entry.get("noise_volume", NOISE_VOLUME)))
        # -v 1 on each input: sox -m would otherwise halve both
        sox("-m", "-v", "1", str(clean), "-v", "1", str(tmp / "noise.wav"), str(dst))
    else:
        shutil.copyfile(clean, dst)
    return measured


def to_phone(src: Path, dst: Path) -> None:
    """8 kHz G.711 mu-law, the phone line's audio."""
    sox(str(src), "-r", str(PHONE_RATE), "-c", "1", "-e", "u-law", str(dst))


def render(entry: dict[str, Any], out_dir: Path, tmp: Path, sources: dict[str, Path]) -> dict[str, Any]:
    """Write entry["file"] into out_dir; return the entry with measured fields filled in."""
    dst = out_dir / entry["file"]
    entry = dict(entry)
    synth = entry.get("synth")
    if synth == "silence":
        # -D: no dither, so every sample is exactly zero (digital silence)
        run(["sox", "-R", "-V1", "-D", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(dst),
             "trim", "0", str(entry["duration_s"])])
        what = f"{entry['duration_s']} s digital silence"
    elif synth == "pink_noise":
        sox("-n", "-r", str(RATE), "-c", "1", "-b", "16", str(dst),
            "synth", str(entry["duration_s"]), "pinknoise", "vol", str(entry.get("noise_volume", NOISE_VOLUME)))
        what = f"{entry['duration_s']} s pink noise at vol {entry.get('noise_volume', NOISE_VOLUME)}"
    elif entry.get("source"):
        # the phone version of another clip in the same manifest
        to_phone(sources[entry["source"]], dst)
        what = f"8 kHz mu-law of {entry['source']}"
    else:
        tmp16 = tmp / "speech16.wav"
        entry.update(render_speech(entry, tmp16, tmp))
        if entry.get("phone"):
            to_phone(tmp16, dst)
        else:
            shutil.copyfile(tmp16, dst)
        sources[entry["file"]] = dst
        extras = [f"{entry['pause_s']} s pause at {entry['pause_start_s']} s" if entry.get("pause_after") else "",
                  "pink noise" if entry.get("noise") == "pink" else "",
                  "8 kHz mu-law" if entry.get("phone") else ""]
        what = (f"espeak-ng {espeak_voice(entry)} {entry.get('words_per_minute', 175)} wpm "
                f"{entry['text']!r}" + "".join(f", {x}" for x in extras if x))
    info = wav_info(dst)
    if "duration_s" in entry or entry.get("set"):
        entry["duration_s"] = round(info.duration_s, 3)
    say(f"  {entry['file']:<34} {info.duration_s:6.2f} s {info.rate // 1000:>2} kHz {info.encoding:<13} {what}")
    return entry


def render_all(entries: list[dict[str, Any]], out_dir: Path) -> list[dict[str, Any]]:
    check_voices({espeak_voice(e) for e in entries if espeak_voice(e)})
    out_dir.mkdir(parents=True, exist_ok=True)
    sources: dict[str, Path] = {}
    done: list[dict[str, Any]] = []
    # clips that are the phone version of another one come after their source
    for entry in sorted(entries, key=lambda e: bool(e.get("source"))):
        with tempfile.TemporaryDirectory(prefix="parley-fixture-") as tmp:
            done.append(render(entry, out_dir, Path(tmp), sources))
    order = {e["file"]: i for i, e in enumerate(entries)}
    return sorted(done, key=lambda e: order[e["file"]])


def write_manifest(entries: list[dict[str, Any]], path: Path) -> None:
    path.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n")
    say(f"wrote {path} ({len(entries)} clips)")


def compare(out_dir: Path, ref_dir: Path, files: list[str]) -> bool:
    """Same format and duration within 5 % for every file; prints one line per file."""
    ok = True
    say(f"comparing {out_dir} with {ref_dir}")
    for name in files:
        ref_path = ref_dir / name
        if not ref_path.exists():
            say(f"  {name:<34} missing in {ref_dir}")
            ok = False
            continue
        a, b = wav_info(out_dir / name), wav_info(ref_path)
        same_format = (a.format_tag, a.channels, a.rate, a.bits) == (b.format_tag, b.channels, b.rate, b.bits)
        diff = (a.duration_s - b.duration_s) / b.duration_s
        good = same_format and abs(diff) <= 0.05
        ok &= good
        say(f"  {name:<34} {a.duration_s:6.3f} s vs {b.duration_s:6.3f} s ({diff:+.1%}), "
            f"{a.rate} Hz {a.encoding} vs {b.rate} Hz {b.encoding}: {'ok' if good else 'DIFFERENT'}")
    return ok


# ---------------------------------------------------------------------------- issue 9's question set
#
# Questions the tests do not use (none is a sentence of tests/fixtures/audio). `expect` holds
# lower-case substrings a correct answer contains: {"any": [...]} needs one of them, {"all": [...]}
# every item; an item is a string or a nested {"any"/"all"} (numbers accept digits and words).
# None: any answer will do (a greeting, a name given to be remembered, a backchannel).

Expect = dict[str, list[Any]] | None


def num(*forms: str) -> dict[str, list[Any]]:
    return {"any": list(forms)}


def any_of(*forms: str) -> Expect:
    return {"any": list(forms)}


def all_of(*items: Any) -> Expect:
    return {"all": list(items)}


# (id, category, text, expect); a call is a list of turns spoken in order by one caller.
Turn = tuple[str, str, str, Expect]
QUESTION_CALLS: list[list[Turn]] = [
    [("capital_italy", "capital", "What is the capital of Italy?", any_of("rome"))],
    [("legs_dog", "animal", "How many legs does a dog have?", num("4", "four"))],
    [("add_7_5", "arithmetic", "What is seven plus five?", num("12", "twelve"))],
    [("count_1_4", "counting", "Please count from one to four.",
      all_of(num("1", "one"), num("2", "two"), num("3", "three"), num("4", "four")))],
    [("after_wednesday", "day", "What day comes after Wednesday?", any_of("thursday"))],
    [("name_priya_1", "memory", "Hi, my name is Priya. Nice to meet you.", None),
     ("name_priya_2", "memory", "Can you tell me what my name is?", any_of("priya"))],
    [("capital_japan", "capital", "Which city is the capital of Japan?", any_of("tokyo"))],
    [("opposite_cold", "opposite", "What is the opposite of cold?", any_of("hot", "warm"))],
    [("sub_9_4", "arithmetic", "What is nine minus four?", num("5", "five"))],
    [("two_part_egypt", "two-part", "What is the capital of Egypt, and what is two plus two?",
      all_of("cairo", num("4", "four")))],
    [("king_jungle", "animal", "Which animal is called the king of the jungle?", any_of("lion"))],
    [("month_after_march", "month", "Which month comes after March?", any_of("april"))],
    [("name_marcus_1", "memory", "Hello, I'm Marcus.", None),
     ("name_marcus_2", "arithmetic", "What is five plus two?", num("7", "seven")),
     ("name_marcus_3", "memory", "Do you remember my name?", any_of("marcus"))],
    [("mul_6_3", "arithmetic", "What is six times three?", num("18", "eighteen"))],
    [("mix_red_white", "colour", "What colour do you get if you mix red and white?", any_of("pink"))],
    [("largest_planet", "science", "What is the largest planet in our solar system?", any_of("jupiter"))],
    [("count_6_9", "counting", "Can you count from six to nine?",
      all_of(num("6", "six"), num("7", "seven"), num("8", "eight"), num("9", "nine")))],
    [("name_sofia_1", "memory", "My name is Sofia, please keep that in mind.", None),
     ("name_sofia_2", "memory", "What did I say my name was?", any_of("sofia"))],
    [("opposite_big", "opposite", "What is the opposite of big?", any_of("small", "little", "tiny"))],
    [("water_freeze", "science", "At what temperature in Celsius does water freeze?", num("0", "zero"))],
    [("div_20_4", "arithmetic", "What is twenty divided by four?", num("5", "five"))],
    [("before_sunday", "day", "What day comes before Sunday?", any_of("saturday"))],
    [("two_part_friday", "two-part", "What day comes after Friday, and what is the opposite of up?",
      all_of("saturday", "down"))],
    [("name_daniel_1", "memory", "Hey there, this is Daniel calling.", None),
     ("name_daniel_2", "opposite", "What is the opposite of left?", any_of("right")),
     ("name_daniel_3", "memory", "Please tell me my name again.", any_of("daniel"))],
    [("bees_make", "animal", "What do bees make?", any_of("honey"))],
    [("grass_colour", "colour", "What colour is grass?", any_of("green"))],
    [("days_in_week", "counting", "How many days are there in a week?", num("7", "seven"))],
    [("name_olivia_1", "memory", "Good morning, my name is Olivia.", None),
     ("name_olivia_2", "memory", "Who am I? Say my name.", any_of("olivia"))],
    [("add_10_15", "arithmetic", "How much is ten plus fifteen?", num("25", "twenty-five", "twenty five"))],
    [("first_month", "month", "What is the first month of the year?", any_of("january"))],
    [("plants_gas", "science", "Which gas do plants take in from the air?", any_of("carbon dioxide", "co2"))],
    [("two_part_bicycle", "two-part", "How many wheels does a bicycle have, and what colour is snow?",
      all_of(num("2", "two"), "white"))],
    [("opposite_fast", "opposite", "What is the opposite of fast?", any_of("slow"))],
    [("name_hannah_1", "memory", "Hello there, I am Hannah.", None),
     ("name_hannah_2", "colour", "What colour are ripe bananas?", any_of("yellow")),
     ("name_hannah_3", "memory", "What name did I give you?", any_of("hannah"))],
    [("cow_sound", "animal", "What sound does a cow make?", any_of("moo"))],
    [("mul_8_8", "arithmetic", "What is eight times eight?", num("64", "sixty-four", "sixty four"))],
    [("count_back_3", "counting", "Count backwards from three to one.",
      all_of(num("3", "three"), num("2", "two"), num("1", "one")))],
    [("opposite_day", "opposite", "What is the opposite of day?", any_of("night"))],
    [("sun_rises", "science", "In which direction does the sun rise?", any_of("east"))],
    [("insect_legs", "animal", "How many legs does an insect have?", num("6", "six"))],
    [("two_part_sky", "two-part", "Tell me the colour of a clear sky, and what three plus three is.",
      all_of("blue", num("6", "six")))],
    [("capital_canada", "capital", "What is the capital of Canada?", any_of("ottawa"))],
]

# (id, category, text, pause_after, expect): pause_after is the part spoken before the pause.
PauseTurn = tuple[str, str, str, str | None, Expect]
PAUSE_CALLS: list[list[PauseTurn]] = [
    [("wondering_up", "opposite", "I was wondering, what is the opposite of up?", "I was wondering,", any_of("down"))],
    [("so_4_4", "arithmetic", "So, um, what is four plus four?", "So, um,", num("8", "eight"))],
    [("think_tuesday", "day", "Let me think. What day comes after Tuesday?", "Let me think.", any_of("wednesday"))],
    [("question_horse", "animal", "My question is, how many legs does a horse have?", "My question is,",
      num("4", "four"))],
    [("okay_portugal", "capital", "Okay, so what is the capital of Portugal?", "Okay, so", any_of("lisbon"))],
    [("like_green", "colour", "I would like to know what colour you get by mixing blue and yellow.",
      "I would like to know", any_of("green"))],
    [("tell_october", "month", "Can you tell me what month comes after October?", "Can you tell me",
      any_of("november"))],
    [("name_laura_1", "memory", "Hello, my name is Laura. Please remember that.", "Hello, my name is Laura.", None),
     ("name_laura_2", "memory", "What name did I tell you?", None, any_of("laura"))],
    [("tell_10_3", "arithmetic", "Tell me, what is ten minus three?", "Tell me,", num("7", "seven"))],
    [("well_woof", "animal", "Well, which animal says woof?", "Well,", any_of("dog"))],
    [("quick_ocean", "science", "Quick question. What is the largest ocean on Earth?", "Quick question.",
      any_of("pacific"))],
    [("forgot_friday", "day", "I forgot something. What day comes before Friday?", "I forgot something.",
      any_of("thursday"))],
    [("please_count", "counting", "Could you please count from two to five?", "Could you please",
      all_of(num("2", "two"), num("3", "three"), num("4", "four"), num("5", "five")))],
    [("right_3_4", "arithmetic", "Right, so what is three times four?", "Right, so", num("12", "twelve"))],
    [("mind_happy", "opposite", "If you don't mind, what is the opposite of happy?", "If you don't mind,",
      any_of("sad", "unhappy"))],
    [("hmm_months", "counting", "Hmm, let me see, how many months are in a year?", "Hmm, let me see,",
      num("12", "twelve"))],
    [("need_greece", "capital", "I need to know the capital of Greece.", "I need to know", any_of("athens"))],
    [("sorry_tomato", "colour", "Sorry, what colour is a ripe tomato?", "Sorry,", any_of("red"))],
    [("forget_boil", "science", "Before I forget, at what temperature does water boil in Celsius?",
      "Before I forget,", num("100", "hundred"))],
    [("after_19", "counting", "And then, what number comes after nineteen?", "And then,", num("20", "twenty"))],
    [("one_thing_5_5", "arithmetic", "Just one thing. What is five times five?", "Just one thing.",
      num("25", "twenty-five", "twenty five"))],
    [("um_wool", "animal", "Um, which animal gives us wool?", "Um,", any_of("sheep"))],
]

# Short acknowledgements said while the agent talks: they must not stop it. (id, text, espeak input)
BACKCHANNELS: list[tuple[str, str, str | None]] = [
    ("uh_huh", "Uh-huh.", None),
    ("yeah", "Yeah.", None),
    ("okay", "Okay.", None),
    ("right", "Right.", None),
    # espeak-ng spells "Mm-hmm" out as letters ("em em hum"); phonemes say the sound
    ("mm_hmm", "Mm-hmm.", "[[m:'h@m]]"),
]
BACKCHANNEL_VOICES = ["en-gb-x-rp", "en-us+f2"]

# Said while the agent talks: they must stop it. (id, category, text, expect)
INTERRUPTIONS: list[Turn] = [
    ("stop", "command", "Stop.", None),
    ("wait", "command", "Wait.", None),
    ("hold_on", "command", "Hold on.", None),
    ("stop_please", "command", "Stop, please.", None),
    ("wait_moment", "command", "Wait a moment.", None),
    ("hold_on_2_6", "question", "Hold on, what is two plus six?", num("8", "eight")),
    ("wait_open", "question", "Wait, what is the opposite of open?", any_of("closed", "shut")),
    ("sorry_planet", "question", "Sorry to interrupt, which planet do we live on?", any_of("earth")),
]

# Beyond the original clips' voices (en-us, en-gb, en-us+m1/m3/f3) on purpose: accents and variants.
# Not en-gb-scotland: its espeak-ng rendering was barely intelligible to Whisper tiny.en (word error
# rate 0.22 on plain sentences, over 1.0 with the low pink noise) where the others gave 0.03-0.23.
VOICES = ["en-gb-x-rp", "en-us+f2", "en-029", "en-us-nyc", "en-gb+f4", "en-us+m5", "en-gb-x-gbclan",
          "en-us", "en-gb"]
WPMS = [140, 150, 160, 170, 180, 190, 200]
# Per call, in turn: a quarter with low pink noise, a quarter as phone audio (8 kHz mu-law).
CONDITIONS = ["clean", "noise", "clean", "phone"]
PAUSES_S = [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]


# Questions for `heldout`: same kinds as QUESTION_CALLS, none of their sentences.
HELD_OUT: list[tuple[str, Expect]] = [
    ("What is the capital of Germany?", any_of("berlin")),
    ("How many eyes does a cat have?", num("2", "two")),
    ("What is four plus nine?", num("13", "thirteen")),
    ("Which season comes after winter?", any_of("spring")),
    ("What colour is a lemon?", any_of("yellow")),
    ("What is the opposite of wet?", any_of("dry")),
    ("How many hours are in a day?", num("24", "twenty four")),
    ("Count from five to eight.", all_of(num("5", "five"), num("6", "six"), num("7", "seven"), num("8", "eight"))),
    ("What is twelve minus five?", num("7", "seven")),
    ("Which animal barks?", any_of("dog")),
    ("What is the capital of Kenya?", any_of("nairobi")),
    ("How many sides does a triangle have?", num("3", "three")),
    ("What do cows drink?", any_of("water")),
    ("What is the opposite of early?", any_of("late")),
    ("What is three times seven?", num("21", "twenty one")),
    ("Which month comes before June?", any_of("may")),
    ("What colour is the sun?", any_of("yellow", "white", "orange")),
    ("Where do fish live?", any_of("water", "sea", "ocean", "river", "lake")),
    ("What is ten plus ten?", num("20", "twenty")),
    ("What day comes after Monday?", any_of("tuesday")),
    ("How many minutes are in an hour?", num("60", "sixty")),
    ("What is the opposite of light?", any_of("dark", "heavy")),
    ("Which planet is closest to the sun?", any_of("mercury")),
    ("Name a fruit that is yellow.", any_of("banana", "lemon", "pineapple", "mango")),
    ("What is fifteen divided by three?", num("5", "five")),
    ("How many toes do people have?", num("10", "ten")),
    ("What is the capital of Spain?", any_of("madrid")),
    ("At what temperature does water freeze?", any_of("zero", "0", "thirty two", "32")),
    ("Tell me the opposite of young.", any_of("old")),
    ("Which bird says quack?", any_of("duck")),
]


def heldout_entries() -> list[dict[str, Any]]:
    entries = []
    for n, (text, expect) in enumerate(HELD_OUT, 1):
        for k in range(3):
            cond = call_conditions(3 * n + k)
            cond["words_per_minute"] = WPMS[(5 * n + 3 * k) % len(WPMS)]
            entries.append(clip_entry(f"h{n:02d}{'abc'[k]}", "questions", f"h{n:02d}{'abc'[k]}", 1, "q", "heldout",
                                      text, expect, cond))
    return entries


def call_conditions(index: int) -> dict[str, Any]:
    """Voice, speed, noise and phone of the index-th call: one caller per call, so the turns
    of a memory call share them. Cycles of different lengths so no voice always gets noise."""
    cond = CONDITIONS[index % len(CONDITIONS)]
    return {
        "voice": f"espeak-ng {VOICES[index % len(VOICES)]}",
        "words_per_minute": WPMS[(index * 3) % len(WPMS)],
        "noise": "pink" if cond == "noise" else None,
        "noise_volume": NOISE_VOLUME if cond == "noise" else None,
        "phone": cond == "phone",
    }


def clip_entry(prefix: str, set_name: str, call: str, order: int, turn_id: str, category: str, text: str,
               expect: Expect, cond: dict[str, Any]) -> dict[str, Any]:
    suffix = "_noise" if cond["noise"] else "_8k_ulaw" if cond["phone"] else ""
    return {
        "file": f"{prefix}_{turn_id}{suffix}.wav",
        "set": set_name,
        "category": category,
        "text": text,
        **cond,
        "sample_rate": PHONE_RATE if cond["phone"] else RATE,
        "encoding": ULAW if cond["phone"] else PCM,
        "leading_silence_s": PADDING_S[set_name][0],
        "trailing_silence_s": PADDING_S[set_name][1],
        "trimmed": True,
        "duration_s": None,
        "call": call,
        "order": order,
        "pause_after": None,
        "pause_start_s": None,
        "pause_s": None,
        "barge_in": None,
        "expect": expect,
    }


def question_entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    call_index = 0
    for n, call in enumerate(QUESTION_CALLS, 1):
        cond = call_conditions(call_index)
        call_index += 1
        for order, (turn_id, category, text, expect) in enumerate(call, 1):
            entries.append(clip_entry(f"q{n:02d}", "questions", f"q{n:02d}", order, turn_id, category, text,
                                      expect, cond))
    for n, pcall in enumerate(PAUSE_CALLS, 1):
        cond = call_conditions(call_index)
        call_index += 1
        for order, (turn_id, category, text, before, expect) in enumerate(pcall, 1):
            e = clip_entry(f"p{n:02d}", "pause", f"p{n:02d}", order, turn_id, category, text, expect, cond)
            if before:
                e["pause_after"] = before
                e["pause_s"] = PAUSES_S[(n - 1) % len(PAUSES_S)]
            entries.append(e)
    for n, (turn_id, text, espeak_input) in enumerate(
            [b for v in BACKCHANNEL_VOICES for b in BACKCHANNELS], 1):
        voice = BACKCHANNEL_VOICES[(n - 1) // len(BACKCHANNELS)]
        cond = {"voice": f"espeak-ng {voice}", "words_per_minute": WPMS[(n * 3) % len(WPMS)],
                "noise": None, "noise_volume": None, "phone": False}
        e = clip_entry(f"b{n:02d}", "backchannel", f"b{n:02d}", 1, turn_id, "backchannel", text, None, cond)
        e["barge_in"] = False
        if espeak_input:
            e["espeak_input"] = espeak_input
        entries.append(e)
    for n, (turn_id, category, text, expect) in enumerate(INTERRUPTIONS, 1):
        cond = dict(call_conditions(call_index), noise=None, noise_volume=None, phone=False)
        call_index += 1
        e = clip_entry(f"i{n:02d}", "interruption", f"i{n:02d}", 1, turn_id, category, text, expect, cond)
        e["barge_in"] = True
        entries.append(e)
    return entries


def check_unused(entries: list[dict[str, Any]]) -> None:
    """The question set must not repeat a sentence the tests already speak."""
    manifest = AUDIO_DIR / "manifest.json"
    if not manifest.exists():
        return
    used = {str(e.get("text", "")).strip().lower() for e in json.loads(manifest.read_text())}
    for e in entries:
        if e["text"].strip().lower() in used:
            raise FixtureError(f"{e['file']}: {e['text']!r} is a sentence of {manifest}")


# ---------------------------------------------------------------------------- commands


def cmd_audio(out: Path | None, ref: Path | None) -> bool:
    manifest = AUDIO_DIR / "manifest.json"
    entries = json.loads(manifest.read_text())
    out_dir = out or AUDIO_DIR
    say(f"audio: {len(entries)} clips from {manifest} -> {out_dir}")
    done = render_all(entries, out_dir)
    write_manifest(done, out_dir / "manifest.json")
    return compare(out_dir, ref, [e["file"] for e in done]) if ref else True


def cmd_questions(out: Path | None, ref: Path | None) -> bool:
    entries = question_entries()
    check_unused(entries)
    out_dir = out or QUESTIONS_DIR
    say(f"questions: {len(entries)} clips -> {out_dir}")
    old_manifest = out_dir / "manifest.json"
    if old_manifest.exists():
        # a clip dropped from the tables must not linger next to the new manifest; only files
        # the previous manifest listed are removed, never anything else in the folder
        for old in json.loads(old_manifest.read_text()):
            (out_dir / Path(old["file"]).name).unlink(missing_ok=True)
    done = render_all(entries, out_dir)
    write_manifest(done, out_dir / "manifest.json")
    total = sum((out_dir / e["file"]).stat().st_size for e in done)
    by_set: dict[str, int] = {}
    for e in done:
        by_set[e["set"]] = by_set.get(e["set"], 0) + 1
    say(f"questions: {', '.join(f'{k} {v}' for k, v in by_set.items())}; {total / 1e6:.1f} MB of WAV")
    return compare(out_dir, ref, [e["file"] for e in done]) if ref else True


def cmd_heldout(out: Path) -> bool:
    entries = heldout_entries()
    check_unused(entries)
    fixtures = {e["text"].strip().lower() for e in question_entries()}
    for e in entries:
        if e["text"].strip().lower() in fixtures:
            raise FixtureError(f"held-out {e['text']!r} is a sentence of the question set")
    say(f"heldout: {len(entries)} clips -> {out}")
    done = render_all(entries, out)
    write_manifest(done, out / "manifest.json")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["audio", "questions", "all", "heldout"])
    parser.add_argument("--out", type=Path, help="output folder (default: the fixture folder, in place)")
    parser.add_argument("--compare", type=Path, metavar="DIR",
                        help="check format and duration (within 5 %%) against the clips in DIR")
    args = parser.parse_args(argv)
    if args.what == "all" and (args.out or args.compare):
        parser.error("--out/--compare need `audio` or `questions`")
    if args.what == "heldout" and not args.out:
        parser.error("heldout needs --out DIR (it is not kept in the repo)")
    if args.compare and not (args.compare / "manifest.json").is_file():
        parser.error(f"--compare {args.compare}: no manifest.json there")
    try:
        ok = True
        if args.what in ("audio", "all"):
            ok &= cmd_audio(args.out, args.compare)
        if args.what in ("questions", "all"):
            ok &= cmd_questions(args.out, args.compare)
        if args.what == "heldout":
            ok &= cmd_heldout(args.out)
    except FixtureError as e:
        print(f"make_fixtures: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"make_fixtures: {e}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
