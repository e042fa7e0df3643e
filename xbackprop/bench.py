"""python -m xbackprop.bench: why backprop exists, in one table.

For each backend, net size and batch, times one backprop gradient, one forward
pass, the batched numerical gradient (K perturbed copies per forward pass) and the
book's element-by-element numerical gradient (2P forward passes),
all in float64, and prints a markdown table with the measured ratio and the ratio
predicted from the forward and backward times (``2P * forward / backprop``), and
the numerical gradient against its own floor (2P forward passes, timed next to
it). Writes a log-log plot of time against P and a JSON file named for the device.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import sys
from datetime import date
from pathlib import Path
from typing import Any

from .backend import BACKENDS, backend_name, describe_device, enable_float64, get_namespace
from .benchcases import BATCHES, SIZES, loop_is_timed, make_case
from .cli import Parser, UsageError, positive_int, run_command
from .files import plan_outputs, replace_atomically
from .gradient_check import max_relative_error
from .timing import back_to_back_seconds, machine_description, median_seconds, timed_runs


def measure(backend: str, size: str, batch: int, *, numerical_budget_s: float = 1.0, max_numerical_runs: int = 5,
            floor_calls: int = 2_000) -> dict[str, Any]:
    """One row of the table: the case's facts and its timings in seconds.

    The numerical gradient runs at least once and again while its runs total less than
    ``numerical_budget_s`` (at most ``max_numerical_runs``). Each run is followed by its
    floor, 2P forward passes, timed as ``min(2P, floor_calls)`` back-to-back passes
    scaled to 2P: measured next to each other, the two share whatever else the
    machine is doing, and ``numerical_floor_ratio`` is the median of their ratios.
    """
    case = make_case(size, batch, backend)
    row: dict[str, Any] = {"size": size, **case.info()}
    row["backprop_s"] = median_seconds(case.backprop)
    row["forward_s"] = median_seconds(case.forward)
    row["predicted_ratio"] = 2 * case.parameters * row["forward_s"] / row["backprop_s"]
    batched_times, batched = timed_runs(case.numerical_batched, budget_s=numerical_budget_s,
                                        max_runs=max_numerical_runs)
    row["batched_s"] = statistics.median(batched_times)
    row["batched_ratio"] = row["batched_s"] / row["backprop_s"]
    row["batched_max_rel_diff"] = max_relative_error(case.backprop(), batched)
    if not loop_is_timed(case.parameters, backend):
        row.update(numerical_s=None, measured_ratio=None, floor_s=None, numerical_floor_ratio=None,
                   loop_over_batched=None)
        return row
    calls = min(2 * case.parameters, floor_calls)
    floor_times: list[float] = []

    def time_the_floor() -> None:
        floor_times.append(2 * case.parameters * back_to_back_seconds(case.forward, calls) / calls)

    numerical_times, numerical = timed_runs(case.numerical, budget_s=numerical_budget_s,
                                            max_runs=max_numerical_runs, after_each=time_the_floor)
    row["numerical_s"] = statistics.median(numerical_times)
    row["measured_ratio"] = row["numerical_s"] / row["backprop_s"]
    row["floor_s"] = statistics.median(floor_times)
    row["numerical_floor_ratio"] = statistics.median(n / f for n, f in zip(numerical_times, floor_times))
    row["numerical_runs"] = len(numerical_times)
    row["max_rel_diff"] = max_relative_error(case.backprop(), numerical)
    row["loop_over_batched"] = row["numerical_s"] / row["batched_s"]
    return row


def _milliseconds(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:,.3f}" if seconds < 1 else f"{seconds * 1e3:,.0f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | size | P | batch | backprop ms | forward ms | numerical ms (loop) | loop / backprop "
        "| predicted | batched ms | batched / backprop | loop / batched | loop / its floor |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        measured = "—" if r["measured_ratio"] is None else f"{r['measured_ratio']:,.0f}×"
        floor = "—" if r["numerical_floor_ratio"] is None else f"{r['numerical_floor_ratio']:.2f}"
        speedup = "—" if r.get("loop_over_batched") is None else f"{r['loop_over_batched']:,.1f}×"
        lines.append(
            f"| {r['backend']} | {r['sizes']} | {r['P']:,} | {r['batch']} | {_milliseconds(r['backprop_s'])} | "
            f"{_milliseconds(r['forward_s'])} | {_milliseconds(r['numerical_s'])} | {measured} | {r['predicted_ratio']:,.0f}× | "
            f"{_milliseconds(r['batched_s'])} | {r['batched_ratio']:,.0f}× | {speedup} | {floor} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    for (backend, batch), marker in zip(sorted({(r["backend"], r["batch"]) for r in rows}), "osD^v<>p*h"):
        mine = sorted((r for r in rows if (r["backend"], r["batch"]) == (backend, batch)), key=lambda r: r["P"])
        ax.plot([r["P"] for r in mine], [r["backprop_s"] for r in mine], marker=marker, ls="-",
                label=f"backprop, {backend}, batch {batch}")
        timed = [r for r in mine if r["numerical_s"] is not None]
        ax.plot([r["P"] for r in timed], [r["numerical_s"] for r in timed], marker=marker, ls="--",
                label=f"numerical (loop), {backend}, batch {batch}")
        ax.plot([r["P"] for r in mine], [r["batched_s"] for r in mine], marker=marker, ls=":",
                label=f"numerical (batched), {backend}, batch {batch}")
    ax.set(xscale="log", yscale="log", xlabel="parameters P", ylabel="seconds per gradient",
           title="backprop against numerical differentiation")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="x-small")
    with replace_atomically(path) as temporary:
        fig.savefig(temporary, dpi=120, format="png")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


PROG = "python -m xbackprop.bench"
#: What ``--help`` ends with.
HELP_EXAMPLES = (
    "python -m xbackprop.bench                                   # sizes up to the book's, batches 3 and 100",
    "python -m xbackprop.bench --full                            # and the wide net too (minutes more)",
    "python -m xbackprop.bench --size tiny --batch 3 --backend torch",
    "python -m xbackprop.bench --out benchmarks/results          # also JSON and a log-log PNG",
)
#: The largest batch a case draws.
MAX_BATCH = 100_000


#: Sizes measured only with ``--full`` (or ``--size``): the default run stays within about three minutes.
FULL_ONLY = ("wide",)


def _bar(total: int) -> Any:
    """A tqdm bar over the cases with an estimate, on a terminal only (else ``None``)."""
    if not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="bench", unit="case", leave=False, dynamic_ncols=True)


def _device_label(backend: str) -> str:
    """The device part of the default file name: the GPU's name, or ``cpu-<N>cpu``."""
    device = describe_device(get_namespace(backend, strict=True))
    return device if device != "cpu" else f"cpu-{os.cpu_count()}cpu"


