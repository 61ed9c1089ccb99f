"""The audio fixtures agree with their manifests (fast: reads WAV headers and samples only).

tests/fixtures/audio holds the clips the tests speak; tests/fixtures/questions holds issue 9's
question set (scripts/make_fixtures.py writes both). A clip that is missing, has the wrong rate or
encoding, holds no speech, or a manifest field that the evaluation would misread fails here.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
AUDIO = FIXTURES / "audio"
QUESTIONS = FIXTURES / "questions"
ENCODINGS = {1: "pcm_s16le", 7: "G.711 mu-law"}


@dataclass
class Wav:
    format_tag: int
    channels: int
    rate: int
    bits: int
    samples: list[int]  # linear, 16-bit scale

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate

    def rms(self, start_s: float = 0.0, end_s: float | None = None) -> float:
        part = self.samples[int(start_s * self.rate):None if end_s is None else int(end_s * self.rate)]
        return math.sqrt(sum(x * x for x in part) / len(part)) if part else 0.0


def ulaw_to_linear(byte: int) -> int:
    """G.711 mu-law expansion (the stdlib's audioop is gone in Python 3.13)."""
    u = ~byte & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return (0x84 - t) if u & 0x80 else (t - 0x84)


def read_wav(path: Path) -> Wav:
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", f"{path.name}: not RIFF/WAVE"
    pos, fmt, body = 12, None, None
    while pos + 8 <= len(data):
        cid, clen = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", data[pos + 8:pos + 24])
        elif cid == b"data":
            body = data[pos + 8:pos + 8 + clen]
            assert len(body) == clen, f"{path.name}: data chunk truncated"
            break
        pos += 8 + clen + (clen & 1)
    assert fmt is not None and body is not None, f"{path.name}: no fmt or data chunk"
    tag, channels, rate, _, _, bits = fmt
    if tag == 1 and bits == 16:
        samples = list(struct.unpack(f"<{len(body) // 2}h", body))
    elif tag == 7 and bits == 8:
        samples = [ulaw_to_linear(b) for b in body]
    else:
        raise AssertionError(f"{path.name}: unexpected format tag {tag} with {bits} bits")
    return Wav(tag, channels, rate, bits, samples)


def load(folder: Path) -> list[dict[str, Any]]:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def audio_manifest() -> list[dict[str, Any]]:
    return load(AUDIO)


@pytest.fixture(scope="module")
def questions() -> list[dict[str, Any]]:
    return load(QUESTIONS)


@pytest.fixture(scope="module")
def wavs() -> dict[Path, Wav]:
    return {p: read_wav(p) for folder in (AUDIO, QUESTIONS) for p in folder.glob("*.wav")}


@pytest.mark.parametrize("folder", [AUDIO, QUESTIONS], ids=["audio", "questions"])
def test_manifest_lists_exactly_the_files(folder: Path) -> None:
    listed = [e["file"] for e in load(folder)]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert sorted(listed) == sorted(p.name for p in folder.glob("*.wav"))


@pytest.mark.parametrize("folder", [AUDIO, QUESTIONS], ids=["audio", "questions"])
def test_every_clip_has_its_rate_encoding_and_duration(folder: Path, wavs: dict[Path, Wav]) -> None:
    for e in load(folder):
        w = wavs[folder / e["file"]]
        assert w.channels == 1, e["file"]
        assert w.rate == e.get("sample_rate", 16000), e["file"]
        assert ENCODINGS[w.format_tag] == e.get("encoding", "pcm_s16le"), e["file"]
        if e.get("duration_s") is not None:
            assert abs(w.duration_s - e["duration_s"]) < 0.01, e["file"]
        assert 0.5 < w.duration_s < 15, f"{e['file']}: {w.duration_s:.2f} s"


@pytest.mark.parametrize("folder", [AUDIO, QUESTIONS], ids=["audio", "questions"])
def test_speech_clips_hold_speech_between_their_silences(folder: Path, wavs: dict[Path, Wav]) -> None:
    for e in load(folder):
        w = wavs[folder / e["file"]]
        if not e["text"]:
            continue
        lead, trail = e.get("leading_silence_s", 0.5), e.get("trailing_silence_s", 1.5)
        speech = w.rms(lead, w.duration_s - trail)
        assert speech > 500, f"{e['file']}: speech RMS {speech:.0f}"
        if not e.get("noise"):
            # the padding is silence (dither at most), well below the speech
            assert w.rms(0, lead * 0.8) < 50, e["file"]
            assert w.rms(w.duration_s - trail * 0.8) < 50, e["file"]


def test_silence_and_noise_clips(audio_manifest: list[dict[str, Any]], wavs: dict[Path, Wav]) -> None:
    by_synth = {e.get("synth"): wavs[AUDIO / e["file"]] for e in audio_manifest if e.get("synth")}
    assert max(abs(x) for x in by_synth["silence"].samples) <= 1
    assert 100 < by_synth["pink_noise"].rms() < 1000  # low: around -40 dBFS


def test_phone_version_matches_its_source(audio_manifest: list[dict[str, Any]], wavs: dict[Path, Wav]) -> None:
    for e in audio_manifest:
        if e.get("source"):
            assert abs(wavs[AUDIO / e["file"]].duration_s - wavs[AUDIO / e["source"]].duration_s) < 0.01


def valid_expect(expect: Any) -> bool:
    if isinstance(expect, str):
        return bool(expect) and expect == expect.lower()
    return (isinstance(expect, dict) and len(expect) == 1 and set(expect) <= {"any", "all"}
            and isinstance(next(iter(expect.values())), list) and len(next(iter(expect.values()))) > 0
            and all(valid_expect(x) for x in next(iter(expect.values()))))


def test_question_set_composition(questions: list[dict[str, Any]], audio_manifest: list[dict[str, Any]]) -> None:
    qs = [e for e in questions if e["set"] == "questions"]
    assert len(qs) >= 40
    assert len({e["voice"] for e in qs}) >= 4
    assert all(140 <= e["words_per_minute"] <= 200 for e in questions)
    noisy, phone = sum(e["noise"] == "pink" for e in qs), sum(e["phone"] for e in qs)
    assert 0.15 <= noisy / len(qs) <= 0.35 and 0.15 <= phone / len(qs) <= 0.35, (noisy, phone)
    assert not any(e["noise"] and e["phone"] for e in questions)
    for e in questions:
        assert (e["sample_rate"], e["encoding"]) == ((8000, "G.711 mu-law") if e["phone"] else (16000, "pcm_s16le"))
        assert e["expect"] is None or valid_expect(e["expect"]), e["file"]
    # questions the tests already speak would not measure anything new
    used = {e["text"].lower() for e in audio_manifest}
    assert not [e["text"] for e in questions if e["text"].lower() in used]
    assert {"Uh-huh.", "Yeah.", "Okay.", "Right.", "Mm-hmm."} <= {e["text"] for e in questions if e["set"] == "backchannel"}
    assert all(e["barge_in"] is False for e in questions if e["set"] == "backchannel")
    assert all(e["barge_in"] is True for e in questions if e["set"] == "interruption")
    assert sum((QUESTIONS / e["file"]).stat().st_size for e in questions) < 9e6


def test_calls_keep_one_caller_and_memory_is_asked_later(questions: list[dict[str, Any]]) -> None:
    calls: dict[str, list[dict[str, Any]]] = {}
    for e in questions:
        calls.setdefault(e["call"], []).append(e)
    names = set()
    for call, turns in calls.items():
        turns.sort(key=lambda e: e["order"])
        assert [e["order"] for e in turns] == list(range(1, len(turns) + 1)), call
        assert len({(e["voice"], e["words_per_minute"], e["noise"], e["phone"]) for e in turns}) == 1, call
        if turns[0]["category"] == "memory":
            # the name is said in turn 1 and expected back in the last turn, not earlier
            name = turns[-1]["expect"]["any"][0]
            assert name in turns[0]["text"].lower() and name not in turns[-1]["text"].lower(), call
            names.add(name)
    assert len(names) >= 4


def test_pause_set_marks_where_the_pause_is(questions: list[dict[str, Any]], wavs: dict[Path, Wav]) -> None:
    paused = [e for e in questions if e["pause_s"] is not None]
    assert len(paused) >= 20
    for e in paused:
        assert 0.6 <= e["pause_s"] <= 1.2 and e["text"].startswith(e["pause_after"]), e["file"]
        w = wavs[QUESTIONS / e["file"]]
        start, end = e["pause_start_s"], e["pause_start_s"] + e["pause_s"]
        assert e["leading_silence_s"] < start and end < w.duration_s - e["trailing_silence_s"], e["file"]
        if not e["noise"]:
            # silence inside the pause, speech on both sides of it
            assert w.rms(start + 0.05, end - 0.05) < 50, e["file"]
            assert w.rms(start - 0.3, start) > 300 and w.rms(end, end + 0.3) > 300, e["file"]


def test_held_out_questions_are_not_the_fixtures_and_not_written_into_the_repo(
        questions: list[dict[str, Any]], audio_manifest: list[dict[str, Any]]) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_fixtures.py"
    sys.path.insert(0, str(script.parent))
    try:
        import make_fixtures
    finally:
        sys.path.remove(str(script.parent))
    held = make_fixtures.heldout_entries()
    spoken = {str(e.get("text", "")).strip().lower() for e in [*questions, *audio_manifest]}
    assert len(held) == 90 and not {e["text"].strip().lower() for e in held} & spoken
    assert all(e["expect"] for e in held)
    r = subprocess.run([sys.executable, str(script), "heldout"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "needs --out" in r.stderr
