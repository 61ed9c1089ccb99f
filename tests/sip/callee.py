"""What the called phone plays when it answers: a person's "Hello?" or a voicemail greeting
with its beep, synthesised with espeak-ng and sox as 8 kHz G.711 µ-law (tests/sip/rtp.py
turns it into the pcap sipp plays). Used by tests/test_amd.py and scripts/bench_amd.py."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .rtp import RATE, ULAW_SILENCE, Stream, caller_stream, stream_pcap, wav_ulaw_payload

# Voicemail greetings as people and carriers record them (the bench uses all of them; none
# is special-cased anywhere in the agent).
MACHINE_GREETINGS = [
    "Hi, you've reached Alex. I can't take your call right now. Please leave a message after the tone.",
    "Hello. The person you are calling is not available. Please record your message at the tone.",
    "Hey, it's Jordan. Sorry I missed you. Leave your name and number and I'll get back to you.",
    "You have reached the voicemail of five five five, zero one four two. Please leave a message.",
    "Thank you for calling Maria Lopez. I'm away from my desk at the moment, please leave a message.",
]
HUMAN_GREETINGS = ["Hello?", "Hi, this is Sam.", "Yes?", "Hello, who's this?", "Hey."]
VOICES = ["en-us", "en", "en-us+f3", "en+m3", "en-us+f2"]


@dataclass(frozen=True)
class CalleeAudio:
    stream: Stream
    speech_end_s: float  # end of the spoken part within the stream
    beep_start_s: float | None = None
    beep_end_s: float | None = None


def speak_ulaw(text: str, workdir: Path, name: str, *, voice: str = "en-us", wpm: int = 165) -> bytes:
    """espeak-ng, then sox to 8 kHz mono µ-law (a phone's G.711): the raw µ-law bytes."""
    workdir.mkdir(parents=True, exist_ok=True)
    wide, ulaw = workdir / f"{name}-22k.wav", workdir / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(wide), text], check=True, timeout=60)
    subprocess.run(["sox", str(wide), "-r", str(RATE), "-c", "1", "-e", "u-law", "-b", "8", str(ulaw)],
                   check=True, timeout=60)
    return wav_ulaw_payload(ulaw)


def beep_ulaw(workdir: Path, *, hz: float = 1000.0, seconds: float = 0.5) -> bytes:
    out = workdir / f"beep-{hz:.0f}.wav"
    subprocess.run(["sox", "-n", "-r", str(RATE), "-c", "1", "-e", "u-law", "-b", "8", str(out),
                    "synth", str(seconds), "sine", str(hz), "vol", "0.5"], check=True, timeout=60)
    return wav_ulaw_payload(out)


def silence(seconds: float) -> bytes:
    return bytes([ULAW_SILENCE]) * int(seconds * RATE)


def machine(workdir: Path, text: str, *, voice: str = "en-us", beep_hz: float = 1000.0, lead_s: float = 0.4,
            gap_s: float = 0.4, tail_s: float = 30.0) -> CalleeAudio:
    """A voicemail greeting, a short gap, a beep, then silence while the message is recorded."""
    greeting = caller_stream(speak_ulaw(text, workdir, "greeting", voice=voice), lead_s=lead_s, tail_s=gap_s)
    beep = beep_ulaw(workdir, hz=beep_hz)
    ulaw = greeting.ulaw + beep + silence(tail_s)
    start = len(greeting.ulaw) / RATE
    stream = Stream(ulaw, greeting.speech_start_s, greeting.speech_end_s)
    return CalleeAudio(stream, greeting.speech_end_s, start, start + len(beep) / RATE)


def human(workdir: Path, text: str = "Hello?", *, voice: str = "en-us", lead_s: float = 0.8,
          tail_s: float = 30.0) -> CalleeAudio:
    """Someone picks up, says a short hello and waits for the caller to speak."""
    stream = caller_stream(speak_ulaw(text, workdir, "hello", voice=voice), lead_s=lead_s, tail_s=tail_s)
    return CalleeAudio(stream, stream.speech_end_s)


def write_pcap(workdir: Path, audio: CalleeAudio) -> Path:
    path = workdir / "callee.pcap"
    stream_pcap(path, audio.stream)
    return path
