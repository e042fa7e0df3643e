"""Writing outputs safely: every output planned against the others and the inputs before work starts, each
written beside its target and renamed into place, so an interrupted command never leaves half a file."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = ["replace_atomically", "replace_folder_atomically", "plan_outputs"]


@contextmanager
def replace_folder_atomically(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new empty folder beside ``folder``; when the block succeeds it takes ``folder``'s place whole.

    An error or interruption inside the block removes the new folder and leaves
    ``folder`` as it was (its old files all there, none of the new). The swap itself is
    two renames with SIGINT, SIGTERM and SIGHUP held back between them, so ``folder``
    is never found missing or half written.
    """
    folder = Path(os.path.realpath(folder))
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".partial"))
    try:
        yield staging
        os.chmod(staging, 0o755)
        old = folder.with_name(f"{staging.name}.old")
        held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            if folder.exists():
                os.rename(folder, old)
            os.rename(staging, folder)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def replace_atomically(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    An error or interruption inside the block deletes the temporary file and leaves
    whatever was at ``path`` as it was. A new file gets mode 0644, a replaced one keeps
    its mode. A symbolic link is followed, so the file it points to is replaced; a path
    that holds anything but a regular file (a folder, a device such as ``/dev/full``)
    raises ``ValueError`` and is left alone.
    """
    path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        raise ValueError(f"{path}: exists and is not a regular file; refusing to replace it")
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o644
        os.chmod(temporary, mode)
        with open(temporary, "rb") as written:  # on disk before the name points at it
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            temporary.unlink()
        raise


def plan_outputs(outputs: dict[str, str | os.PathLike[str]],
                 inputs: Iterable[tuple[str, str | os.PathLike[str]]] = (),
                 updates: Iterable[tuple[str, str]] = ()) -> dict[str, Path]:
    """Check a command's output files before any work: ``{flag: resolved path}`` or ``ValueError`` naming the flag.

    Each path is resolved (symbolic links followed); its folder must exist and take a
    new file, which is tried by creating and removing an empty one beside the target (a
    read-only or pseudo file system such as ``/proc`` fails here, not after the work);
    the target must not be a folder or anything but a regular file; no two outputs may
    be the same file, and no output may be one of the ``inputs``, ``(flag, path)`` pairs
    (``--load``, data files), except the ``updates``, ``(output flag, input flag)`` pairs that
    may name one file (``("--save", "--load")``: train on, then save over the loaded net).
    """
    resolved: dict[str, Path] = {}
    for flag, path in outputs.items():
        target = Path(os.path.realpath(path))
        if target.is_dir():
            raise ValueError(f"{flag} {path}: is a folder; give a file name")
        if target.exists() and not target.is_file():
            raise ValueError(f"{flag} {path}: exists and is not a regular file")
        if not target.parent.is_dir():
            raise ValueError(f"{flag} {path}: folder {target.parent} does not exist")
        try:
            fd, trial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
            os.close(fd)
            os.unlink(trial)
        except OSError as exc:
            raise ValueError(f"{flag} {path}: folder {target.parent} does not take new files "
                             f"({exc.strerror or exc})") from None
        for other, seen in resolved.items():
            if seen == target:
                raise ValueError(f"{other} and {flag} name the same file, {path}")
        resolved[flag] = target
    allowed = set(updates)
    for flag, path in inputs:
        source = Path(os.path.realpath(path))
        for other, target in resolved.items():
            if source == target and (other, flag) not in allowed:
                raise ValueError(f"{other} {outputs[other]} would overwrite {flag}'s file {path}")
    return resolved
