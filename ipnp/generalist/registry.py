"""Generalists by name, as the CLI and run configs name them."""

from __future__ import annotations

from ipnp.errors import IpnpError
from ipnp.generalist.base import Generalist

GENERALISTS = ("classical", "nninteractive", "nninteractive-remote")


def make_generalist(
    name: str,
    *,
    model_dir: str | None = None,
    server_url: str | None = None,
    device: str | None = None,
    padding: int = 6,
    retries: int = 3,
    read_timeout_s: float = 120.0,
) -> Generalist:
    """Build the generalist ``name`` with its options; unknown names and missing options are one-line errors.

    ``padding`` is the box padding the prompts were made with; ``retries`` and ``read_timeout_s`` apply to
    ``nninteractive-remote``.
    """
    if name == "classical":
        from ipnp.generalist.classical import ClassicalGeneralist

        return ClassicalGeneralist(padding=padding)  # it finds the organ's tight box inside the padded one
    if name == "nninteractive":
        from ipnp.generalist.nninteractive import NNInteractiveGeneralist

        return NNInteractiveGeneralist(model_dir=model_dir, device=device)
    if name == "nninteractive-remote":
        if not server_url:
            raise IpnpError("--generalist nninteractive-remote needs --server-url")
        from ipnp.generalist.nninteractive import NNInteractiveRemoteGeneralist

        # The API key comes from NN_INTERACTIVE_API_KEY.
        return NNInteractiveRemoteGeneralist(server_url, retries=retries, read_timeout_s=read_timeout_s)
    raise IpnpError(f"--generalist {name}: unknown; choose one of {', '.join(GENERALISTS)}")
