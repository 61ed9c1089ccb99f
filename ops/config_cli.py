"""`parley-config`: print the worker's effective configuration, secrets masked."""

from __future__ import annotations

import json
import sys

from agent.settings import Settings, SettingsError


def main() -> int:
    try:
        settings = Settings.load()
    except SettingsError as e:
        print(f"parley-config: {e}", file=sys.stderr)
        return 2
    print(json.dumps(settings.masked(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
