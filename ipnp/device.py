"""Device names as users write them, checked before any work starts.

torch only rejects a bad name when it first builds a tensor there, which in a benchmark is after the dataset
has been checked and the first run folder written; a typo should cost nothing.
"""

from __future__ import annotations

import re

from ipnp.errors import IpnpError

_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str, key: str = "--device") -> str:
    """Return ``name`` if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; else raise a one-line error naming
    ``key``, the option or config setting it came from."""
    if not _DEVICE_NAME.fullmatch(name):
        raise IpnpError(f"{key}: {name!r} is not a device name: expected cpu, cuda or cuda:N (or auto)")
    return name
