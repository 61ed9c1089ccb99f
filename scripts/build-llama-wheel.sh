#!/usr/bin/env bash
# Build llama-cpp-python once per CPU level and print the folder holding its wheel.
#
# PARLEY_LLAMA_CPU picks the level (default `auto`):
#   x86-64-v3    AVX2/FMA/F16C: runs on any x86-64 server of the last decade (the images use it);
#   avx512-vnni  x86-64-v3 plus AVX512 F/CD/BW/DQ/VL, VNNI, BF16 and VBMI (Ice Lake, Zen 4 and
#                later): prompt evaluation ~30 % faster on a 2-core Zen 4 (Qwen2.5 0.5B, 20 tokens:
#                158-182 -> 112-124 ms; 1.5B: 448 -> 334 ms), token generation unchanged;
#   auto         avx512-vnni when /proc/cpuinfo lists all of those, x86-64-v3 otherwise
#                (PARLEY_CPUINFO names another file to read: tests/test_install.py).
# Never -march=native: it can emit instructions (AMX, AVX512-FP16) that a VM advertises but
# faults on. Each level has its own folder, so a wheel is never reused on a CPU it was not
# chosen for.
#
# Kept with OpenMP (llama.cpp's default). Without it (GGML_OPENMP=OFF) ggml's threads spin at
# every barrier of a graph: twice as fast alone, but two calls decoding at once on 2 cores
# wrote 6-7 tokens/s each against 29.5 (README, "Latency", session 16).
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
PIP="${1:-.venv/bin/pip}"
LEVEL="${PARLEY_LLAMA_CPU:-auto}"
AVX512_FLAGS="avx512f avx512cd avx512bw avx512dq avx512vl avx512_vnni avx512_bf16 avx512vbmi"
V3_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

if [ "$LEVEL" = auto ]; then
  LEVEL=avx512-vnni
  cpu_flags=" $(grep -m1 '^flags' "${PARLEY_CPUINFO:-/proc/cpuinfo}" 2>/dev/null | cut -d: -f2) "
  for f in $AVX512_FLAGS; do
    case "$cpu_flags" in *" $f "*) ;; *) LEVEL=x86-64-v3; break ;; esac
  done
fi
case "$LEVEL" in
  x86-64-v3) ARGS="$V3_ARGS -DGGML_AVX512=OFF" ;;
  avx512-vnni) ARGS="$V3_ARGS -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON" ;;
  *) echo "PARLEY_LLAMA_CPU=$LEVEL: use auto, x86-64-v3 or avx512-vnni" >&2; exit 2 ;;
esac

DIR="${PARLEY_WHEEL_DIR:-$HOME/.cache/parley/wheels}/llama-cpp-python-$VERSION-$LEVEL"
if ls "$DIR"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "$DIR"; exit 0
fi
mkdir -p "$DIR"
echo "==> building llama-cpp-python $VERSION from source for $LEVEL (about 5 minutes on 2 cores)" >&2
start=$(date +%s)
CMAKE_ARGS="$ARGS -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$PIP" wheel --no-deps --no-cache-dir --no-binary llama-cpp-python -w "$DIR" "llama-cpp-python==$VERSION" >&2
echo "==> llama-cpp-python wheel ready in $(( $(date +%s) - start ))s: $DIR" >&2
echo "$DIR"
