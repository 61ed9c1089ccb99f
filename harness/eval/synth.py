"""The caller's voice: every turn becomes a WAV file before the first call is placed.

`say:` is spoken by espeak-ng (a voice name such as `en-us+m3`) or by Piper (a `.onnx`
voice path); sox resamples, mixes the noise (fixed seed) and makes the phone version
(8 kHz G.711 µ-law), the same tools and levels as scripts/make_fixtures.py. Pauses are
inserted as digital silence between the two halves of the sentence, so where the pause is
in the clip is known exactly.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import Clip, read_wav, speech_bounds
from .scenario import Scenario, ScenarioError, Turn, split_at_pause

RATE = 16000
PHONE_RATE = 8000
LEAD_S = 0.3  # silence before the words, as the fixtures have
TAIL_S = 0.2
DEFAULT_VOICE = "en-us"


@dataclass(frozen=True)
class Rendered:
    """One turn's audio, ready to play."""

    turn: Turn
    clip: Clip
    pause_s: tuple[float, float] | None = None  # the inserted silence, seconds from the clip's start


class SynthError(RuntimeError):
    pass


def _run(cmd: list[str], *, stdin: str | None = None) -> None:
    try:
        p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SynthError(f"{cmd[0]} is not installed (scripts/install-system-deps.sh installs espeak-ng and sox)") from None
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        raise SynthError(f"{Path(cmd[0]).name} failed: {msg[-1] if msg else f'exit {p.returncode}'}")


def _speak(text: str, voice: str, rate: int, out: Path, base: Path) -> None:
    check_voice(voice)
    if voice.endswith(".onnx"):
        model = Path(voice) if Path(voice).is_absolute() else (base / voice)
        if not model.exists():
            raise SynthError(f"Piper voice {model} does not exist")
        piper = Path(sys.executable).parent / "piper"
        # Piper speaks at its own pace: length_scale stretches it to the requested words per minute
        # (its voices are trained around 170 wpm).
        _run([str(piper if piper.exists() else "piper"), "-m", str(model), "-f", str(out),
              "--length-scale", f"{170 / rate:.3f}"], stdin=text)
    else:
        _run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(out), text])


@functools.cache
def _espeak_voices() -> tuple[frozenset[str], frozenset[str]]:
    """(voices, variants) espeak-ng knows, lower case: language codes, names and files."""
    voices: set[str] = set()
    variants: set[str] = set()
    for which, into in (("--voices", voices), ("--voices=variant", variants)):
        try:
            out = subprocess.run(["espeak-ng", which], capture_output=True, text=True, timeout=30).stdout
        except FileNotFoundError:
            raise SynthError("espeak-ng is not installed (scripts/install-system-deps.sh installs it)") from None
        for line in out.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 5:
                into.update({cols[1].lower(), cols[3].lower(), cols[4].lower(), cols[4].rsplit("/", 1)[-1].lower()})
    return frozenset(voices), frozenset(variants)


def check_voice(voice: str) -> None:
    """espeak-ng falls back to a near language for unknown names without a word: refuse them here."""
    if voice.endswith(".onnx"):
        return
    base, _, variant = voice.partition("+")
    voices, variants = _espeak_voices()
    if base.lower() not in voices:
        raise SynthError(f"espeak-ng has no voice {base!r} (see `espeak-ng --voices`)")
    if variant and variant.lower() not in variants:
        raise SynthError(f"espeak-ng has no variant {variant!r} (see `espeak-ng --voices=variant`)")


def _to_rate(src: Path, dst: Path, rate: int = RATE) -> np.ndarray:
    _run(["sox", "-R", "-V1", str(src), "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer", str(dst)])
    return read_wav(dst).pcm


def _trim(pcm: np.ndarray) -> np.ndarray:
    bounds = speech_bounds(pcm, RATE)
    if bounds is None:
        return pcm
    return pcm[int(bounds[0] * RATE): int(bounds[1] * RATE)]


