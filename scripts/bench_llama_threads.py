"""llama.cpp decode and prompt speed per thread count, alone or beside a busy thread.

    .venv/bin/python scripts/bench_llama_threads.py                 # 1 and 2 decode threads, idle and 30 % load
    .venv/bin/python scripts/bench_llama_threads.py --model qwen2.5-coder-1.5b-instruct-q4_k_m.gguf

Per configuration: a ~200-token prefix is evaluated once; then 8 times a 25-token user turn
against it (prompt time) and 16 greedy tokens (decode tokens/s); medians printed. The busy
thread spins `load` of each 2 ms period and sleeps the rest (a stand-in for the call's audio,
VAD and WebRTC work on the same cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import agent  # noqa: E402, F401  (the native libraries' thread settings)
from agent.settings import Settings  # noqa: E402


def busy(load: float, stop: threading.Event) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        while time.perf_counter() - t < 0.002 * load / (1 - load):
            pass
        time.sleep(0.002)


def run(model: Path, decode_threads: int, batch_threads: int, load: float) -> str:
    from llama_cpp import Llama

    m = Llama(model_path=str(model), n_ctx=2048, n_threads=decode_threads, n_threads_batch=batch_threads,
              n_batch=256, verbose=False)
    m.eval(m.tokenize(("<|im_start|>system\nYou are a helpful voice assistant. Keep answers short.<|im_end|>\n"
                       * 8).encode()))
    base = m.n_tokens
    stop = threading.Event()
    if load:
        threading.Thread(target=busy, args=(load, stop), daemon=True).start()
    prompt, decode = [], []
    try:
        for i in range(8):
            m.n_tokens = base
            q = m.tokenize(f"<|im_start|>user\nWhat is the capital of country number {i} in Europe?<|im_end|>\n"
                           "<|im_start|>assistant\n".encode(), add_bos=False, special=True)
            t = time.perf_counter()
            m.eval(q)
            prompt.append(time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(16):
                m.eval([m.sample(temp=0.0)])
            decode.append(16 / (time.perf_counter() - t))
    finally:
        stop.set()
    return (f"decode threads {decode_threads}, prompt threads {batch_threads}, load {load:.0%}: "
            f"prompt {statistics.median(prompt) * 1000:.0f} ms, decode {statistics.median(decode):.1f} tokens/s")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                    help="a GGUF file name in PARLEY_MODEL_DIR, or a path")
    ap.add_argument("--decode-threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--prompt-threads", type=int, default=2)
    ap.add_argument("--loads", type=float, nargs="*", default=[0.0, 0.3])
    a = ap.parse_args()
    model = Path(a.model) if "/" in a.model else Settings.load().model_dir / a.model
    if not model.is_file():
        print(f"bench_llama_threads: no model at {model} (run `make install` first)", file=sys.stderr)
        return 2
    for load in a.loads:
        for n in a.decode_threads:
            print(run(model, n, a.prompt_threads, load), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
