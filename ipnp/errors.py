"""User-facing errors: the CLI prints their message as one line, without a traceback."""


class IpnpError(Exception):
    """A problem with the user's input or environment that a message can explain.

    The message names the file or case and the problem; the CLI prints it as ``ipnp: error: <message>``.
    """
