"""Logging set-up, low in the package so that server processes started without the CLI can run it too."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    """Log lines on stderr at `level`.

    Run by the CLI, and by each `serve --workers` or gunicorn worker process, which starts afresh.
    """
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # transformers 5 draws a "Loading weights" bar on every load; on a terminal that is noise.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
