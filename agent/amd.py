"""Answering-machine detection (AMD) for outbound calls, offline.

When `parley-dial` rings a number, the agent listens before it speaks. A person picks up
and says something short ("Hello?") and waits; an answering machine plays a long greeting
("... is not available, please leave a message after the tone") and then a beep. Three
cues, all local and cheap, decide which (`AmdDecider`, pure logic, fed by `listen`):

- speech/silence timing from the Silero VAD: a short first utterance followed by silence
  is a person; speech that goes on for longer than a person's hello is a machine
  (the thresholds follow Asterisk's AMD() defaults, which telephony has used for years);
- the transcript of each speech segment (Whisper, the call's own STT): machine phrases
  ("leave a message", "not available", "after the tone", ...);
- a beep detector on the callee's audio (`BeepDetector`): a steady pure tone around
  1 kHz (400-2100 Hz: machines differ) for at least 120 ms. Speech has harmonics and a
  moving pitch, so it never looks like one narrow, stable peak.

A machine's greeting must not be talked over: after deciding "machine", `listen` keeps
listening until the beep has ended, or the greeting has been followed by a long silence,
or a hard limit; then the caller of `listen` leaves the voicemail message.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from livekit import rtc
from livekit.agents import stt as agents_stt
from livekit.agents import vad as agents_vad

logger = logging.getLogger("parley.amd")

SAMPLE_RATE = 16000
AnsweredBy = Literal["human", "machine"]

# Phrases of answering-machine and carrier voicemail greetings (English). Whisper's text is
# lower-cased and stripped of punctuation before matching.
MACHINE_PHRASES = re.compile(
    r"\b(leave (me )?(a |your )?(message|name|number)|after the (tone|beep)|at the (tone|beep)"
    r"|(not|un) ?available|can ?not (come|take|get) to the phone|can'?t (come|take|get) to the phone"
    r"|(can'?t|cannot|unable to) (take|answer) (your|the|my) call|voice ?mail|mailbox"
    r"|you (have|'ve) reached|record your message|get back to you|return your call"
    r"|away from (the|my) (phone|desk)|please leave)\b"
)


def machine_phrase(text: str) -> str | None:
    """The machine phrase in a transcript, if any."""
    norm = re.sub(r"[^a-z' ]+", " ", text.lower())
    norm = re.sub(r"\s+", " ", norm).replace(" '", "'")
    m = MACHINE_PHRASES.search(norm)
    return m.group(0) if m else None


@dataclass(frozen=True)
class AmdOptions:
    # No speech at all this long after the answer: someone picked up and waits (human).
    initial_silence_s: float = 2.5
    # Speech since the first word adding up to this is longer than a person's hello (machine).
    max_greeting_s: float = 1.8
    # A short utterance followed by this much silence: a person waiting for an answer.
    after_greeting_silence_s: float = 0.8
    # More separate utterances than this before the person pauses: a machine reading a greeting.
    max_utterances: int = 3
    # The decision is forced this long after the answer (by the speech heard so far).
    max_analysis_s: float = 4.0
    # Machine, no beep: leave the message after this much silence following the greeting.
    end_of_greeting_silence_s: float = 1.5
    # Machine: the longest wait for the beep or the end of the greeting, from the answer.
    max_wait_s: float = 30.0
    # A beep that started waits for its end at most this long (a stuck tone is not a beep).
    max_beep_s: float = 3.0


@dataclass
class Decision:
    answered_by: AnsweredBy
    reason: str
    at_s: float  # seconds after the answer


class AmdDecider:
    """Human or machine from timed events (seconds since the answer). No audio, no models.

    Feed `speech_start`, `speech_end`, `transcript`, `beep_start`/`beep_end` as they happen,
    and `poll(now)` regularly; `decision` is set once and never changes. After a machine
    decision, `ready_for_message(now)` says when the greeting is over.
    """

    def __init__(self, opts: AmdOptions | None = None) -> None:
        self.opts = opts or AmdOptions()
        self.decision: Decision | None = None
        self.speaking_since: float | None = None
        self.last_speech_end: float | None = None
        self.speech_s = 0.0  # closed segments only
        self.utterances = 0
        self.beep_at: float | None = None
        self.beep_end_at: float | None = None
        self.phrase: str | None = None
        self.transcripts: list[str] = []

    # --- events ----------------------------------------------------------------------------

    def speech_start(self, t: float) -> None:
        if self.speaking_since is None:
            self.speaking_since = t
            self.utterances += 1

    def speech_end(self, t: float) -> None:
        if self.speaking_since is not None:
            self.speech_s += max(0.0, t - self.speaking_since)
            self.speaking_since = None
        self.last_speech_end = t
        self.poll(t)

    def transcript(self, text: str, t: float) -> None:
        if not text.strip():
            return
        self.transcripts.append(text.strip())
        if self.phrase is None and (p := machine_phrase(text)):
            self.phrase = p
        self.poll(t)

    def beep_start(self, t: float) -> None:
        if self.beep_at is None:
            self.beep_at = t
        self._decide("machine", "beep", t)

    def beep_end(self, t: float) -> None:
        if self.beep_at is not None and self.beep_end_at is None:
            self.beep_end_at = t

    # --- the decision ----------------------------------------------------------------------

    def total_speech(self, t: float) -> float:
        ongoing = t - self.speaking_since if self.speaking_since is not None else 0.0
        return self.speech_s + max(0.0, ongoing)

    def poll(self, t: float) -> Decision | None:
        o = self.opts
        if self.decision is not None:
            return self.decision
        if self.beep_at is not None:
            return self._decide("machine", "beep", t)
        if self.phrase is not None:
            return self._decide("machine", f"phrase: {self.phrase}", t)
        speech = self.total_speech(t)
        if speech >= o.max_greeting_s:
            return self._decide("machine", f"long greeting ({speech:.1f} s of speech)", t)
        if self.utterances > o.max_utterances:
            return self._decide("machine", f"{self.utterances} utterances without a pause", t)
        if self.utterances == 0 and t >= o.initial_silence_s:
            return self._decide("human", "silence after answering", t)
        if (self.speaking_since is None and self.last_speech_end is not None
                and t - self.last_speech_end >= o.after_greeting_silence_s):
            return self._decide("human", f"short greeting ({speech:.1f} s) then silence", t)
        if t >= o.max_analysis_s:
            # Still undecided (speech with short gaps): more than half the limit is a machine.
            if speech >= o.max_greeting_s / 2:
                return self._decide("machine", f"undecided after {t:.1f} s, {speech:.1f} s of speech", t)
            return self._decide("human", f"undecided after {t:.1f} s, {speech:.1f} s of speech", t)
        return None

    def _decide(self, who: AnsweredBy, reason: str, t: float) -> Decision:
        if self.decision is None:
            self.decision = Decision(who, reason, round(t, 3))
        return self.decision

    def ready_for_message(self, t: float) -> str | None:
        """Machine: why the voicemail message can start now (None: keep waiting)."""
        o = self.opts
        if self.beep_end_at is not None:
            return "after the beep"
        if self.beep_at is not None:
            return "beep did not end" if t - self.beep_at >= o.max_beep_s else None
        if t >= o.max_wait_s:
            return "waited too long"
        quiet_since = self.last_speech_end
        if self.speaking_since is None and quiet_since is not None and t - quiet_since >= o.end_of_greeting_silence_s:
            return "end of greeting"
        return None


@dataclass
class BeepDetector:
    """A steady pure tone (a voicemail beep) in mono int16 audio, frame by frame.

    Each 30 ms frame is tonal when one spectral peak between `min_hz` and `max_hz` holds
    most of the energy and the frame is loud enough; `min_s` of tonal frames at one
    frequency is a beep (`on_start`), the first frame after it that is not is its end.
    """

    sample_rate: int = SAMPLE_RATE
    min_hz: float = 400.0
    max_hz: float = 2100.0
    min_s: float = 0.15
    # Share of the frame's energy within ±`peak_width_hz` of the peak (a 30 ms Hann window
    # spreads a pure tone over about ±67 Hz).
    tonal_ratio: float = 0.75
    peak_width_hz: float = 80.0
    min_rms: float = 300.0  # int16 units (~ -40 dBFS): line noise is no beep
    freq_tolerance_hz: float = 25.0  # frame to frame: a beep holds its pitch, a voice does not
    frame_s: float = 0.03
    _buf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    _t: float = 0.0  # audio time of the start of _buf
    _run_start: float | None = None
    _run_hz: float = 0.0
    _run_n: int = 0
    in_beep: bool = False
    beeps: list[tuple[float, float, float]] = field(default_factory=list)  # (start, end, hz)

    def push(self, pcm: np.ndarray, t: float | None = None) -> list[tuple[str, float, float]]:
        """Add audio (int16 mono) starting at audio time `t` (default: right after the last).

        Returns events: ("start", t, hz) when a beep is recognised, ("end", t, hz) when it stops.
        """
        if t is not None and len(self._buf) == 0:
            self._t = t
        self._buf = np.concatenate([self._buf, pcm.astype(np.float32)])
        n = int(self.sample_rate * self.frame_s)
        events: list[tuple[str, float, float]] = []
        while len(self._buf) >= n:
            frame, self._buf = self._buf[:n], self._buf[n:]
            events += self._frame(frame, self._t)
            self._t += self.frame_s
        return events

    def tone_hz(self, frame: np.ndarray) -> float | None:
        """The frequency of the frame's pure tone, or None if it is not one."""
        if float(np.sqrt(np.mean(frame * frame))) < self.min_rms:
            return None
        nfft = 2048
        spec = np.abs(np.fft.rfft(frame * np.hanning(len(frame)), nfft)) ** 2
        freqs = np.fft.rfftfreq(nfft, 1.0 / self.sample_rate)
        band = (freqs >= 100.0) & (freqs <= min(3800.0, self.sample_rate / 2))
        total = float(spec[band].sum())
        if total <= 0.0:
            return None
        search = (freqs >= self.min_hz) & (freqs <= self.max_hz)
        idx = np.flatnonzero(search)
        peak = int(idx[np.argmax(spec[idx])])
        hz = float(freqs[peak])
        near = np.abs(freqs - hz) <= self.peak_width_hz
        return hz if float(spec[near].sum()) / total >= self.tonal_ratio else None

    def _frame(self, frame: np.ndarray, t: float) -> list[tuple[str, float, float]]:
        hz = self.tone_hz(frame)
        out: list[tuple[str, float, float]] = []
        if hz is not None and self._run_start is not None and abs(hz - self._run_hz) <= self.freq_tolerance_hz:
            self._run_n += 1
        elif hz is not None:
            if self.in_beep:
                out += self._end(t)
            self._run_start, self._run_hz, self._run_n = t, hz, 1
        else:
            if self.in_beep:
                out += self._end(t)
            self._run_start, self._run_n = None, 0
        if (not self.in_beep and self._run_start is not None
                and self._run_n * self.frame_s >= self.min_s - 1e-9):
            self.in_beep = True
            out.append(("start", self._run_start, self._run_hz))
        return out

    def _end(self, t: float) -> list[tuple[str, float, float]]:
        self.in_beep = False
        assert self._run_start is not None
        self.beeps.append((self._run_start, t, self._run_hz))
        return [("end", t, self._run_hz)]


