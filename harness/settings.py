"""Settings of the development tools (parley-call, parley-eval): the LiveKit server they
attach to and the agent they dispatch (shared with the operator CLIs), plus where a local
worker writes its session reports. pydantic-settings: environment, then `.env`."""

from __future__ import annotations

from pydantic import Field

from ops.settings import LiveKitClientSettings, SettingsError

__all__ = ["HarnessSettings", "SettingsError"]


class HarnessSettings(LiveKitClientSettings):
    # Where the worker writes session reports, when it runs on this machine (per-stage figures).
    report_dir: str = Field("reports", alias="PARLEY_REPORT_DIR")
