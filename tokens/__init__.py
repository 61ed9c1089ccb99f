"""Parley token service: short-lived LiveKit room tokens that dispatch the agent."""
