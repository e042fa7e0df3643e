"""The one contract of all five commands, each run as a user runs it: in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from xbackprop.cli import Parser, Terminated, UsageError, one_line, run_command
from xbackprop.files import plan_outputs

COMMANDS = ("train", "predict", "graph", "gradcheck", "bench")


def command(name, *args, **kwargs):
    return subprocess.run([sys.executable, "-m", f"xbackprop.{name}", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


@pytest.mark.parametrize("name", COMMANDS)
def test_a_bad_flag_is_one_line_and_exit_2(name):
    completed = command(name, "--no-such-flag")
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and completed.stderr.startswith(f"python -m xbackprop.{name}: error: ")
    assert "usage:" not in completed.stderr and "Traceback" not in completed.stderr


@pytest.mark.parametrize("name", COMMANDS)
def test_help_ends_with_examples(name):
    completed = command(name, "--help")
    assert completed.returncode == 0
    tail = completed.stdout.rstrip().split("\n\nexamples:\n")
    assert len(tail) == 2 and all(line.startswith("  python -m xbackprop.") or line.startswith("  XP=")
                                  for line in tail[1].splitlines())


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("gradcheck", ["--batch", "1e11"], "--batch: must be an integer, got '1e11'"),
        ("gradcheck", ["--seed", "-1"], "--seed: must not be negative, got -1"),
        ("bench", ["--batch", "0"], "--batch: must be a positive integer, got 0"),
        ("bench", ["--name", "a/b"], "--name 'a/b': give a plain file name stem"),
        ("bench", ["--name", "a\nb"], "without folders or control characters"),
        ("train", ["--dataset", "digits", "--hidden", "100000,100000"], "--hidden, --batch-size: a 64-100000-100000-10"),
        ("bench", ["--out", "/proc", "--size", "tiny", "--batch", "3"], "/proc does not take new files"),
        ("train", ["--lr-sweep", "0.1,x"], "--lr-sweep: must be a number, got 'x'"),
        ("graph", ["apple", "--out", "/proc/x.svg"], "/proc does not take new files"),
        ("predict", ["--load", "/nonexistent/model.npz", "x.png"], "not a saved xbackprop network"),
    ],
)
def test_bad_values_name_their_flag_before_any_work(name, args, message):
    start = time.perf_counter()
    completed = command(name, *args)
    assert completed.returncode == 2 and completed.stderr.count("\n") == 1, completed.stderr
    assert message in completed.stderr
    assert time.perf_counter() - start < 30  # refused up front, not after measuring


def test_a_closed_pipe_is_quiet(tmp_path):
    """``... | head -1``: the reader goes away; no BrokenPipeError traceback. The reader is gone before the first
    line is written, so that very write meets the closed pipe (no run of training is needed to reach one)."""
    reader, writer = os.pipe()
    os.close(reader)
    child = subprocess.Popen([sys.executable, "-m", "xbackprop.train", "--dataset", "digits", "--iters", "1",
                              "--quiet"], stdout=writer, stderr=subprocess.PIPE)
    os.close(writer)
    stderr = child.communicate(timeout=120)[1].decode()
    assert child.returncode == 141 and stderr == ""


@pytest.mark.parametrize(("sent", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_termination_is_one_line_and_leaves_no_partial_files(tmp_path, sent, status):
    child = subprocess.Popen([sys.executable, "-m", "xbackprop.train", "--dataset", "digits", "--iters", "100000000",
                              "--quiet", "--save", str(tmp_path / "model.npz")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(sent, signal.SIG_DFL))
    child.stdout.readline()  # training has started
    time.sleep(0.5)
    child.send_signal(sent)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == status
    assert stderr == f"python -m xbackprop.train: terminated by {sent.name}\n"
    assert list(tmp_path.iterdir()) == []


def test_the_runner_maps_every_ending(capsys):
    def failing(exc):
        def main(argv):
            raise exc
        return main

    assert run_command(failing(UsageError("bad\nflag")), "prog") == 2
    assert capsys.readouterr().err == "prog: error: bad\\nflag\n"
    assert run_command(failing(KeyboardInterrupt()), "prog") == 130
    assert capsys.readouterr().err == "prog: interrupted\n"
    assert run_command(failing(Terminated(signal.SIGTERM)), "prog") == 143
    assert run_command(failing(FileNotFoundError(2, "No such file or directory", "x.npz")), "prog") == 2
    assert capsys.readouterr().err.endswith("prog: error: x.npz: No such file or directory\n")
    assert run_command(failing(MemoryError()), "prog") == 2
    assert capsys.readouterr().err == "prog: error: out of memory: try a smaller net, batch or --limit\n"

    def warns(argv):
        import warnings

        warnings.warn("careful\nnow", RuntimeWarning)
        return 0

    assert run_command(warns, "prog") == 0
    assert capsys.readouterr().err == "prog: warning: careful\\nnow\n"


def test_the_parser_speaks_the_users_words():
    parser = Parser("prog", "test", ["prog --n 3"])
    parser.add_argument("--n", type=int)
    with pytest.raises(UsageError, match=r"^--n: not a valid value: 'x'$"):
        parser.parse_args(["--n", "x"])
    assert one_line("a\nb\rc") == "a\\nb\\rc"


def test_outputs_are_planned_together(tmp_path):
    model, log = tmp_path / "m.npz", tmp_path / "log.json"
    model.write_bytes(b"")
    (tmp_path / "link.npz").symlink_to(model)
    with pytest.raises(ValueError, match="--save and --json name the same file"):
        plan_outputs({"--save": log, "--json": log})
    with pytest.raises(ValueError, match=r"--json .*link.npz would overwrite --load's file"):
        plan_outputs({"--json": tmp_path / "link.npz"}, [("--load", model)])
    assert plan_outputs({"--save": model}, [("--load", model)], updates=[("--save", "--load")])
    with pytest.raises(ValueError, match="does not exist"):
        plan_outputs({"--json": tmp_path / "no" / "x.json"})
    assert sorted(tmp_path.iterdir()) == sorted([model, tmp_path / "link.npz"])  # the trial files are gone


def test_a_device_that_holds_no_data_is_a_user_error():
    pytest.importorskip("torch", reason="needs PyTorch: pip install torch==2.13.0 (the CPU build)")
    completed = command("train", "--dataset", "digits", "--backend", "torch", "--device", "meta", "--iters", "1")
    assert completed.returncode == 2 and completed.stderr.count("\n") == 1
    assert "--device meta: device 'meta' cannot be used with torch" in completed.stderr


@pytest.mark.parametrize(("args", "env", "named"), [
    (("train", "--data-dir", "{data}", "--iters", "1", "--report", ""), {}, "--report: give a folder name"),
    (("predict", "--load", "m.npz", "{data}/t10k-images-idx3-ubyte.gz", "{data}/t10k-labels-idx1-ubyte.gz",
      "--report", ""), {}, "--report: give a folder name"),
    (("train", "--data-dir", "{data}", "--iters", "1"), {"XBACKPROP_CAPTURE": "bogus"}, "XBACKPROP_CAPTURE='bogus'"),
    (("train", "--data-dir", "{data}", "--iters", "1", "--weight-init-std", "1e308"), {}, "--weight-init-std 1e+308"),
])
def test_small_mistakes_end_in_one_line_naming_their_flag(synthetic_dir, tmp_path, args, env, named):
    args = [arg.format(data=synthetic_dir) for arg in args]
    completed = command(*args, cwd=tmp_path, env={**os.environ, **env})
    assert completed.returncode == 2 and completed.stderr.count("\n") == 1, completed.stderr
    assert named in completed.stderr and "Traceback" not in completed.stderr


def test_a_loaded_net_reported_without_training(synthetic_dir, tmp_path):
    assert command("train", "--data-dir", str(synthetic_dir), "--iters", "10", "--quiet", "--save", "m.npz",
                   cwd=tmp_path).returncode == 0
    completed = command("train", "--data-dir", str(synthetic_dir), "--iters", "0", "--load", "m.npz", "--report",
                        "rep", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["confusion.png", "curves.png", "mistakes.png",
                                                                     "summary.md"]
    assert "after 0 iterations (nothing trained)" in completed.stdout and "per iteration" not in completed.stdout


@pytest.mark.parametrize(("signum", "status", "said"), [(signal.SIGTERM, 143, "terminated by SIGTERM"),
                                                        (signal.SIGINT, 130, "interrupted"),
                                                        (signal.SIGHUP, 129, "terminated by SIGHUP")])
def test_a_signal_while_a_command_is_still_importing_ends_it_in_one_line(signum, status, said):
    """As ``python -m xbackprop.train`` would be, before the command's own handling is in place."""
    code = ("import os, signal, sys, time; sys.orig_argv[:] = [sys.executable, '-m', 'xbackprop.train']; "
            f"import xbackprop._startup; os.kill(os.getpid(), {int(signum)}); time.sleep(10); print('lived on')")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == status and completed.stdout == ""
    assert completed.stderr == f"python -m xbackprop.train: {said}\n"


