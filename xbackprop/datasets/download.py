"""Checksummed downloads from mirrors that may be slow, wrong or hostile."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .catalog import CATALOG
from .dataset import DataError, DataUnavailableError
from .idx import MAX_IDX_BYTES

#: The most bytes a download may bring; a mirror that sends more is cut off.
MAX_DOWNLOAD_BYTES = 64 << 20


#: Seconds one downloaded file may take in all (Fashion-MNIST's largest, 26 MB, at 1 Mbit/s takes 3.5 minutes).
DOWNLOAD_DEADLINE = 600.0


#: A download that brings under STALL_RATE bytes a second over STALL_SECONDS is given up (not waited out).
STALL_SECONDS = 30.0


STALL_RATE = 1024.0


#: Environment variable naming base URLs (separated by spaces) to download from instead of the published
#: mirrors, e.g. a mirror inside an institution; files are still checked against the published SHA-256.
MIRRORS_ENV = "XBACKPROP_MIRRORS"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digests(path: Path, max_idx_bytes: int = MAX_IDX_BYTES) -> set[str]:
    """SHA-256 of the file's bytes and, for gzip data, of its decompressed bytes (streamed, capped)."""
    whole, raw = hashlib.sha256(), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            whole.update(block)
    digests = {whole.hexdigest()}
    try:
        with gzip.open(path, "rb") as f:
            size = 0
            for block in iter(lambda: f.read(1 << 20), b""):
                size += len(block)
                if size > max_idx_bytes:
                    raise DataError(f"{path.name}: decompresses to more than {max_idx_bytes:,} bytes")
                raw.update(block)
        digests.add(raw.hexdigest())
    except (OSError, EOFError, zlib.error):
        pass  # not gzip data: only the file's own digest can match
    return digests


def _verify(path: Path, expected: dict[str, str], max_idx_bytes: int = MAX_IDX_BYTES) -> None:
    """Raise DataError unless the file's compressed or decompressed bytes match a known SHA-256."""
    try:
        digests = _digests(path, max_idx_bytes)
    except OSError as exc:
        raise DataError(f"{path.name}: cannot read ({exc})") from None
    if not digests & set(expected.values()):
        raise DataError(f"{path.name}: SHA-256 does not match the published data")


class _CappedWriter:
    """A file that refuses to grow past ``limit`` bytes or to keep being written after ``deadline`` seconds
    (a mirror that sends forever, or a byte at a time just inside every read timeout, is cut off)."""

    def __init__(self, file: Any, limit: int, deadline: float, progress: Any = None) -> None:
        self.file, self.limit, self.written, self.progress = file, limit, 0, progress
        self.deadline, self.ends = deadline, time.monotonic() + deadline

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.written > self.limit:
            raise DataError(f"sent more than {self.limit:,} bytes")
        if time.monotonic() > self.ends:
            raise DataError(f"took more than {self.deadline:g} s ({self.written:,} bytes so far)")
        if self.progress is not None:
            self.progress.update(len(data))
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


class _CappedDownloader:
    """A pooch downloader: an HTTP GET whose body goes through a :class:`_CappedWriter`, and whose connection
    is shut when the deadline passes or the transfer stalls, under ``min_rate`` bytes a second over the last
    ``stall_after`` seconds (a mirror that trickles a byte just inside every read timeout never lets a blocked
    read return on its own)."""

    CHUNK = 1 << 10  # small reads, so a slow but steady mirror shows its progress to the stall check

    def __init__(self, limit: int, deadline: float, *, progressbar: bool = False,
                 timeout: float | tuple[float, float] = 30.0, stall_after: float = STALL_SECONDS,
                 min_rate: float = STALL_RATE) -> None:
        self.limit, self.deadline, self.progressbar, self.timeout = limit, deadline, progressbar, timeout
        self.stall_after, self.min_rate = stall_after, min_rate

    def __call__(self, url: str, output_file: str, pooch_obj: Any, check_only: bool = False) -> Any:
        import requests

        with requests.get(url, stream=True, timeout=self.timeout) as response:
            response.raise_for_status()
            if check_only:
                return True
            why: list[str] = []  # the watchdog's reason for shutting the connection
            done = threading.Event()
            bar = None
            if self.progressbar:
                from tqdm.auto import tqdm

                total = int(response.headers.get("Content-Length", 0)) or None
                bar = tqdm(total=total, unit="B", unit_scale=True, leave=False, dynamic_ncols=True)
            with open(output_file, "wb") as f:
                writer = _CappedWriter(f, self.limit, self.deadline, bar)
                watchdog = threading.Thread(target=self._watch, args=(response, writer, done, why), daemon=True)
                watchdog.start()
                try:
                    for chunk in response.iter_content(chunk_size=self.CHUNK):
                        writer.write(chunk)
                except Exception:
                    if why:
                        raise DataError(why[0]) from None
                    raise
                finally:
                    done.set()
                    if bar is not None:
                        bar.close()
            if why:  # the shut connection may also read as a short, clean end
                raise DataError(why[0])
        return None

    def _watch(self, response: Any, writer: _CappedWriter, done: threading.Event, why: list[str]) -> None:
        """Shut the connection at the deadline, or when the last ``stall_after`` seconds brought too little."""
        started = time.monotonic()
        samples = [(started, 0)]
        while not done.wait(min(1.0, self.stall_after / 4)):
            now = time.monotonic()
            samples.append((now, writer.written))
            while len(samples) > 1 and samples[1][0] <= now - self.stall_after:
                samples.pop(0)
            if now - started > self.deadline:
                why.append(f"took more than {self.deadline:g} s ({writer.written:,} bytes so far)")
            elif now - samples[0][0] >= self.stall_after and \
                    writer.written - samples[0][1] < self.min_rate * self.stall_after:
                why.append(f"stalled: under {self.min_rate / 1024:g} kB/s for {self.stall_after:g} s "
                           f"({writer.written:,} bytes so far)")
            if why:
                try:  # the socket under http.client's response: neither requests nor urllib3 exposes it mid-read
                    response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
                except (AttributeError, OSError):
                    response.close()
                return


