"""Model-level benchmark on the question set: what the caller says, what the agent hears, what it answers.

No servers, no WebRTC: the STT and LLM providers the worker uses, in this process, on
tests/fixtures/questions (the "questions" clips). Prints, per round and as median/p90 over rounds:
- STT word error rate (overall, clean / pink noise / 8 kHz phone) and latency per utterance;
- answer correctness from the manifest text and from the STT transcript (each call's turns in
  order, in one conversation, so memory questions see the earlier turns);
- LLM time to first token at turn 1 and turn 10 of one conversation (skills off, so every turn
  reaches the model);
- who is who (part "roles", text only): after a self-introduction, is the caller's name said back
  to them a turn later (not claimed as the agent's), and is a statement about the caller answered
  rather than echoed;
- RSS of this process with the models loaded.

    .venv/bin/python scripts/bench_models.py --rounds 3
    .venv/bin/python scripts/bench_models.py --stt-model base --llm-model smollm2-135m --json out.json

Run it under the heavy-work lock (`flock /tmp/parley-heavy.lock ...`): it loads models and
uses both cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# First, before numpy loads: the package sets the native libraries' thread settings.
import agent  # noqa: E402, F401

# isort: split
import numpy as np  # noqa: E402
from livekit.agents import llm  # noqa: E402

from agent import models  # noqa: E402
from agent.audio import resample  # noqa: E402
from agent.providers.llama_llm import LlamaLLM, LlamaOptions  # noqa: E402
from agent.providers.whisper_stt import WhisperOptions, WhisperSTT  # noqa: E402
from harness.audio import read_wav  # noqa: E402
from harness.scoring import condition, edit_distance, matches, normalize_words, word_error_rates  # noqa: E402

QUESTIONS = ROOT / "tests" / "fixtures" / "questions"

def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


TRIM = True


def speech_segment(path: Path) -> np.ndarray:
    """The clip as the VAD would hand it to the STT: speech plus ~0.2 s either side, 16 kHz float."""
    clip = read_wav(path)
    pcm = resample(clip.pcm, clip.sample_rate, 16000)
    bounds = clip.speech_bounds_s()
    if bounds is not None and TRIM:
        a, b = bounds
        pcm = pcm[max(0, int((a - 0.2) * 16000)): int((b + 0.3) * 16000)]
    return pcm.astype(np.float32) / 32768.0


def load_questions(directory: Path) -> list[dict[str, Any]]:
    manifest = json.loads((directory / "manifest.json").read_text())
    return [m for m in manifest if m.get("set", "questions") == "questions"]


def calls(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    by_call: dict[str, list[dict[str, Any]]] = {}
    for m in items:
        by_call.setdefault(m.get("call") or m["file"], []).append(m)
    return [sorted(v, key=lambda m: m.get("order", 1)) for v in by_call.values()]


async def reply_to(model: LlamaLLM, ctx: llm.ChatContext) -> str:
    out = ""
    async with model.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                out += chunk.delta.content
    return out.strip()


async def converse(model: LlamaLLM, turns: list[str], instructions: str) -> list[tuple[str, Any]]:
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content=instructions)
    out = []
    for text in turns:
        ctx.add_message(role="user", content=text)
        reply = await reply_to(model, ctx)
        out.append((reply, model.last_stats))
        ctx.add_message(role="assistant", content=reply)
    return out


def run_stt(stt: WhisperSTT, items: list[dict[str, Any]], directory: Path) -> dict[str, Any]:
    rows = []
    for m in items:
        audio = speech_segment(directory / m["file"])
        r = stt.transcribe(audio, "en")
        ref, hyp = normalize_words(m["text"]), normalize_words(r.text)
        rows.append({"file": m["file"], "condition": condition(m), "text": r.text, "errors": edit_distance(ref, hyp),
                     "words": len(ref), "seconds": r.seconds, "audio_s": len(audio) / 16000, "window_s": r.window_s})
    out: dict[str, Any] = {"rows": rows}
    out.update({f"wer_{cond}": rate for cond, rate in word_error_rates(rows).items()})
    secs = [r["seconds"] for r in rows]
    out["latency_median_s"], out["latency_p90_s"] = statistics.median(secs), pct(secs, 0.9)
    return out


async def run_answers(model: LlamaLLM, items: list[dict[str, Any]], transcripts: dict[str, str] | None,
                      instructions: str) -> dict[str, Any]:
    rows = []
    for call in calls(items):
        texts = [transcripts[m["file"]] if transcripts else m["text"] for m in call]
        replies = await converse(model, texts, instructions)
        for m, text, (reply, stats) in zip(call, texts, replies, strict=True):
            if m.get("expect") is None:
                continue
            rows.append({"file": m["file"], "category": m.get("category"), "heard": text, "reply": reply,
                         "ok": matches(m["expect"], reply), "ttft_s": stats.ttft_s, "skill": stats.skill})
    return {"rows": rows, "correct": sum(r["ok"] for r in rows) / max(1, len(rows)), "n": len(rows)}


async def run_ttft(model: LlamaLLM, items: list[dict[str, Any]], instructions: str, turns: int,
                   offset: int) -> list[float]:
    """TTFT per turn of one long conversation; skills off so every turn reaches the model."""
    texts = [m["text"] for m in items]
    texts = [texts[(offset + i) % len(texts)] for i in range(turns)]
    saved = model.options.skills
    model.options.skills = False
    try:
        replies = await converse(model, texts, instructions)
    finally:
        model.options.skills = saved
    return [s.ttft_s for _, s in replies]


# Who is who, in text (part "roles"): a caller introduces themself and asks for
# their name a turn later; a caller tells something about themself. Written for this check (names
# and sentences not in the fixtures). A small model tends to say the caller's words back as its own
# ("My name is Parley.", "I have two cats.").
ROLE_NAMES = ["Robert", "Jessica", "Tom", "Ahmed", "Lucy", "Carlos", "Mei", "Peter", "Grace", "Omar", "Kofi",
              "Ingrid", "Raj", "Elena", "Yusuf"]
ROLE_INTROS = ["Hi, my name is {n}. Nice to meet you.", "Hello, I'm {n}.", "Hey, this is {n} calling.",
               "Good evening, my name is {n}.", "Hi there, I am {n}.", "My name is {n}, please remember it.",
               "Hello there, it's {n} here.", "Hi, I'm {n}, nice to meet you.", "Good afternoon, this is {n}.",
               "Hey, my name's {n}.", "{n} here.", "Hi, {n} speaking.", "Morning! I'm {n}.", "This is {n}.",
               "Hello, my name is {n}."]
ROLE_ASKS = ["What is my name?", "Do you know who I am?"]
ROLE_FACTS = ["I'm calling about my order.", "I just moved to Berlin.", "It's raining here today.", "I have two cats.",
              "My favourite colour is green.", "I work as a nurse.", "I'm planning a trip to Peru.",
              "My car broke down this morning.", "I'm learning to play the guitar.", "My daughter starts school tomorrow."]


def _claims(reply: str, name: str) -> bool:
    """The reply gives the caller's name as the agent's own ("I'm Omar", "My name is Omar")."""
    return bool(re.search(rf"\b(i'm|i am|my name is|my name's)\s+{name.lower()}\b", reply.lower()))


def _echoes(reply: str, said: str) -> bool:
    """The reply adds at most one word to what the caller said, or speaks of it as the agent's."""
    said_words = set(normalize_words(said))
    return len(set(normalize_words(reply)) - said_words) <= 1 or "parley's" in reply.lower()


