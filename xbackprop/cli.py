"""The command-line layer all five commands share: one parser, one runner, one way to fail.

``python -m xbackprop.train``, ``predict``, ``graph``, ``gradcheck`` and ``bench`` each
build a :class:`Parser` and hand their work to :func:`run_command`, which turns every
ending into one line on stderr and an exit status:

- a mistake in a flag, a file or a size (:class:`UsageError`, ``ValueError``, a backend
  that cannot run, an ``OSError``, running out of memory): ``prog: error: ...``, 2;
- Ctrl-C: ``prog: interrupted``, 130;
- SIGTERM or SIGHUP (a scheduler's time limit, a closed terminal): raised as
  :class:`Terminated` where the program is, so every ``with`` block removes its
  temporary files on the way out; ``prog: terminated by SIGTERM``, 143 or 129;
- a closed pipe (``... | head -1``): nothing more is written, 141.

Python warnings are shown as one plain line, ``prog: warning: ...``, and a message
that holds a newline (a path may) keeps to one line.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any, Iterator

from .backend import THREAD_VARIABLES, BackendUnavailableError

__all__ = [
    "UsageError",
    "Terminated",
    "Parser",
    "run_command",
    "one_line",
    "positive_int",
    "non_negative_int",
    "positive_float",
    "non_negative_float",
    "ratio",
    "command_threads",
]

#: Exit statuses, by how a command ended.
EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 130, 141


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C (temporary files are removed), then exits 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def one_line(text: object) -> str:
    """``text`` with its line breaks written as ``\\n``, so an error stays one line."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


class Parser(argparse.ArgumentParser):
    """``argparse`` with errors as :class:`UsageError` (one line, no usage dump) and ``--help`` ending in
    ``examples``."""

    def __init__(self, prog: str, description: str, examples: Sequence[str] = (), **kwargs: Any) -> None:
        epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples) if examples else None
        super().__init__(prog=prog, description=description, epilog=epilog,
                         formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse names the converter ("invalid positive_int value: 'x'"): the user gave the value, not a function
        message = re.sub(r"^argument ", "", re.sub(r"invalid [\w.]+ value: ", "not a valid value: ", message))
        raise UsageError(message)


# Argument types shared by the commands: one definition of each check, one wording of each message.

def positive_int(text: str) -> int:
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def ratio(text: str) -> float:
    value = _number(float, text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def command_threads(flag: int | None) -> int | None:
    """Threads per process for the CPU libraries in a command: ``--threads`` (0: the libraries' own), else one,
    unless the environment sets them (see ``backend.thread_limit``). One is the faster default where a machine
    is shared, and under MPI it keeps ranks x threads within the cores
    (``benchmarks/results/cpu-2cpu-2026-12-05-threads.md``)."""
    if flag is not None:
        return flag or None
    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        return None
    return 1


def _number(kind: type, text: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


#: Signals received while a command runs, in order (SIGINT, SIGTERM, SIGHUP).
_RECEIVED: list[int] = []


def _ending_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _unsafe_to_raise(frame: Any) -> bool:
    """Whether ``frame`` runs where an exception raised by a signal handler does harm: inside a garbage-collection
    callback (JAX registers one), where Python prints it and drops it, or inside an import, where it can land in
    the middle of an extension module's initialisation (jaxlib's then crashes the process)."""
    codes = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in codes or frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


def _on_signal(signum: int, frame: Any) -> None:
    """Raise the signal's ending where the program is; inside a GC callback or an import, a moment later, once
    out of it."""
    _RECEIVED.append(signum)
    if _unsafe_to_raise(frame) and hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0.01)  # _on_alarm raises it once out of there
        return
    raise _ending_for(signum)


def _on_alarm(signum: int, frame: Any) -> None:
    if _unsafe_to_raise(frame):
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        return
    if _RECEIVED:
        raise _ending_for(_RECEIVED[-1])


def _raise_again_if_dropped(unraisable: Any) -> None:
    """``sys.unraisablehook`` while a command runs: a signal's ending that Python dropped (raised in a callback
    it cannot propagate from) is raised again a moment later; anything else is reported as Python would."""
    if isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)) and hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        return
    sys.__unraisablehook__(unraisable)


@contextmanager
def _terminations_raise() -> Iterator[None]:
    """For the length of the block (main thread only): Ctrl-C raises ``KeyboardInterrupt``, SIGTERM and SIGHUP
    raise :class:`Terminated`, never inside a garbage-collection callback, which would drop them (and if one is
    dropped all the same, it is raised again)."""
    # a signal the process was told to ignore stays ignored (nohup's SIGHUP, SIGINT in a background job)
    names = [name for name in ("SIGINT", "SIGTERM", "SIGHUP")
             if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN]
    handlers = {name: _on_signal for name in names}
    if hasattr(signal, "SIGALRM"):
        handlers["SIGALRM"] = _on_alarm
    try:
        previous = {name: signal.signal(getattr(signal, name), handler) for name, handler in handlers.items()}
    except ValueError:  # not the main thread: leave the process's handlers alone
        previous = {}
    hook, sys.unraisablehook = sys.unraisablehook, _raise_again_if_dropped
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def run_command(main: Callable[[list[str] | None], int], prog: str, argv: list[str] | None = None, *,
                announce: Callable[[], bool] = lambda: True) -> int:
    """``main(argv)``'s exit status, every other ending turned into one line and its status (see the module).

    ``announce()`` says whether this process prints the error line (under MPI only
    rank 0 does: every rank fails alike).
    """
    def say(text: str) -> None:
        if announce():
            print(f"{prog}: {one_line(text)}", file=sys.stderr, flush=True)

    def show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                     line: Any = None) -> None:
        say(f"warning: {message}")

    _RECEIVED.clear()
    with warnings.catch_warnings(), _terminations_raise():
        warnings.showwarning = show_warning
        try:
            status = main(argv)
            if _RECEIVED:  # raised where something swallowed it: the signal still ends the command
                raise _ending_for(_RECEIVED[-1])
            return status
        except Exception as exc:
            if not _RECEIVED or isinstance(exc, BrokenPipeError):
                return _failure(exc, say)
            ending = _ending_for(_RECEIVED[-1])  # an import cut short by the signal fails as an ImportError
            say("interrupted" if isinstance(ending, KeyboardInterrupt) else f"terminated by {ending}")
            return EXIT_INTERRUPTED if isinstance(ending, KeyboardInterrupt) else 128 + _RECEIVED[-1]
        except KeyboardInterrupt:
            say("interrupted")
            return EXIT_INTERRUPTED
        except Terminated as exc:
            say(f"terminated by {exc}")
            return 128 + exc.signum


def _failure(exc: Exception, say: Callable[[str], None]) -> int:
    """The one line and exit status of a failed command; an unexpected exception (a bug) propagates."""
    if isinstance(exc, BrokenPipeError):
        return _quiet_after_broken_pipe()
    if isinstance(exc, (UsageError, ValueError, BackendUnavailableError)):
        say(f"error: {exc}")
    elif isinstance(exc, OSError):  # a file that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        say(f"error: {where}{exc.strerror or exc}")
    elif isinstance(exc, MemoryError):
        say("error: out of memory: try a smaller net, batch or --limit")
    else:
        raise exc
    return EXIT_USAGE


def _quiet_after_broken_pipe() -> int:
    """The reader went away (``| head``): send what is left of stdout nowhere, so exiting writes nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
    return EXIT_BROKEN_PIPE
