"""Device names as users write them, checked before any work starts.

torch only rejects a bad name, or a CUDA device this machine lacks, when it first builds a tensor there,
which in a benchmark or a demo is after the dataset has been checked or made and the first run folder
written; a typo should cost nothing.
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


def check_device(name: str, key: str = "--device") -> str:
    """Return ``name`` if it is a device name (:func:`check_device_name`) this machine has; else raise a
    one-line error naming ``key``. ``auto`` is always there: it falls back to the CPU."""
    check_device_name(name, key)
    if not name.startswith("cuda"):
        return name
    import torch  # here, so that reading a config does not load torch

    if not torch.cuda.is_available():
        raise IpnpError(f"{key}: {name!r}: CUDA is not available on this machine")
    index = int(name.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise IpnpError(f"{key}: {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name
