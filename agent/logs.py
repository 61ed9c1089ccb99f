"""Log lines for people (`make run`): one line per event, the call's room and participant in each.

Production (`python -m agent start` in a container) keeps the framework's JSON lines, which
carry the same fields (`ctx.log_context_fields`, set by the entrypoint) as JSON keys. With
PARLEY_LOG_FORMAT=human the worker's one stdout handler (installed by the framework's CLI;
job processes forward their records to it) gets `HumanFormatter` instead: the context
fields become a `[room=… participant=…]` prefix, so no message formats a room name itself.
"""

from __future__ import annotations

import logging
import time

# The fields the entrypoint puts into every record of a call (ctx.log_context_fields).
CONTEXT_FIELDS = ("room", "participant")


class HumanFormatter(logging.Formatter):
    """`12:03:04 INFO    parley.call   [room=… participant=…] call closed reason=…`"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        context = " ".join(f"{k}={v}" for k in CONTEXT_FIELDS if (v := getattr(record, k, None)))
        prefix = f"[{context}] " if context else ""
        line = f"{stamp} {record.levelname:<7} {record.name:<14} {prefix}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:  # job processes send the formatted traceback (not picklable otherwise)
            line += "\n" + record.exc_text
        return line


def use_human_format() -> int:
    """Give every handler of the root logger the human format; returns how many were changed."""
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.setFormatter(HumanFormatter())
    return len(handlers)