def test_outside_a_command_importing_xbackprop_changes_no_signal_handler():
    code = ("import signal; before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]; "
            "import xbackprop; "
            "assert before == [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.parametrize("seen", [True, False], ids=["callback-seen", "callback-unseen"])
def test_a_signal_that_lands_in_a_garbage_collection_callback_still_ends_the_command(monkeypatch, seen):
    """JAX runs Python in a GC callback, where an exception raised by a signal handler is printed and dropped;
    the command must end all the same, promptly, in one line: deferred when the callback is seen on the stack,
    raised again when Python reports it dropped."""
    import gc

    import xbackprop.cli

    if not seen:
        monkeypatch.setattr(xbackprop.cli, "_unsafe_to_raise", lambda frame: False)

    finished = []

    def callback(phase, info):
        if phase == "start" and not finished:
            finished.append("signalled")
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # the handler runs here, inside the callback

    def main(argv):
        gc.callbacks.append(callback)
        try:
            gc.collect()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                sum(range(100))
            finished.append("trained to the end")
        finally:
            gc.callbacks.remove(callback)
        return 0

    started = time.monotonic()
    assert run_command(main, "prog") == 143
    assert finished == ["signalled"] and time.monotonic() - started < 2


def test_a_termination_that_breaks_an_import_is_reported_as_the_termination(capsys):
    def main(argv):
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            sum(range(1000))
        except BaseException:  # as an extension module's initialisation, cut short, reports it
            raise ImportError("initialization of _c_internal_utils raised unreported exception") from None
        return 0

    assert run_command(main, "prog") == 129
    assert capsys.readouterr().err == "prog: terminated by SIGHUP\n"


def test_a_signal_during_an_import_is_raised_once_the_import_is_done(tmp_path, monkeypatch):
    """An exception raised by a signal handler in the middle of an extension module's initialisation can crash
    the process (jaxlib's did): the ending waits until the import is over."""
    (tmp_path / "slow_module.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\n"
                                             "time.sleep(0.2)\nimported = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []

    def main(argv):
        import slow_module

        seen.append(slow_module.imported)
        time.sleep(5)
        return 0

    assert run_command(main, "prog") == 143
    assert seen == [True]  # the import ran to its end; the termination came after it
