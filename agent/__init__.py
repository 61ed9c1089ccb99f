"""Parley voice agent worker (livekit-agents) and its simulated caller."""

import os as _os

# Idle threads of the native libraries busy-wait by default, and on 2 cores that time comes
# out of the next stage (VAD, Whisper, the LLM and Piper take turns within one reply). Set here
# because each library reads its variable once, when it loads, and every process of ours
# (`python -m agent`, its job processes, the benchmarks) imports this package first.
# - numpy's OpenBLAS: its threads spin after each call; faster-whisper's mel features are a
#   numpy product, so they spun through Whisper's own encoding. Question set (51 clips):
#   STT median 133-140 -> 74-88 ms with one OpenBLAS thread (the products are small).
# - CTranslate2's OpenMP (libgomp): 25-45 ms of both cores after each recognition otherwise.
# An operator's own setting is kept.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