def _remove_stale_staging(folder: Path, older_than_s: float = 3600.0) -> None:
    """Delete staging folders that a killed download left behind (an hour old: no download runs that long)."""
    import shutil

    for staging in folder.glob(".staging-*"):
        try:
            if time.time() - staging.stat().st_mtime > older_than_s:
                shutil.rmtree(staging, ignore_errors=True)
        except OSError:
            continue


def _reason(exc: Exception) -> str:
    """A few words on why a download failed."""
    import requests

    if isinstance(exc, DataError):
        return str(exc)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection broken mid-transfer"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        if "Read timed out" in text:
            return "stalled mid-transfer (read timed out)"
        return "host not found" if ("NameResolution" in text or "resolve" in text) else "cannot connect"
    return f"{type(exc).__name__}: {exc}"[:120]


def download_idx(
    folder: str | os.PathLike[str],
    files: dict[str, dict[str, str]],
    mirrors: Sequence[str],
    *,
    timeout: float | tuple[float, float] = 30.0,
    progressbar: bool = True,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    max_idx_bytes: int = MAX_IDX_BYTES,
    deadline: float = DOWNLOAD_DEADLINE,
    stall_after: float = STALL_SECONDS,
) -> None:
    """Download ``{stem: checksums}`` as ``stem.gz`` into ``folder``, trying each mirror in turn.

    Each file is fetched (with ``pooch``) into a staging folder beside ``folder``,
    verified, then atomically renamed into place; failures leave nothing behind.
    ``timeout`` bounds the connection and every read, in seconds (or a
    ``(connect, read)`` pair), and ``deadline`` the whole file: a mirror still sending
    after it gives up within ``deadline`` plus one read timeout, and one that brings under 1 kB/s over
    ``stall_after`` seconds gives up then. A mirror that sends more
    than ``max_bytes``, or a file that decompresses to more than ``max_idx_bytes``, is
    cut off. Raises
    :class:`DataUnavailableError` naming every mirror's failure when a file
    cannot be had.
    """
    import pooch

    pooch.get_logger().setLevel(logging.WARNING)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-")
        probe.close()
    except OSError as exc:
        raise DataUnavailableError(f"cache folder {folder} is not writable ({exc.strerror or exc})") from None
    _remove_stale_staging(folder)
    for stem, expected in files.items():
        target = folder / f"{stem}.gz"
        if target.is_file():
            continue
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{stem}.gz"
            with tempfile.TemporaryDirectory(dir=folder, prefix=".staging-") as staging:
                try:
                    downloader = _CappedDownloader(max_bytes, deadline, progressbar=progressbar, timeout=timeout,
                                                   stall_after=stall_after)
                    fetched = Path(pooch.retrieve(url, None, fname=target.name, path=staging, downloader=downloader))
                    _verify(fetched, expected, max_idx_bytes)
                except Exception as exc:
                    failures.append(f"{urlsplit(url).netloc}: {_reason(exc)}")
                    continue
                os.replace(fetched, target)
                break
        else:
            raise DataUnavailableError(f"download of {stem}.gz failed ({'; '.join(failures)})")


def _mirrors(name: str) -> Sequence[str]:
    """``$XBACKPROP_MIRRORS`` when set, else the dataset's published mirrors."""
    chosen = os.environ.get(MIRRORS_ENV, "").split()
    return chosen or CATALOG[name].mirrors