@dataclass
class AmdResult:
    answered_by: AnsweredBy
    reason: str
    decision_ms: float  # answer -> decision
    message_after_ms: float | None = None  # machine: answer -> the greeting was over
    message_reason: str = ""
    beep_ms: float | None = None  # answer -> beep start
    beep_hz: float | None = None
    speech_s: float = 0.0
    transcript: str = ""

    def summary(self) -> dict[str, Any]:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(self).items()}


async def listen(
    frames: Any,
    vad: agents_vad.VAD,
    stt: agents_stt.STT | None,
    opts: AmdOptions | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    wait_for_greeting_end: bool = True,
) -> AmdResult:
    """Listen to the callee from the moment of answer: decide, and for a machine wait until
    its greeting is over. `frames` is an async iterator of `rtc.AudioFrame` (or of
    `rtc.AudioFrameEvent`), e.g. an `rtc.AudioStream` of the SIP participant's track."""
    opts = opts or AmdOptions()
    decider = AmdDecider(opts)
    beeps = BeepDetector()
    t0 = clock()
    vad_stream = vad.stream()
    stt_tasks: set[asyncio.Task[None]] = set()
    beep_hz: list[float] = []
    done = asyncio.Event()

    def now() -> float:
        return clock() - t0

    def check() -> None:
        t = now()
        d = decider.poll(t)
        if d is None:
            return
        if d.answered_by == "human" or not wait_for_greeting_end or decider.ready_for_message(t):
            done.set()

    async def transcribe(seg: list[rtc.AudioFrame]) -> None:
        assert stt is not None
        try:
            ev = await stt.recognize(seg)
        except Exception as e:  # the decision still has timing and the beep
            logger.warning("amd: transcript failed: %s", e)
            return
        text = ev.alternatives[0].text if ev.alternatives else ""
        logger.info("amd: heard %r at %.2fs", text, now())
        decider.transcript(text, now())
        check()

    async def read_vad() -> None:
        async for ev in vad_stream:
            t = now()
            if ev.type == agents_vad.VADEventType.START_OF_SPEECH:
                decider.speech_start(max(0.0, t - ev.speech_duration))
            elif ev.type == agents_vad.VADEventType.END_OF_SPEECH:
                decider.speech_end(max(0.0, t - ev.silence_duration))
                # Only while it can still matter: the decision, or the end of a machine's greeting.
                if stt is not None and ev.frames and (decider.decision is None or decider.decision.answered_by == "machine"):
                    task = asyncio.create_task(transcribe(list(ev.frames)))
                    stt_tasks.add(task)
                    task.add_done_callback(stt_tasks.discard)
            check()

    async def read_audio() -> None:
        async for item in frames:
            frame: rtc.AudioFrame = getattr(item, "frame", item)
            vad_stream.push_frame(frame)
            pcm = np.frombuffer(frame.data, dtype=np.int16)
            if frame.num_channels > 1:
                pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1)
            if frame.sample_rate != SAMPLE_RATE:
                beeps.sample_rate = frame.sample_rate
            # Audio time is close to wall time here (frames arrive in real time); the wall
            # clock keeps both detectors on one time line with the VAD's events.
            for kind, _t, hz in beeps.push(pcm, now()):
                if kind == "start":
                    beep_hz.append(hz)
                    logger.info("amd: beep %.0f Hz at %.2fs", hz, now())
                    decider.beep_start(now())
                else:
                    decider.beep_end(now())
            check()

    async def tick() -> None:
        # Silence produces no events (a callee may send no RTP at all): time decides too.
        while True:
            await asyncio.sleep(0.05)
            check()

    tasks = [asyncio.create_task(read_audio()), asyncio.create_task(read_vad()), asyncio.create_task(tick())]
    try:
        await done.wait()
    finally:
        for task in (*tasks, *stt_tasks):
            task.cancel()
        await vad_stream.aclose()
        await asyncio.gather(*tasks, *stt_tasks, return_exceptions=True)

    t = now()
    d = decider.poll(t)
    assert d is not None
    return AmdResult(
        answered_by=d.answered_by,
        reason=d.reason,
        decision_ms=d.at_s * 1000,
        message_after_ms=t * 1000 if d.answered_by == "machine" else None,
        message_reason=(decider.ready_for_message(t) or "") if d.answered_by == "machine" else "",
        beep_ms=decider.beep_at * 1000 if decider.beep_at is not None else None,
        beep_hz=beep_hz[0] if beep_hz else None,
        speech_s=decider.total_speech(t),
        transcript=" ".join(decider.transcripts),
    )