def main(argv: list[str] | None = None) -> int:
    """The command; every ending is one line and an exit status (see :mod:`xbackprop.cli`)."""
    return run_command(_bench, PROG, argv)


def _parser() -> Parser:
    parser = Parser(PROG, "Why backprop exists, in one table: backprop against the book's numerical gradient, per "
                    "net size and batch.", HELP_EXAMPLES)
    parser.add_argument("--backend", action="append", choices=BACKENDS,
                        help="backend to measure (repeatable; default: $XP or numpy)")
    parser.add_argument("--size", action="append", choices=list(SIZES), help="net size (repeatable; default all)")
    parser.add_argument("--batch", action="append", type=positive_int,
                        help="batch size (repeatable; default 3 and 100)")
    parser.add_argument("--out", metavar="DIR",
                        help="also write the rows as JSON and a log-log PNG into DIR (e.g. benchmarks/results)")
    parser.add_argument("--name", help="file name stem (default: derived from the device)")
    parser.add_argument("--full", action="store_true",
                        help=f"also the largest sizes ({', '.join(FULL_ONLY)}): minutes more")
    return parser


def _bench(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    backends = args.backend or [backend_name(get_namespace())]
    name = _output_name(args, backends)
    if any(batch > MAX_BATCH for batch in args.batch or ()):
        raise UsageError(f"--batch: at most {MAX_BATCH:,}")
    sizes = args.size or [size for size in SIZES if args.full or size not in FULL_ONLY]
    rows = _measured([(backend, size, batch) for backend in backends for size in sizes
                      for batch in args.batch or BATCHES])
    if not args.full and not args.size:
        print(f"(the {', '.join(FULL_ONLY)} size{'s' if len(FULL_ONLY) > 1 else ''} too: --full)", file=sys.stderr)
    device = describe_device(get_namespace(backends[-1], strict=True))
    machine = machine_description()
    print(f"# backprop vs numerical gradient — {date.today()}, {device}; {machine}\n")
    print(markdown_table(rows))
    if args.out is None:
        return 0
    out = Path(args.out)
    record = {"date": str(date.today()), "device": device, "machine": machine, "python": platform.python_version(),
              "command": "python -m xbackprop.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": rows}
    with replace_atomically(out / f"bench-{name}.json") as temporary:
        temporary.write_text(json.dumps(record, indent=1))
    try:
        plot(rows, out / f"bench-{name}.png")
    except ImportError:
        print("(no plot: matplotlib is not installed)", file=sys.stderr)
    print(f"\nwrote {out / f'bench-{name}.json'} and .png", file=sys.stderr)
    return 0


def _output_name(args: Any, backends: list[str]) -> str:
    """The stem of the files ``--out`` gets, with the folder made and both outputs planned before any work."""
    if args.out is not None:  # as every output folder: made if missing, in a folder that exists
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {args.out}: exists and is not a folder")
        if not out.parent.is_dir():
            raise UsageError(f"--out {args.out}: folder {out.parent} does not exist")
        try:
            out.mkdir(exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out {args.out}: cannot make the folder ({exc.strerror or exc})") from None
    if args.name is not None and (not args.name or Path(args.name).name != args.name or args.name in (".", "..")
                                  or not args.name.isprintable()):
        raise UsageError(f"--name {args.name!r}: give a plain file name stem, without folders or control characters")
    name = args.name or _slug(f"{'-'.join(backends)}-{_device_label(backends[0])}")
    if args.out is not None:
        plan_outputs({"--out (table)": Path(args.out) / f"bench-{name}.json",
                      "--out (figure)": Path(args.out) / f"bench-{name}.png"})
    return name


def _measured(cases: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
    """A row per ``(backend, size, batch)``, each announced as it is measured (on a bar on a terminal)."""
    rows = []
    bar = _bar(len(cases))
    for backend, size, batch in cases:
        enable_float64(get_namespace(backend, strict=True))  # the cases compute in float64
        row = measure(backend, size, batch)
        rows.append(row)
        line = (f"  {backend} {size} batch {batch}: backprop {_milliseconds(row['backprop_s'])} ms, "
                f"numerical {_milliseconds(row['numerical_s'])} ms")
        if bar is None:
            print(line, file=sys.stderr, flush=True)
        else:
            bar.write(line, file=sys.stderr)
            bar.update()
    if bar is not None:
        bar.close()
    return rows


if __name__ == "__main__":
    sys.exit(main())
