"""A command's first second: Ctrl-C, SIGTERM and SIGHUP while its libraries are still being imported.

``python -m xbackprop.train`` imports NumPy, the package and its modules before the command's own
signal handling (:func:`xbackprop.cli.run_command`) is in place; a signal in that time printed a
traceback (Ctrl-C) or ended the process without a word (SIGTERM). When, and only when, this process
was started as one of xbackprop's commands, :func:`guard` makes such a signal end it as the commands
do: one line, exit status 130, 143 or 129. Nothing has been written by then, so there is nothing to
clean up. This module imports nothing heavy; the package imports it first, and importing it guards.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

#: The package's commands, as ``python -m xbackprop.NAME`` and as installed scripts ``xbackprop-NAME``.
COMMANDS = ("train", "predict", "graph", "gradcheck", "bench")


def command_name() -> str | None:
    """``python -m xbackprop.train`` (as the commands name themselves) when this process runs that command."""
    argv = list(getattr(sys, "orig_argv", ()))
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m" and argv[i + 1] in {f"xbackprop.{name}" for name in COMMANDS}:
            return f"python -m {argv[i + 1]}"
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    if script in {f"xbackprop-{name}" for name in COMMANDS}:
        return script
    return None


def guard() -> None:
    """In a command's process only: until the command takes over, a signal ends it in one line."""
    prog = command_name()
    if prog is None:
        return

    def end(signum: int, frame: Any) -> None:
        said = "interrupted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}"
        os.write(2, f"{prog}: {said}\n".encode())
        os._exit(128 + signum)

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):  # one the process was told to ignore (nohup) stays ignored
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN:
            signal.signal(getattr(signal, name), end)


guard()
