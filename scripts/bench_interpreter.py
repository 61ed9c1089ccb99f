"""Interpreter mode benchmark: keyword retention and latency per direction (issue 14).

22 short sentences per direction (written for this benchmark, synthesised with espeak-ng's
`es` and `en-us` voices), each with the content words its translation must keep (any of
a few accepted forms, accents ignored).

  --models   the models alone, no processes: Whisper base (detect + transcribe, and its own
             translate task for es->en), the text translator for en->es, and a second
             en->es candidate: Whisper decoding English audio with the Spanish language token.
  --prompts  the text model alone on the exact sentences: prompt styles compared.
  --calls    the whole stack: livekit-server + a worker with PARLEY_INTERPRETER=1, one
             parley-call per direction playing every sentence; retention on the agent's
             transcript, first translated audio = parley-call's turn_latency_ms (end of the
             caller's speech -> first non-silent agent audio heard).

  .venv/bin/python scripts/bench_interpreter.py --models --calls [--limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (sentence, [accepted forms per content word]); forms are matched as word prefixes.
ES_EN: list[tuple[str, list[list[str]]]] = [
    ("¿Dónde está la estación de tren?", [["station"], ["train"]]),
    ("Necesito un médico, por favor.", [["doctor", "physician"]]),
    ("¿Cuánto cuesta este libro?", [["book"]]),
    ("Mi hermano vive en Madrid.", [["brother"], ["madrid"]]),
    ("El restaurante abre a las ocho.", [["restaurant"], ["eight", "8"]]),
    ("Quiero reservar una habitación para dos noches.", [["room"], ["night"]]),
    ("La reunión es mañana por la mañana.", [["meeting"], ["tomorrow"]]),
    ("Hace mucho frío hoy.", [["cold"], ["today"]]),
    ("¿Puedes ayudarme con mi maleta?", [["help"], ["suitcase", "luggage", "bag"]]),
    ("El perro está en el jardín.", [["dog"], ["garden", "yard"]]),
    ("Me gusta mucho el café con leche.", [["coffee"], ["milk"]]),
    ("El avión sale a las tres de la tarde.", [["plane", "flight", "airplane"], ["three", "3"]]),
    ("Perdí mi teléfono en el autobús.", [["phone", "telephone"], ["bus"]]),
    ("¿A qué hora cierra el banco?", [["bank"], ["close"]]),
    ("Mi hija tiene diez años.", [["daughter"], ["ten", "10"]]),
    ("La playa está muy cerca del hotel.", [["beach"], ["hotel"]]),
    ("Necesito comprar agua y pan.", [["water"], ["bread"]]),
    ("El museo está cerrado los lunes.", [["museum"], ["monday"]]),
    ("Mi coche es rojo.", [["car"], ["red"]]),
    ("¿Dónde puedo encontrar una farmacia?", [["pharmacy", "drugstore", "chemist"]]),
    ("Llueve mucho en invierno.", [["rain"], ["winter"]]),
    ("La cena está lista.", [["dinner", "supper"], ["ready"]]),
]
EN_ES: list[tuple[str, list[list[str]]]] = [
    ("Where is the train station?", [["estacion"], ["tren"]]),
    ("I need a doctor, please.", [["medico", "doctor"]]),
    ("How much does this book cost?", [["libro"]]),
    ("My brother lives in London.", [["hermano"], ["londres"]]),
    ("The restaurant opens at eight.", [["restaurante"], ["ocho", "8"]]),
    ("I want to book a room for two nights.", [["habitacion", "cuarto"], ["noche"]]),
    ("The meeting is tomorrow morning.", [["reunion"], ["manana"]]),
    ("It is very cold today.", [["frio"], ["hoy"]]),
    ("Can you help me with my suitcase?", [["ayud"], ["maleta", "equipaje"]]),
    ("The dog is in the garden.", [["perro"], ["jardin"]]),
    ("I like coffee with milk.", [["cafe"], ["leche"]]),
    ("The plane leaves at three in the afternoon.", [["avion", "vuelo"], ["tres", "3"]]),
    ("I lost my phone on the bus.", [["telefono", "movil", "celular"], ["autobus", "bus"]]),
    ("What time does the bank close?", [["banco"]]),
    ("My daughter is ten years old.", [["hija"], ["diez", "10"]]),
    ("The beach is very close to the hotel.", [["playa"], ["hotel"]]),
    ("I need to buy water and bread.", [["agua"], ["pan"]]),
    ("The museum is closed on Mondays.", [["museo"], ["lunes"]]),
    ("My car is red.", [["coche", "carro", "auto"], ["rojo"]]),
    ("Where can I find a pharmacy?", [["farmacia"]]),
    ("It rains a lot in winter.", [["llueve", "lluvia"], ["invierno"]]),
    ("Dinner is ready.", [["cena"], ["lista", "listo"]]),
]
DIRECTIONS = {"es->en": ("es", ES_EN), "en->es": ("en-us", EN_ES)}


def fold(text: str) -> list[str]:
    plain = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return re.findall(r"[a-z0-9]+", plain)


def kept(translation: str, keywords: list[list[str]]) -> bool:
    words = fold(translation)
    return all(any(w.startswith(form) for w in words for form in forms) for forms in keywords)


def synth(text: str, voice: str, path: Path) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), text], check=True, timeout=60)
    return path


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def bench_models(limit: int, work: Path, llm_model: str = "qwen2.5-1.5b") -> dict:
    """Candidates per step: Whisper beam 1 vs 5 (transcript exact match), es->en by Whisper's
    translate task vs the text model, en->es by the text model vs Whisper forced to Spanish."""
    import agent  # noqa: F401  (before numpy: it sets the native libraries' thread settings)

    # isort: split
    import numpy as np

    from agent import models
    from agent.providers.llama_translate import LlamaTranslator, TranslatorOptions
    from agent.providers.whisper_interpreter import InterpreterSTTOptions, WhisperInterpreterSTT
    from agent.settings import Settings

    settings = Settings.load()
    path = models.whisper_model("base", settings.model_dir)
    whispers = {b: WhisperInterpreterSTT(InterpreterSTTOptions(path, beam_size=b, translate_to_english=True,
                                                               phone_noise_floor_db=settings.stt_phone_noise_floor_db))
                for b in (1, 5)}
    translator = LlamaTranslator(TranslatorOptions(models.llm_gguf(llm_model, settings.model_dir)))
    out: dict = {}
    for name, (voice, sentences) in DIRECTIONS.items():
        src, tgt = name.split("->")
        rows = []
        for i, (text, keywords) in enumerate(sentences[:limit]):
            wav = synth(text, voice, work / f"{src}-{i:02d}.wav")
            raw = subprocess.run(["sox", str(wav), "-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1",
                                  "-"], capture_output=True, check=True).stdout
            audio = np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
            row: dict = {"sentence": text}
            for b, w in whispers.items():
                r = w.interpret(audio)
                row[f"b{b}_heard"], row[f"b{b}_language_ok"] = r.text, r.language == src
                row[f"b{b}_exact"] = fold(r.text) == fold(text)
                row[f"b{b}_stt_ms"] = round((sum(r.seconds.values()) - r.seconds.get("translate", 0.0)) * 1000)
                if src != "en":
                    row[f"b{b}_whisper_translation"] = r.english or ""
                    row[f"b{b}_whisper_kept"] = kept(r.english or "", keywords)
                    row[f"b{b}_whisper_translate_ms"] = round(r.seconds.get("translate", 0.0) * 1000)
                t0 = time.perf_counter()
                row[f"b{b}_llm_translation"] = translator.translate(r.text, src, tgt) if r.text else ""
                row[f"b{b}_llm_ms"] = round((time.perf_counter() - t0) * 1000)
                row[f"b{b}_llm_kept"] = kept(row[f"b{b}_llm_translation"], keywords)
            # The text model on the exact sentence: its own quality, apart from recognition.
            row["llm_on_text"] = translator.translate(text, src, tgt)
            row["llm_on_text_kept"] = kept(row["llm_on_text"], keywords)
            if src == "en":
                w = whispers[5]
                forced, _ = w.decode(w.encode(audio), "es", "transcribe", len(audio) / 16000)
                row["whisper_forced_es"], row["whisper_forced_kept"] = forced, kept(forced, keywords)
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
        n = len(rows)

        def rate(key: str, rows: list[dict] = rows, n: int = n) -> float:
            return round(sum(bool(r.get(key)) for r in rows) / n, 3)

        def med(key: str, rows: list[dict] = rows) -> float:
            return statistics.median(r[key] for r in rows)

        summary = {"n": n, "llm_on_text_retention": rate("llm_on_text_kept")}
        for b in whispers:
            summary[f"beam{b}"] = {
                "language_detected": rate(f"b{b}_language_ok"), "transcript_exact": rate(f"b{b}_exact"),
                "stt_ms_median": med(f"b{b}_stt_ms"), "llm_retention": rate(f"b{b}_llm_kept"),
                "llm_ms_median": med(f"b{b}_llm_ms"),
                **({"whisper_translate_retention": rate(f"b{b}_whisper_kept"),
                    "whisper_translate_ms_median": med(f"b{b}_whisper_translate_ms")} if src != "en" else {}),
            }
        if src == "en":
            summary["whisper_forced_es_retention"] = rate("whisper_forced_kept")
        out[name] = {"summary": summary, "rows": rows}
        print(f"models {name}: {json.dumps(summary)}", flush=True)
    return out


def bench_prompts(limit: int, llm_model: str = "qwen2.5-1.5b") -> dict:
    """The text model alone on the exact sentences: prompt styles, and the production path
    (labels, asked again in the chat style when it only repeated the source)."""
    from agent import models
    from agent.providers.llama_translate import LlamaTranslator, TranslatorOptions
    from agent.settings import Settings

    translator = LlamaTranslator(TranslatorOptions(models.llm_gguf(llm_model, Settings.load().model_dir)))
    out: dict = {}
    for name, (_voice, sentences) in DIRECTIONS.items():
        src, tgt = name.split("->")
        rows = []
        for text, keywords in sentences[:limit]:
            row: dict = {"sentence": text}
            for style in ("chat", "labels"):
                row[style] = translator._ask(text, src, tgt, style)
                row[f"{style}_kept"] = kept(row[style], keywords)
            t0 = time.perf_counter()
            row["production"] = translator.translate(text, src, tgt)
            row["production_ms"] = round((time.perf_counter() - t0) * 1000)
            row["production_kept"] = kept(row["production"], keywords)
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
        n = len(rows)
        summary = {k: round(sum(r[f"{k}_kept"] for r in rows) / n, 3) for k in ("chat", "labels", "production")}
        summary["production_ms_median"] = statistics.median(r["production_ms"] for r in rows)
        out[name] = {"summary": summary, "rows": rows}
        print(f"prompts {name}: {json.dumps(summary)}", flush=True)
    return out


def bench_calls(limit: int, work: Path, llm_model: str = "qwen2.5-1.5b") -> dict:
    from harness.devstack import BIN, LiveKitServer, Worker

    logs = ROOT / "test-output" / "logs"  # kept: a failed run is read from the worker's log
    server = LiveKitServer.create().start(logs)
    worker = Worker(env={**server.env(), "PARLEY_INTERPRETER": "1", "PARLEY_INTERPRETER_LANGUAGES": "en,es",
                         "PARLEY_REPORT_DIR": str(work / "reports"), "PARLEY_IDLE_PROCESSES": "1",
                         "PARLEY_LOAD_CPU": "0", "PARLEY_METRICS_PORT": "0",
                         "PARLEY_INTERPRETER_MODEL": llm_model})
    out: dict = {}
    try:
        worker.start(logs, name="bench-interpreter-worker", timeout=300)
        for name, (voice, sentences) in DIRECTIONS.items():
            chosen = sentences[:limit]
            files = [synth(t, voice, work / f"call-{name[:2]}-{i:02d}.wav") for i, (t, _) in enumerate(chosen)]
            cmd = [str(BIN / "parley-call"), "--url", server.url, "--api-key", server.api_key, "--api-secret",
                   server.api_secret, "--json", "--timeout", "20"]
            for f in files:
                cmd += ["--audio", str(f)]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60 + 25 * len(files), cwd=ROOT)
            events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
            turns = [e for e in events if e.get("event") == "turn"]
            rows = []
            for (text, keywords), t in zip(chosen, turns, strict=False):
                rows.append({"sentence": text, "heard": t.get("user_transcript", ""), "translation": t.get("agent_text", ""),
                             "latency_ms": t.get("turn_latency_ms"), "kept": kept(t.get("agent_text", ""), keywords)})
                print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
            lat = [r["latency_ms"] for r in rows if r["latency_ms"] is not None]
            summary = {"n": len(chosen), "answered": len(lat), "rc": p.returncode,
                       "keyword_retention": round(sum(r["kept"] for r in rows) / len(chosen), 3),
                       "first_audio_ms_median": round(statistics.median(lat)) if lat else None,
                       "first_audio_ms_p90": round(pct(lat, 0.9)) if lat else None}
            if p.returncode != 0:
                summary["stderr"] = p.stderr[-500:]
            out[name] = {"summary": summary, "rows": rows}
            print(f"calls {name}: {summary}", flush=True)
    finally:
        worker.stop()
        server.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", action="store_true")
    ap.add_argument("--calls", action="store_true")
    ap.add_argument("--prompts", action="store_true", help="the text model alone on the exact sentences")
    ap.add_argument("--limit", type=int, default=len(ES_EN))
    ap.add_argument("--llm-model", default="qwen2.5-1.5b", help="the translator (a name or a GGUF path)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not (args.models or args.calls or args.prompts):
        ap.error("choose --models, --prompts and/or --calls")
    result = {}
    with tempfile.TemporaryDirectory(prefix="bench-interp-") as tmp:
        work = Path(tmp)
        if args.prompts:
            result["prompts"] = bench_prompts(args.limit, args.llm_model)
        if args.models:
            result["models"] = bench_models(args.limit, work, args.llm_model)
        if args.calls:
            result["calls"] = bench_calls(args.limit, work, args.llm_model)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
