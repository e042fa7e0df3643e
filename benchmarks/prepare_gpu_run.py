"""Prepare what a lent GPU machine lacks for ``benchmarks.gpu_check``, into one folder git ignores.

    python -m benchmarks.prepare_gpu_run [--data-dir FASHION_DIR]

The GPU machines have CuPy, PyTorch and JAX but not the pure-Python packages xbackprop
needs (array-api-compat, array-api-extra, pooch and its platformdirs) nor array-api-strict,
and they reach no network. This writes into ``.gpu`` at the repository's root (git ignores it):

- ``wheels/``: those packages' wheels, at the versions installed here, for Python 3.12;
- ``data/fashion-mnist/``: a copy of Fashion-MNIST's four IDX files (from ``--data-dir``, else
  ``$XBACKPROP_DATA/fashion-mnist``), recognised by their checksums and read once before copying;
- ``run.sh``: the one command to run there, which installs the wheels into a temporary
  folder, runs the preflight and the proof into ``$OUT/gpu`` and keeps the log beside them
  (its arguments go to ``gpu_check``: ``bash .gpu/run.sh --preflight``).

Then one device call carries ``.gpu`` and runs ``bash .gpu/run.sh``; README's GPU section
gives it whole.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from xbackprop.cli import Parser, UsageError, run_command
from xbackprop.datasets import IDX_FILES, DataError, identify_dataset, load_split

#: Where it all goes; ``run.sh`` finds the repository one folder up.
FOLDER = Path(__file__).resolve().parents[1] / ".gpu"
#: What the GPU image lacks: xbackprop's pure-Python dependencies, and array-api-strict for its tests.
CARRIED = ("array-api-compat", "array-api-extra", "pooch", "platformdirs", "array-api-strict")
#: Seconds the proof may run there: the device tool stops a command at 600.
PROOF_SECONDS = 540

RUN_SH = """#!/usr/bin/env bash
# The GPU proof on a lent machine: the wheels installed aside, the preflight and the proof into $OUT/gpu.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
mkdir -p "$OUT/gpu"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/xbackprop-site \\
    "$here"/wheels/*.whl || exit 2
export PYTHONPATH="/tmp/xbackprop-site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu/nvidia-smi.txt"
timeout {seconds} python3 -m benchmarks.gpu_check --out "$OUT/gpu" --data-dir "$here/data/fashion-mnist" "$@" \\
    2>&1 | tee "$OUT/gpu/log.txt"
"""


def pip_download(names: list[str], folder: Path) -> None:
    """Wheels of ``names`` (``name==version``) for CPython 3.12 on x86-64 Linux, without their dependencies."""
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_17_x86_64",
               "--platform", "any", "-d", str(folder), *names]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        reason = (completed.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise UsageError(f"cannot download the wheels ({reason})")


def pinned() -> list[str]:
    """``name==version`` of each carried package as installed here."""
    found = []
    for name in CARRIED:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise UsageError(f"{name} is not installed here: pip install -e '.[test]' first") from None
    return found


def fashion_source(data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir
    root = os.environ.get("XBACKPROP_DATA")
    if not root:
        raise UsageError("--data-dir: give Fashion-MNIST's folder (or set XBACKPROP_DATA)")
    return Path(root) / "fashion-mnist"


def prepare(folder: Path, data_dir: Path, download: Callable[[list[str], Path], None] = pip_download) -> None:
    """Fill ``folder`` (see the module); the data is checked by reading it before it is copied."""
    if identify_dataset(data_dir) != "fashion-mnist":
        raise UsageError(f"--data-dir {data_dir}: does not hold Fashion-MNIST (its test labels' checksum differs)")
    try:
        load_split(data_dir, "train")
        load_split(data_dir, "test")
    except (DataError, OSError, ValueError) as exc:
        raise UsageError(f"--data-dir {data_dir}: {str(exc).splitlines()[0]}") from None
    files = [path for stems in IDX_FILES.values() for stem in stems
             for path in (data_dir / f"{stem}.gz", data_dir / stem) if path.is_file()]
    wheels, data = folder / "wheels", folder / "data" / "fashion-mnist"
    for made in (wheels, data):
        made.mkdir(parents=True, exist_ok=True)
    for old in wheels.glob("*.whl"):
        old.unlink()
    download(pinned(), wheels)
    for old in data.iterdir():
        old.unlink()
    for path in files:
        shutil.copyfile(path, data / path.name)
    (folder / "run.sh").write_text(RUN_SH.format(seconds=PROOF_SECONDS))


def main(argv: list[str] | None = None) -> int:
    parser = Parser("python -m benchmarks.prepare_gpu_run", __doc__.split("\n\n")[0],
                    examples=("python -m benchmarks.prepare_gpu_run --data-dir ../shared/data/fashion-mnist",))
    parser.add_argument("--data-dir", type=Path, help="Fashion-MNIST's four IDX files (default: "
                        "$XBACKPROP_DATA/fashion-mnist)")
    args = parser.parse_args(argv)
    prepare(FOLDER, fashion_source(args.data_dir))
    size = sum(path.stat().st_size for path in FOLDER.rglob("*") if path.is_file())
    print(f"{FOLDER}: {size / 2**20:.1f} MiB; carry .gpu and run: bash .gpu/run.sh")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main, "python -m benchmarks.prepare_gpu_run"))