def _write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def render_turn(scenario: Scenario, turn: Turn, work: Path) -> Rendered:
    """The turn's audio as a WAV under `work` (reused when the same turn was rendered before)."""
    if turn.audio is not None:
        return Rendered(turn, read_wav(turn.audio))
    work.mkdir(parents=True, exist_ok=True)
    if turn.silence_ms is not None:
        path = work / f"silence-{turn.silence_ms}ms{'-8k' if turn.phone else ''}.wav"
        rate = PHONE_RATE if turn.phone else RATE
        if not path.exists():
            _write_wav(path, np.zeros(int(rate * turn.silence_ms / 1000), dtype=np.int16), rate)
        return Rendered(turn, read_wav(path))
    assert turn.say is not None
    voice = turn.voice or scenario.voice or DEFAULT_VOICE
    rate = turn.rate or scenario.rate
    key = repr((turn.say, voice, rate, turn.pause_after, turn.pause_ms, turn.noise, turn.noise_volume, turn.phone))
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    final = work / f"turn{turn.index:02d}-{digest}.wav"
    parts = list(split_at_pause(turn.say, turn.pause_after)) if turn.pause_after else [turn.say]
    pcms: list[np.ndarray] = []
    for i, part in enumerate(parts):
        raw, pcm16 = work / f"{digest}-{i}-raw.wav", work / f"{digest}-{i}-16k.wav"
        if part:
            _speak(part, voice, rate, raw, scenario.path.parent)
            pcms.append(_trim(_to_rate(raw, pcm16)))
            raw.unlink(missing_ok=True)
            pcm16.unlink(missing_ok=True)
        else:
            pcms.append(np.zeros(0, dtype=np.int16))
    lead = np.zeros(int(LEAD_S * RATE), dtype=np.int16)
    tail = np.zeros(int(TAIL_S * RATE), dtype=np.int16)
    pause_s: tuple[float, float] | None = None
    if len(pcms) == 2:
        gap = np.zeros(int(turn.pause_ms * RATE / 1000), dtype=np.int16)
        start = (len(lead) + len(pcms[0])) / RATE
        pause_s = (start, start + turn.pause_ms / 1000)
        pcm = np.concatenate([lead, pcms[0], gap, pcms[1], tail])
    else:
        pcm = np.concatenate([lead, pcms[0], tail])
    clean = work / f"{digest}-clean.wav"
    _write_wav(clean, pcm, RATE)
    stage = clean
    if turn.noise:
        noise, mixed = work / f"{digest}-noise.wav", work / f"{digest}-noisy.wav"
        _run(["sox", "-R", "-V1", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(noise), "synth",
              f"{len(pcm)}s", f"{turn.noise}noise", "vol", f"{turn.noise_volume}"])
        # -v 1 on each input: sox -m would otherwise halve both
        _run(["sox", "-R", "-V1", "-m", "-v", "1", str(clean), "-v", "1", str(noise), str(mixed)])
        noise.unlink(missing_ok=True)
        stage = mixed
    if turn.phone:
        _run(["sox", "-R", "-V1", str(stage), "-r", str(PHONE_RATE), "-c", "1", "-e", "u-law", str(final)])
    else:
        shutil.copyfile(stage, final)
    for f in (clean, work / f"{digest}-noisy.wav"):
        f.unlink(missing_ok=True)
    return Rendered(turn, read_wav(final), pause_s)


def render_scenario(scenario: Scenario, work: Path) -> list[Rendered]:
    """Every turn of the scenario; a synthesis problem is a scenario error at the turn's line."""
    out = []
    for turn in scenario.turns:
        try:
            out.append(render_turn(scenario, turn, work))
        except SynthError as e:
            if turn.voice is None and scenario.voice is not None:
                raise ScenarioError(scenario.path, scenario.lines.get("voice"), "voice", str(e)) from None
            key = f"turns[{turn.index}].{'voice' if turn.voice else 'say'}"
            raise ScenarioError(scenario.path, turn.line, key, str(e)) from None
    return out
