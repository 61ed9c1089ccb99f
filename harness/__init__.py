"""Development tools, never shipped in the worker image: `parley-call` (the simulated
caller), devstack (real livekit-server/worker/token processes on loopback for tests and
benchmarks), sipstack (`make sip-up`: Redis + livekit-server + livekit-sip)."""
