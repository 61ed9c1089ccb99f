#!/usr/bin/env bash
# Build llama-cpp-python once for a portable x86-64 baseline (AVX2/FMA/F16C).
# The default -march=native build can emit instructions (AMX, AVX512-FP16) that a
# VM advertises but faults on, and pip's wheel cache would then reuse it anywhere.
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
PIP="${1:-.venv/bin/pip}"
DIR="${PARLEY_WHEEL_DIR:-$HOME/.cache/parley/wheels}/llama-cpp-python-$VERSION-x86-64-v3"
if ls "$DIR"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "$DIR"; exit 0
fi
mkdir -p "$DIR"
echo "==> building llama-cpp-python $VERSION from source for x86-64-v3 (about 4-5 minutes on 2 cores)" >&2
start=$(date +%s)
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$PIP" wheel --no-deps --no-cache-dir --no-binary llama-cpp-python -w "$DIR" "llama-cpp-python==$VERSION" >&2
echo "==> llama-cpp-python wheel ready in $(( $(date +%s) - start ))s: $DIR" >&2
echo "$DIR"
