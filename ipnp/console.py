"""Console hygiene: libraries that print freely to stdout are routed into ipnp's log instead."""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Iterator

log = logging.getLogger("ipnp")


@contextlib.contextmanager
def stdout_to_log(source: str) -> Iterator[None]:
    """Capture what ``source`` (e.g. nnU-Net, nnInteractive) prints and log each line at debug level."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                log.debug("%s: %s", source, line)