async def run_roles(model: LlamaLLM, instructions: str) -> dict[str, Any]:
    rows = []
    for i, (form, name) in enumerate(zip(ROLE_INTROS, ROLE_NAMES, strict=True)):
        intro, ask = form.format(n=name), ROLE_ASKS[i % len(ROLE_ASKS)]
        (first, _), (reply, _) = await converse(model, [intro, ask], instructions)
        rows.append({"kind": "name", "said": f"{intro} / {ask}", "reply": f"{first} / {reply}",
                     "ok": name.lower() in reply.lower() and not _claims(reply, name) and not _claims(first, name)})
    for fact in ROLE_FACTS:
        ((reply, _),) = await converse(model, [fact], instructions)
        rows.append({"kind": "statement", "said": fact, "reply": reply, "ok": not _echoes(reply, fact)})
    names = [r for r in rows if r["kind"] == "name"]
    facts = [r for r in rows if r["kind"] == "statement"]
    return {"rows": rows, "names_ok": sum(r["ok"] for r in names), "names": len(names),
            "statements_ok": sum(r["ok"] for r in facts), "statements": len(facts)}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def summarize(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} p90 {pct(values, 0.9):.3f}" if values else "n/a"


async def main() -> int:
    from agent.settings import Settings

    cfg = Settings.load()  # defaults: what the worker runs (PARLEY_STT_MODEL, PARLEY_LLM_MODEL, ...)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=Path, default=QUESTIONS)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--stt-model", default=cfg.stt_model, help="tiny.en | base | CTranslate2 Whisper directory")
    p.add_argument("--beam", type=int, default=cfg.stt_beam_size)
    default_windows = (f"{cfg.stt_window:g},20" if 0 < cfg.stt_window < 20 else f"{cfg.stt_window:g}"
                       if cfg.stt_window else "none")
    p.add_argument("--windows", default=default_windows, help="short-path windows in seconds, or 'none' (30 s path)")
    p.add_argument("--stt-prompt", default="", help="text Whisper is told preceded each turn")
    p.add_argument("--phone-noise-floor", type=float, default=cfg.stt_phone_noise_floor_db,
                   help="pink noise this many dB under phone-band speech before Whisper; 0: none")
    p.add_argument("--two-pass-floor", type=float, default=cfg.stt_two_pass_floor_db,
                   help="wide-band speech decoded a second time with pink noise this many dB under it; 0: once")
    p.add_argument("--pad", choices=("silence", "zeros"), default="silence",
                   help="fill the short window with silent audio or zero features")
    p.add_argument("--llm-model", default=cfg.local_llm, help="qwen2.5-0.5b | smollm2-135m | path to a GGUF")
    p.add_argument("--no-skills", action="store_true", help="every question goes to the LLM")
    p.add_argument("--ttft-turns", type=int, default=10)
    p.add_argument("--instructions", default=cfg.instructions)
    p.add_argument("--model-dir", type=Path, default=cfg.model_dir)
    p.add_argument("--skip", default="", help="comma list of parts to skip: stt,text,heard,ttft,roles")
    p.add_argument("--no-trim", action="store_true", help="whole clips (with their silences), not VAD-like segments")
    p.add_argument("--json", type=Path, help="write every row here")
    p.add_argument("--verbose", "-v", action="store_true", help="print each transcript and reply")
    a = p.parse_args()
    global TRIM
    TRIM = not a.no_trim
    skip = set(filter(None, a.skip.split(",")))
    items = load_questions(a.questions)
    windows = () if a.windows == "none" else tuple(float(w) for w in a.windows.split(","))

    rss0 = rss_mb()
    t0 = time.perf_counter()
    stt = WhisperSTT(WhisperOptions(model_path=models.whisper_model(a.stt_model, a.model_dir), beam_size=a.beam,
                                    windows_s=windows, pad_with_silence=a.pad == "silence",
                                    prompt=a.stt_prompt, phone_noise_floor_db=a.phone_noise_floor,
                                    two_pass_floor_db=a.two_pass_floor))
    t_stt = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = None if skip >= {"text", "heard", "ttft", "roles"} else LlamaLLM(LlamaOptions(model_path=models.llm_gguf(a.llm_model, a.model_dir), skills=not a.no_skills,
                                  warmup_system=a.instructions))
    t_llm = time.perf_counter() - t0
    print(f"# {len(items)} questions from {a.questions}; stt={a.stt_model} beam={a.beam} windows={a.windows} "
          f"phone noise floor={a.phone_noise_floor:g} dB two-pass floor={a.two_pass_floor:g} dB "
          f"llm={model.model if model else '-'} skills={not a.no_skills}")
    print(f"# load: stt {t_stt:.2f}s, llm {t_llm:.2f}s; RSS {rss0:.0f} -> {rss_mb():.0f} MB")

    agg: dict[str, list[float]] = {}
    dump: list[dict[str, Any]] = []

    def add(key: str, value: float) -> None:
        agg.setdefault(key, []).append(value)

    for rnd in range(a.rounds):
        line = [f"round {rnd + 1}:"]
        transcripts = None
        if "stt" not in skip:
            s = run_stt(stt, items, a.questions)
            transcripts = {r["file"]: r["text"] for r in s["rows"]}
            for k in ("wer_all", "wer_clean", "wer_noise", "wer_phone"):
                add(k, s[k])
            agg.setdefault("stt_s", []).extend(r["seconds"] for r in s["rows"])
            line.append(f"WER {s['wer_all']:.3f} (clean {s['wer_clean']:.3f} noise {s['wer_noise']:.3f} "
                        f"phone {s['wer_phone']:.3f}) STT median {s['latency_median_s'] * 1000:.0f} ms "
                        f"p90 {s['latency_p90_s'] * 1000:.0f} ms")
            if a.verbose and rnd == 0:
                for r in s["rows"]:
                    if r["errors"]:
                        print(f"  stt {r['file']}: {r['text']!r} ({r['errors']} errors)")
            dump.append({"round": rnd, "part": "stt", **s})
        if model is None:
            print(" ".join(line), flush=True)
            continue
        if "text" not in skip:
            ans = await run_answers(model, items, None, a.instructions)
            add("correct_text", ans["correct"])
            agg.setdefault("ttft_any_s", []).extend(r["ttft_s"] for r in ans["rows"] if not r["skill"])
            line.append(f"correct from text {ans['correct'] * 100:.0f}% of {ans['n']}")
            if a.verbose and rnd == 0:
                for r in ans["rows"]:
                    print(f"  {'ok ' if r['ok'] else 'BAD'} {r['file']}: {r['heard']!r} -> {r['reply']!r}")
            dump.append({"round": rnd, "part": "text", **ans})
        if "heard" not in skip and transcripts is not None:
            ans = await run_answers(model, items, transcripts, a.instructions)
            add("correct_heard", ans["correct"])
            line.append(f"from transcript {ans['correct'] * 100:.0f}%")
            if a.verbose and rnd == 0:
                for r in ans["rows"]:
                    if not r["ok"]:
                        print(f"  BAD(heard) {r['file']}: {r['heard']!r} -> {r['reply']!r}")
            dump.append({"round": rnd, "part": "heard", **ans})
        if "ttft" not in skip:
            ttft = await run_ttft(model, items, a.instructions, a.ttft_turns, offset=rnd * 7)
            add("ttft_turn1_s", ttft[0])
            add("ttft_turn10_s", ttft[-1])
            line.append(f"TTFT turn 1 {ttft[0] * 1000:.0f} ms, turn {len(ttft)} {ttft[-1] * 1000:.0f} ms "
                        f"(prompt {model.last_stats.prompt_tokens} tok, evaluated {model.last_stats.evaluated_tokens})")
            dump.append({"round": rnd, "part": "ttft", "ttft_s": ttft})
        if "roles" not in skip:
            roles = await run_roles(model, a.instructions)
            add("names_said_back", roles["names_ok"] / roles["names"])
            add("statements_answered", roles["statements_ok"] / roles["statements"])
            line.append(f"who is who: the caller's name said back {roles['names_ok']}/{roles['names']}, "
                        f"statements answered, not echoed {roles['statements_ok']}/{roles['statements']}")
            if a.verbose and rnd == 0:
                for r in roles["rows"]:
                    if not r["ok"]:
                        print(f"  BAD(roles) {r['said']!r} -> {r['reply']!r}")
            dump.append({"round": rnd, "part": "roles", **roles})
        print(" ".join(line), flush=True)

    print("# summary over rounds (median, p90)")
    for k, v in agg.items():
        scale, unit = (1000, " ms") if k.endswith("_s") else (1, "")
        vals = [x * scale for x in v]
        print(f"{k:>16}: median {statistics.median(vals):.3f}{unit}  p90 {pct(vals, 0.9):.3f}{unit}  (n={len(vals)})")
    print(f"# RSS now {rss_mb():.0f} MB, peak {hwm_mb():.0f} MB (STT + LLM only; VAD, end-of-turn and Piper add "
          f"~0.4 GB in a job process)")
    if a.json:
        a.json.write_text(json.dumps({"args": vars(a) | {"questions": str(a.questions), "model_dir": str(a.model_dir),
                                                        "json": str(a.json)}, "summary": agg, "rounds": dump},
                                     indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
