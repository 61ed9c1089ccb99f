"""Turn-taking benchmark (issue 9, targets 1, 4, 5): a real livekit-server + worker on
loopback, driven by the simulated caller (harness/call.py) with the question fixtures.

    .venv/bin/python scripts/bench_turns.py [--sets questions pause barge backchannel]
                                            [--rounds 1] [--limit N] [--offset N]
                                            [--url ... --api-key ... --api-secret ...] [--env K=V ...]

Prints one JSON line per measurement and a summary per set (median and p90):
- questions: greeting latency (join -> first agent audio) and turn latency (last
  non-silent caller sample -> first agent audio) for every call of the question set; from
  the worker's session reports, where each turn's time went, the word error rate of what
  the worker heard (after Opus and WebRTC, unlike scripts/bench_models.py) and how many
  replies give the expected answer;
- pause: false cut-off rate: agent audio heard before the caller finished a question
  that has a 0.6-1.2 s silence inside it;
- barge: a long reply, then each interruption clip while the agent talks: time from the
  caller's first sound to the agent's last audio frame;
- backchannel: a long reply, then each backchannel clip while the agent talks: whether
  the agent is still speaking afterwards (its reply went on) or was stopped.
Figures only; nothing here passes or fails. Without --url it starts its own devstack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.audio import resample  # noqa: E402
from harness.audio import read_wav  # noqa: E402
from harness.call import RATE, CallOptions, CallState, _reply_done, _wait, await_greeting, open_call  # noqa: E402
from harness.devstack import ROOT, LiveKitServer, Worker  # noqa: E402
from harness.scoring import condition, edit_distance, matches, normalize_words, word_error_rates  # noqa: E402

QUESTIONS = ROOT / "tests" / "fixtures" / "questions"
AUDIO = ROOT / "tests" / "fixtures" / "audio"
LONG = AUDIO / "long_question.wav"
SETTLE_S = 3.0  # after a clip with no reply yet: how long the agent may still take to answer
# perf_counter -> wall clock for this process (the worker's report stamps are wall-clock times)
WALL = time.time() - time.perf_counter()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: n/a"
    return (f"{name}: median {statistics.median(values):.0f} ms, p90 {pct(values, 0.9):.0f} ms, "
            f"max {max(values):.0f} ms (n={len(values)})")


class Bench:
    def __init__(self, url: str, key: str, secret: str, agent: str, reports: Path | None) -> None:
        self.url, self.key, self.secret, self.agent = url, key, secret, agent
        self.reports = reports  # the worker's PARLEY_REPORT_DIR, when this script started it
        self.rows: list[dict[str, Any]] = []

    async def report(self, room: str) -> dict[str, Any] | None:
        """The session report of `room` (written when the call ends), if readable in 15 s."""
        if self.reports is None:
            return None
        for _ in range(150):
            for path in self.reports.glob(f"{room}-*.json"):
                try:
                    return json.loads(path.read_text())
                except ValueError:
                    pass
            await asyncio.sleep(0.1)
        return None

    def emit(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    def opts(self) -> CallOptions:
        return CallOptions(url=self.url, api_key=self.key, api_secret=self.secret, agent=self.agent,
                           room=f"bench-{secrets.token_hex(4)}", clips=[], timeout=30.0, json=True)

    async def play(self, live: Any, path: Path) -> tuple[float, float, float]:
        """Play a clip; (start, first sound, last sound) as perf_counter times."""
        clip = read_wav(path)
        pcm = resample(clip.pcm, clip.sample_rate, RATE)
        bounds = clip.speech_bounds_s() or (0.0, clip.duration_s)
        started, _ = live.mic.play(pcm)
        t0 = await started
        return t0, t0 + bounds[0], t0 + bounds[1]

    async def questions(self, calls: dict[str, list[dict[str, Any]]]) -> None:
        for call_id, clips in calls.items():
            opts = self.opts()
            rows: list[dict[str, Any]] = []
            async with open_call(opts) as live:
                st: CallState = live.state
                g = await await_greeting(st, live.joined_at, 30.0)
                self.emit({"set": "greeting", "call": call_id, "latency_ms": g["latency_ms"]})
                for clip in clips:
                    _t0, _s0, s1 = await self.play(live, QUESTIONS / clip["file"])
                    await live.mic.done
                    got = await _wait(st, lambda s1=s1: st.first_speech_after(s1) is not None, 15.0)
                    first = st.first_speech_after(s1) if got else None
                    rows.append({"set": "questions", "file": clip["file"],
                                 "latency_ms": round((first - s1) * 1000, 1) if first else None,
                                 "_clip": clip,
                                 # wall clock, to line up with the worker's report (same machine)
                                 "_speech_end": s1 + WALL, "_first_heard": first + WALL if first else None})
                    if first:
                        await _wait(st, lambda: _reply_done(st, s1), 30.0)
            await self.from_report(opts.room, rows)
            for row in rows:
                self.emit({k: v for k, v in row.items() if not k.startswith("_")})

    async def from_report(self, room: str, rows: list[dict[str, Any]]) -> None:
        """What the worker's session report says of each turn, when it has one user turn per clip.

        Latency split at the worker: `inbound_ms` from the caller's last sound to the worker's
        end-of-speech stamp (transport, jitter buffer and the VAD's reading of the end), `agent_ms`
        the worker's own end of speech to first frame out (its e2e), `outbound_ms` from that frame
        to the caller hearing it. Recognition and answer in the call: `heard` (the worker's
        transcript, after Opus and WebRTC), its word errors against the clip's text, the
        `reply` and whether it gives what the clip's `expect` asks for (`correct`, graded clips)."""
        rep = await self.report(room)
        if rep is None:
            return
        msgs = [i for i in rep["chat_history"]["items"] if i.get("type") == "message"]
        users = [m for m in msgs if m.get("role") == "user"]
        if len(users) != len(rows):
            return
        for row, user in zip(rows, users, strict=True):
            stopped = (user.get("metrics") or {}).get("stopped_speaking_at")
            reply = next((m for m in msgs if m.get("role") == "assistant"
                          and (m.get("metrics") or {}).get("started_speaking_at", 0) > (stopped or 1e18)), None)
            clip = row["_clip"]
            heard = " ".join(user.get("content") or [])
            ref = normalize_words(clip["text"])
            row.update({"condition": condition(clip), "heard": heard,
                        "word_errors": edit_distance(ref, normalize_words(heard)), "words": len(ref)})
            if reply is not None:
                row["reply"] = " ".join(reply.get("content") or [])
                if clip.get("expect") is not None:
                    row["correct"] = matches(clip["expect"], row["reply"])
            started = (reply.get("metrics") or {}).get("started_speaking_at") if reply else None
            if stopped is None or started is None or row["_first_heard"] is None:
                continue
            row["inbound_ms"] = round((stopped - row["_speech_end"]) * 1000, 1)
            row["agent_ms"] = round((started - stopped) * 1000, 1)
            row["outbound_ms"] = round((row["_first_heard"] - started) * 1000, 1)

    async def pause(self, clips: list[dict[str, Any]]) -> None:
        for clip in clips:
            async with open_call(self.opts()) as live:
                st = live.state
                await await_greeting(st, live.joined_at, 30.0)
                t0, s0, s1 = await self.play(live, QUESTIONS / clip["file"])
                await live.mic.done
                got = await _wait(st, lambda s1=s1: st.first_speech_after(s1) is not None, 15.0)
                # Any agent audio between the caller's first word and their last is a cut-off.
                early = st.speech_between(s0 + 0.2, s1)
                first = st.first_speech_after(s1) if got else None
                self.emit({"set": "pause", "file": clip["file"], "pause_s": clip["pause_s"],
                           "cut_off": bool(early),
                           "cut_off_after_pause_ms": round((early[0] - (t0 + clip["pause_start_s"])) * 1000)
                           if early else None,
                           "latency_ms": round((first - s1) * 1000, 1) if first and not early else None})
                if first:
                    await _wait(st, lambda: _reply_done(st, s1), 30.0)

    async def over_reply(self, clips: list[dict[str, Any]], kind: str, delay: float) -> None:
        """Ask the long question, then play each clip while the agent answers it."""
        for clip in clips:
            opts = self.opts()
            row: dict[str, Any] = {}
            async with open_call(opts) as live:
                st = live.state
                await await_greeting(st, live.joined_at, 30.0)
                _t0, _a0, a1 = await self.play(live, LONG)
                await live.mic.done
                if not await _wait(st, lambda: st.first_speech_after(a1) is not None, 20.0):
                    self.emit({"set": kind, "file": clip["file"], "error": "no reply to the long question"})
                    continue
                first = st.first_speech_after(a1)
                assert first is not None
                await _wait(st, lambda: (st.last_speech() or 0) - first >= delay, 20.0)
                if not st.agent_state == "speaking" and time.perf_counter() - (st.last_speech() or 0) > 0.3:
                    self.emit({"set": kind, "file": clip["file"], "error": "reply too short to talk over"})
                    continue
                _t, b0, b1 = await self.play(live, QUESTIONS / clip["file"])
                await live.mic.done
                # Settle: the agent either resumes/keeps talking or has been stopped.
                await asyncio.sleep(2.5)
                during = st.speech_between(b0, b1 + 2.5)
                # The agent's audio "stops" at the start of the first gap of >= 0.25 s after b0.
                stop_at = b0
                for ts in [b0, *during]:
                    if ts - stop_at > 0.25 and stop_at > b0:
                        break
                    stop_at = ts
                gap_after = [ts for ts in during if ts > stop_at + 0.25]
                row = {"set": kind, "file": clip["file"], "text": clip["text"],
                       "stop_ms": round((stop_at - b0) * 1000, 1),
                       "audio_after": bool(gap_after) or bool(st.speech_between(b1 + 2.0, b1 + 2.5)),
                       "agent_text": st.text_since(first - 1.0, agent=True)[:200]}
                await _wait(st, lambda: _reply_done(st, b1), 30.0)
            if row:
                # From the worker's report: was the reply cut, and did the clip become a turn?
                rep = await self.report(opts.room)
                if rep is not None:
                    msgs = [i for i in rep["chat_history"]["items"] if i.get("type") == "message"]
                    replies = [m for m in msgs if m.get("role") == "assistant"][1:]
                    row["reply_interrupted"] = bool(replies) and bool(replies[0].get("interrupted"))
                    row["user_turns"] = sum(1 for m in msgs if m.get("role") == "user")
                self.emit(row)


def load_manifest() -> list[dict[str, Any]]:
    return json.loads((QUESTIONS / "manifest.json").read_text())


def window(items: list[Any], offset: int, limit: int | None) -> list[Any]:
    return items[offset:offset + limit] if limit else items[offset:]


async def run(b: Bench, sets: list[str], rounds: int, limit: int | None, offset: int = 0) -> None:
    m = load_manifest()
    for _ in range(rounds):
        if "questions" in sets:
            calls: dict[str, list[dict[str, Any]]] = {}
            for c in sorted((c for c in m if c["set"] == "questions"), key=lambda c: (c["call"], c["order"])):
                calls.setdefault(c["call"], []).append(c)
            await b.questions(dict(window(list(calls.items()), offset, limit)))
        if "pause" in sets:
            clips = [c for c in m if c["set"] == "pause" and c["pause_s"]]
            await b.pause(window(clips, offset, limit))
        if "barge" in sets:
            clips = [c for c in m if c["set"] == "interruption"]
            await b.over_reply(window(clips, offset, limit), "barge", 1.0)
        if "backchannel" in sets:
            clips = [c for c in m if c["set"] == "backchannel"]
            await b.over_reply(window(clips, offset, limit), "backchannel", 1.0)


def report(rows: list[dict[str, Any]]) -> None:
    def vals(s: str, k: str) -> list[float]:
        return [r[k] for r in rows if r.get("set") == s and r.get(k) is not None]

    print("--- summary")
    print(summary("greeting", vals("greeting", "latency_ms")))
    print(summary("turn latency (questions)", vals("questions", "latency_ms")))
    q = [r for r in rows if r.get("set") == "questions"]
    if q:
        print(f"unanswered questions: {sum(1 for r in q if r['latency_ms'] is None)}/{len(q)}")
        print(summary("  of which caller -> worker's end of speech", vals("questions", "inbound_ms")))
        print(summary("  of which worker's end of speech -> first frame out", vals("questions", "agent_ms")))
        print(summary("  of which first frame out -> caller hears it", vals("questions", "outbound_ms")))
        scored = [r for r in q if "word_errors" in r]
        if scored:
            wer = word_error_rates(scored, errors="word_errors")
            print(f"word error rate in the calls (the worker's transcripts): {wer['all']:.3f} (clean "
                  f"{wer['clean']:.3f}, noise {wer['noise']:.3f}, phone {wer['phone']:.3f}; {len(scored)} turns)")
        graded = [r for r in q if "correct" in r]
        if graded:
            right = sum(1 for r in graded if r["correct"])
            print(f"answered right in the calls: {right}/{len(graded)} = {right / len(graded):.0%}")
    p = [r for r in rows if r.get("set") == "pause"]
    if p:
        cut = sum(1 for r in p if r["cut_off"])
        print(f"false cut-off (pause set): {cut}/{len(p)} = {cut / len(p):.0%}")
        print(summary("turn latency (pause set, not cut)", vals("pause", "latency_ms")))
    print(summary("barge-in stop", vals("barge", "stop_ms")))
    for kind in ("barge", "backchannel"):
        bc = [r for r in rows if r.get("set") == kind and "reply_interrupted" in r]
        if bc:
            cut = sum(1 for r in bc if r["reply_interrupted"])
            turned = sum(1 for r in bc if r["user_turns"] > 1)
            print(f"{kind}: reply interrupted in {cut}/{len(bc)} calls, the clip became a user turn in {turned}/{len(bc)}")
    print(summary("backchannel: agent audio paused after", vals("backchannel", "stop_ms")))


STAGES = ("end_of_utterance_delay_ms", "stt_duration_ms", "llm_ttft_ms", "tts_ttfb_ms", "e2e_latency_ms",
          "listener_latency_ms")


def stage_report(reports: Path) -> None:
    """Per-stage medians of the caller turns in the worker's session reports (what each stage cost)."""
    turns = [t for path in sorted(reports.glob("*.json"))
             for t in json.loads(path.read_text()).get("turns", []) if t.get("user_text")]
    print(f"--- stages from {len(turns)} caller turns in the session reports")
    for k in STAGES:
        v = [float(t[k]) for t in turns if t.get(k) is not None]
        print(summary(k.removesuffix("_ms"), v))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="*", default=["questions", "pause", "barge", "backchannel"])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="at most N calls/clips per set")
    ap.add_argument("--offset", type=int, default=0, help="skip the first N calls/clips of each set")
    ap.add_argument("--url")
    ap.add_argument("--api-key", default="devkey")
    ap.add_argument("--api-secret", default="secret")
    ap.add_argument("--agent", default="parley")
    ap.add_argument("--env", nargs="*", default=[], help="extra worker environment, KEY=VALUE")
    args = ap.parse_args()

    server = worker = None
    reports: Path | None = None
    if args.url:
        url, key, secret = args.url, args.api_key, args.api_secret
    else:
        out = Path(tempfile.mkdtemp(prefix="parley-bench-turns-"))
        server = LiveKitServer.create().start(out)
        extra = dict(kv.split("=", 1) for kv in args.env)
        reports = out / "reports"
        worker = Worker(env={**server.env(), "PARLEY_REPORT_DIR": str(reports),
                             "PARLEY_LOAD_CPU": "0", **extra})
        worker.start(out)
        url, key, secret = server.url, server.api_key, server.api_secret
        print(f"# devstack logs and reports in {out}", flush=True)
    b = Bench(url, key, secret, args.agent, reports)
    try:
        asyncio.run(run(b, args.sets, args.rounds, args.limit, args.offset))
    finally:
        if worker is not None:
            worker.stop()
        if server is not None:
            server.stop()
        report(b.rows)
        if reports is not None and reports.is_dir():
            stage_report(reports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
