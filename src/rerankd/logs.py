"""Logging set-up, low in the package so that server processes started without the CLI can run it too.

Two loggers are the server's console, printed on stderr whatever `--log-level` says, as
uvicorn prints its address and access lines: `status` (what the server loads, that it is
ready, where it listens, what it drains) and `access` (one line per request). Everything
else goes through the root logger at `--log-level`.
"""

from __future__ import annotations

import json
import logging
import sys
import time

status_log = logging.getLogger("rerankd.status")
access_log = logging.getLogger("rerankd.access")

_CONSOLE_FORMAT = "%(levelname)-8s %(message)s"
# With several server processes on one stderr, each line says which one wrote it.
_CONSOLE_FORMAT_WITH_PID = "%(levelname)-8s [%(process)d] %(message)s"


def configure_logging(level: str) -> None:
    """Log lines on stderr at `level`.

    Run by the CLI, and by each `serve --workers` or gunicorn worker process, which starts afresh.
    """
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # transformers 5 draws a "Loading weights" bar on every load; on a terminal that is noise.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class JsonLogFormatter(logging.Formatter):
    """Every other log record as one JSON line too, so a collector needs no second parser."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_server_output(*, json_lines: bool, access: bool, show_pid: bool = False) -> None:
    """The server's console: status lines, and access lines unless `access` is off (`--quiet`).

    With `json_lines` (`--json-logs`) every record is one JSON object per line: access lines
    are logged as JSON already, status and root records go through `JsonLogFormatter`. Safe
    to run more than once in a process (the CLI, then the app it builds).
    """
    for logger, formatter in (
        (status_log, JsonLogFormatter() if json_lines else
         logging.Formatter(_CONSOLE_FORMAT_WITH_PID if show_pid else _CONSOLE_FORMAT)),
        # A JSON access line is the whole record; a text one gets the same prefix as the status lines.
        (access_log, logging.Formatter("%(message)s") if json_lines else
         logging.Formatter(_CONSOLE_FORMAT_WITH_PID if show_pid else _CONSOLE_FORMAT)),
    ):
        handler = next((h for h in logger.handlers if getattr(h, "_rerankd_console", False)), None)
        if handler is None:
            handler = logging.StreamHandler(sys.stderr)
            handler._rerankd_console = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        handler.setFormatter(formatter)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # printed once, by its own handler, at any root level
    access_log.disabled = not access
    if json_lines:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLogFormatter())
