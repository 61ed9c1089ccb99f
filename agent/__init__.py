"""Parley voice agent worker (livekit-agents) and its simulated caller."""
