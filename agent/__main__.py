"""Worker entry point: `python -m agent start|dev|console|connect ...` (livekit-agents CLI).

`python -m agent config` prints the effective configuration with secrets masked.
"""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "config":
        from .config_cli import main as config_main

        sys.exit(config_main())

    from .settings import SettingsError

    try:
        from .worker import server
    except SettingsError as e:
        sys.exit(f"parley: configuration error: {e}")

    from livekit.agents import cli

    cli.run_app(server)


if __name__ == "__main__":
    main()
