"""Where a dataset's files are on disk, and which dataset a folder holds."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .catalog import CATALOG, CHECKSUMS, IDX_FILES
from .dataset import DataError
from .download import _digests

#: Environment variable naming a folder with one sub-folder per dataset.
DATA_ENV = "XBACKPROP_DATA"


#: Environment variable that overrides the download cache folder.
CACHE_ENV = "XBACKPROP_CACHE"


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _search_dirs(name: str) -> list[Path]:
    """Where dataset ``name`` is looked for when no folder is given: ``$XBACKPROP_DATA/<name>/``, then the
    system folder (Debian's ``/usr/share/datasets/fashion-mnist``)."""
    folders = [Path(os.environ[DATA_ENV]) / name] if os.environ.get(DATA_ENV) else []
    if name in CATALOG and CATALOG[name].system_dir is not None:
        folders.append(CATALOG[name].system_dir)
    return folders


def _first_holding(folders: Sequence[Path], stems: Sequence[str]) -> Path | None:
    """The first of ``folders`` that holds every one of ``stems`` (plain or ``.gz``)."""
    for folder in folders:
        if all(_find_file(folder, stem) for stem in stems):
            return folder
    return None


def dataset_files(name: str, data_dir: str | os.PathLike[str] | None = None,
                  cache_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every file :func:`load_dataset` may read for ``name`` (or write, downloading): the four IDX files, plain
    and ``.gz``, in ``data_dir``, else in every folder it searches and in the cache. An output planned against
    these can never overwrite a dataset, wherever that was found. None for the digits (scikit-learn's)."""
    if name in CATALOG and not CATALOG[name].on_disk and data_dir is None:
        return []
    if data_dir is not None:
        folders = [Path(data_dir)]
    else:
        folders = [*_search_dirs(name), Path(cache_dir) if cache_dir is not None else default_cache_dir() / name]
    return [folder / f"{stem}{suffix}" for folder in folders for stem in _stems() for suffix in ("", ".gz")]


def find_dataset_dir(name: str, data_dir: str | os.PathLike[str] | None = None, split: str = "test") -> Path | None:
    """The first folder holding ``split``'s two IDX files of dataset ``name``, or ``None``.

    Order: ``data_dir`` itself, then :func:`load_dataset`'s search order (``$XBACKPROP_DATA/<name>/``,
    the system folder); the download cache is not searched.
    """
    explicit = [] if data_dir is None else [Path(data_dir)]
    return _first_holding(explicit + _search_dirs(name), IDX_FILES[split])


def identify_dataset(folder: str | os.PathLike[str]) -> str | None:
    """Which known dataset an IDX folder holds (``"mnist"``, ``"fashion-mnist"``), or ``None`` for data xbackprop
    does not know.

    Decided by the SHA-256 of all four files (compressed or not), so a folder named anything is
    recognised and an unknown one is not mistaken for MNIST. A folder whose files are not one known
    dataset's, each in its place (Fashion-MNIST's training images among MNIST's files, train and test
    swapped, one known file beside unknown ones), or that holds a plain file and a different ``.gz`` of
    the same name, is a :class:`DataError` saying which files.
    """
    folder = Path(folder)
    known: dict[str, tuple[str, str] | None] = {}
    for stem in _stems():
        paths = [path for path in (folder / stem, folder / f"{stem}.gz") if path.is_file()]
        if len(paths) == 2 and not _same_data(*paths):
            raise DataError(f"{folder}: {stem} and {stem}.gz hold different data; keep the one you mean")
        if paths:
            known[stem] = _known_as(paths[0])
    recognised = {stem: kind for stem, kind in known.items() if kind is not None}
    if not recognised:
        return None
    names = {name for name, _ in recognised.values()}
    wrong = [f"{stem} is {name}'s {held}" for stem, (name, held) in recognised.items() if held != stem]
    wrong += [f"{stem} is none of {'/'.join(sorted(names))}'s" for stem, kind in known.items() if kind is None]
    if len(names) > 1:
        wrong = [f"{stem} is {name}'s" for stem, (name, _) in recognised.items()] + wrong
    if wrong:
        raise DataError(f"{folder}: its IDX files are not one dataset's, each in its place: {'; '.join(wrong)}")
    return names.pop()


_RECOGNISED: dict[tuple[str, int, int], tuple[str, str] | None] = {}


def _known_as(path: Path) -> tuple[str, str] | None:
    """``(dataset, stem)`` whose published SHA-256 the file matches, or ``None`` (remembered per file state)."""
    state = path.stat()
    key = (str(path.resolve()), state.st_size, state.st_mtime_ns)
    if key not in _RECOGNISED:
        try:
            digests = _digests(path)
        except OSError:
            digests = set()
        _RECOGNISED[key] = next(((name, stem) for name, files in CHECKSUMS.items() for stem, sums in files.items()
                                 if digests & set(sums.values())), None)
    return _RECOGNISED[key]


def _same_data(plain: Path, compressed: Path) -> bool:
    """Whether ``compressed`` decompresses to ``plain``'s bytes (by SHA-256)."""
    try:
        return bool(_digests(plain) & _digests(compressed))
    except OSError:
        return False


def _stems(split: str | None = None) -> tuple[str, ...]:
    splits = IDX_FILES.values() if split is None else (IDX_FILES[split],)
    return tuple(stem for pair in splits for stem in pair)


def default_cache_dir() -> Path:
    """``$XBACKPROP_CACHE``, else the platform's user cache folder for xbackprop."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import pooch

    return Path(pooch.os_cache("xbackprop"))
