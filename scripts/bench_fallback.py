"""How long a cloud failure costs the caller: failure → first local audio, per failure mode.

In one process, so machine noise hits both sides alike: the LLM FallbackAdapter (OpenAI
plugin → fake server on loopback, failing on purpose, with SmolLM2 behind it) then Piper's
first audio for the first sentence, against the local stack alone (SmolLM2 → Piper) run
interleaved with it. Also the TTS fallback alone (OpenAI TTS failing → Piper).

    make bench-fallback            # or: .venv/bin/python scripts/bench_fallback.py --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# First, before numpy loads: the package sets the native libraries' thread settings.
import agent  # noqa: E402, F401

# isort: split
from livekit.agents import llm  # noqa: E402

from agent.providers import LocalModels, select_models  # noqa: E402
from agent.settings import Settings  # noqa: E402
from tests.fakes import OpenAIFake, closed_port  # noqa: E402

QUESTION = "What is the capital of France?"
SYSTEM = Settings().instructions


async def first_audio(adapter_llm: llm.LLM, tts, fail_after: float) -> tuple[float, float, float]:
    """(failure → first token, failure → first audio, whole first sentence text length)."""
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content=SYSTEM)
    ctx.add_message(role="user", content=QUESTION)
    t0 = time.perf_counter()
    failed_at = t0 + fail_after
    text, first_token = "", None
    async with adapter_llm.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                first_token = first_token or time.perf_counter()
                text += chunk.delta.content
                if any(p in text for p in ".!?"):
                    break
    sentence = text.split(".")[0] + "."
    async with tts.synthesize(sentence) as s:
        async for _ in s:
            audio_at = time.perf_counter()
            break
    assert first_token is not None
    return (first_token - failed_at) * 1000, (audio_at - failed_at) * 1000, len(sentence)


async def tts_first_audio(tts, fail_after: float) -> float:
    t0 = time.perf_counter()
    async with tts.synthesize("The capital of France is Paris.") as s:
        async for _ in s:
            return (time.perf_counter() - t0 - fail_after) * 1000
    raise RuntimeError("no audio")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=2.0, help="PARLEY_FALLBACK_TIMEOUT for the stall case")
    args = ap.parse_args()
    local = LocalModels.load(Settings())
    fake = OpenAIFake().start()
    fake.stall_s = args.timeout + 5
    try:
        await first_audio(local.llm, local.tts, 0)  # warm llama.cpp and Piper
        rows = []
        for mode in ("refused", "http500", "close_mid", "stall"):
            fb_tok, fb_audio, base_audio = [], [], []
            for _ in range(args.runs):
                fake.llm_mode = "ok" if mode == "refused" else mode
                url = f"http://127.0.0.1:{closed_port()}/v1" if mode == "refused" else fake.base_url
                s = Settings(llm="openai", openai_api_key="sk-bench", openai_base_url=url, fallback=True,
                             fallback_timeout=args.timeout)
                chosen = select_models(s, local)
                tok, audio, _ = await first_audio(chosen.llm, local.tts, args.timeout if mode == "stall" else 0)
                fb_tok.append(tok)
                fb_audio.append(audio)
                base_audio.append((await first_audio(local.llm, local.tts, 0))[1])
            rows.append((f"LLM {mode}", statistics.median(fb_tok), statistics.median(fb_audio),
                         statistics.median(base_audio)))
        for mode in ("refused", "http500", "stall"):
            fb = []
            for _ in range(args.runs):
                fake.tts_mode = "ok" if mode == "refused" else mode
                url = f"http://127.0.0.1:{closed_port()}/v1" if mode == "refused" else fake.base_url
                s = Settings(tts="openai", openai_api_key="sk-bench", openai_base_url=url, fallback=True,
                             fallback_timeout=args.timeout)
                chosen = select_models(s, local)
                fb.append(await tts_first_audio(chosen.tts, args.timeout if mode == "stall" else 0))
            base = [await tts_first_audio(local.tts, 0) for _ in range(args.runs)]
            rows.append((f"TTS {mode}", float("nan"), statistics.median(fb), statistics.median(base)))
    finally:
        fake.stop()
    print(f"\nfailure → first local audio, median of {args.runs} (ms; stall = after the {args.timeout:.1f} s timeout)")
    print(f"{'case':<16}{'first token':>12}{'first audio':>13}{'local alone':>13}{'overhead':>10}")
    for name, tok, audio, base in rows:
        tok_s = "-" if tok != tok else f"{tok:.0f}"
        print(f"{name:<16}{tok_s:>12}{audio:>13.0f}{base:>13.0f}{audio - base:>10.0f}")


if __name__ == "__main__":
    asyncio.run(main())
