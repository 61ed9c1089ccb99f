"""Worker entry point: `python -m agent start|dev|console|connect ...` (livekit-agents CLI).

`python -m agent config` prints the effective configuration with secrets masked.
"""

from __future__ import annotations

import socket
import sys


def _health_port_free(port: int) -> bool:
    if port == 0:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "config":
        import json

        from .settings import Settings, SettingsError

        try:
            print(json.dumps(Settings.load().masked(), indent=2))
        except SettingsError as e:
            sys.exit(f"parley: configuration error: {e}")
        sys.exit(0)

    from .models import ModelMissingError
    from .settings import SettingsError

    try:
        from .models import check_installed
        from .worker import server, settings

        check_installed(settings.stt_model, settings.local_llm,
                        settings.interpreter_model if settings.interpreter else None)
    except (SettingsError, ModelMissingError) as e:
        sys.exit(f"parley: configuration error: {e}")

    # The framework would die with a bind traceback; say which setting to change instead.
    if len(sys.argv) > 1 and sys.argv[1] == "start" and not _health_port_free(settings.health_port):
        sys.exit(f"parley: health port {settings.health_port} is already in use "
                 "(another worker running? set PARLEY_HEALTH_PORT)")
    if len(sys.argv) > 1 and sys.argv[1] == "start" and not _health_port_free(settings.metrics_port):
        sys.exit(f"parley: metrics port {settings.metrics_port} is already in use "
                 "(another worker running? set PARLEY_METRICS_PORT, 0 turns /metrics off)")

    from livekit.agents import cli

    cli.run_app(server)


if __name__ == "__main__":
    main()
