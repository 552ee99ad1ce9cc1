"""Accidents and hostile files beyond one bad argument: symlinks planted where scorefield writes, two
writers at once, a full disk, checkpoints and tables that lie about their sizes or structure, resumed
and repeated runs that must write what an uninterrupted one writes, bit for bit."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import TINY

from scorefield import files
from scorefield.cli import main
from scorefield.cli.io import write_array
from scorefield.datasets import tables
from scorefield.files import TEMP_PREFIX, atomic_output, atomic_write
from scorefield.run.checkpoint import (
    CheckpointError,
    checkpoint_dir,
    latest_good,
    load_checkpoint,
    save_checkpoint,
)
from scorefield.run.finished import load_run


def sets(*overrides: str) -> list[str]:
    return [arg for item in [*TINY, *overrides] for arg in ("--set", item)]


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("scorefield: error: "), err
    assert message in lines[0], lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", *sets(), "--out", str(run), "--quiet"]) == 0
    return run


# --------------------------------------------------------------------------------------------------
# temporary files


def _writers(folder: Path):
    """Every kind of writer, each writing ``folder / name``."""
    from scorefield.viz import image_grid

    images = torch.rand(4, 1, 8, 8)
    return {
        "data.bin": lambda path: atomic_write(path, b"new"),
        "data.txt": lambda path: atomic_write(path, lambda tmp: tmp.write_text("new")),
        "rows.csv": lambda path: write_array(path, np.ones((3, 2))),
        "grid.png": lambda path: image_grid(images, nrow=2, path=path),
        "checkpoints": lambda path: save_checkpoint(path.parent, 1, {"x": torch.ones(2)}),
    }


def test_a_symlink_planted_at_a_predictable_temporary_name_is_not_followed(tmp_path):
    """Before mkstemp, writers wrote ``.NAME.tmp-PID`` with a plain open(): a symlink planted there sent
    the bytes to any file the user can write. Plant one at every name a writer could have predicted."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for name, write in _writers(tmp_path).items():
        target = tmp_path / name
        stems = [target, checkpoint_dir(tmp_path) / "step-0000001.safetensors"]
        for stem in stems:
            for guess in (f".{stem.name}.tmp-{os.getpid()}", f"{stem.name}.tmp", f".{stem.name}.tmp"):
                link = stem.parent / guess
                if stem.parent.is_dir() and not link.is_symlink():
                    link.symlink_to(victim)
        write(target)
        assert victim.read_text() == "precious", name
    assert load_checkpoint(checkpoint_dir(tmp_path) / "step-0000001.json").state["x"].tolist() == [1, 1]


def test_temporary_names_are_unpredictable_and_left_nowhere(tmp_path, monkeypatch):
    names = []
    for _ in range(3):
        with atomic_output(tmp_path / "a.npy") as tmp:
            names.append(tmp.name)
            tmp.write_bytes(b"x")
    assert len(set(names)) == 3 and all(n.startswith(TEMP_PREFIX) and n.endswith(".npy") for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_two_threads_saving_one_path_both_complete_and_leave_a_whole_file(tmp_path):
    target = tmp_path / "same.bin"
    payloads = [bytes([i]) * 200_000 for i in (1, 2)]
    errors: list[BaseException] = []

    def save(payload: bytes) -> None:
        try:
            for _ in range(40):
                atomic_write(target, payload)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors.append(error)

    threads = [threading.Thread(target=save, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["same.bin"]


def test_figures_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A figure whose writing fails (here: at the final rename) leaves the earlier file as it was, and no
    temporary: the viz figures and grids go through files.atomic_output like every other writer."""
    from matplotlib.figure import Figure

    from scorefield.demo.document import Page
    from scorefield.sde import VPSDE
    from scorefield.viz import image_grid, reverse_sde_animation

    def fail(*args):
        raise OSError("the disk went away")

    figure = Figure()
    figure.add_subplot().plot([0, 1], [0, 1])
    page = Page(tmp_path, {"f": figure})

    def animation(path):
        sde = VPSDE()
        reverse_sde_animation(lambda x, t: -x, sde, torch.randn(16, 2), path, n_steps=4, t_end=1e-3)

    writers = {
        "grid.png": lambda path: image_grid(torch.rand(4, 1, 8, 8), nrow=2, path=path),
        "f.png": lambda path: page.figure("f", "caption", "alt"),
        "walk.gif": animation,
    }
    for name, write in writers.items():
        path = tmp_path / name
        path.write_bytes(b"old")
        with monkeypatch.context() as patch:
            patch.setattr(files.os, "replace", fail)
            with pytest.raises(OSError, match="went away"):
                write(path)
        assert path.read_bytes() == b"old", name
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
        write(path)
        assert path.read_bytes() != b"old"


# --------------------------------------------------------------------------------------------------
# one writer per run directory


def _locked(folder: Path) -> bool:
    """Whether another process holds the folder's lock (taking it for an instant if not)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_second_writer_of_a_run_is_refused_in_one_line(capsys, tmp_path):
    """Two processes: one trains (long), the other tries --resume, --force and tune on the same folder;
    each is refused with exit 2, and the first process's run goes on and stops cleanly on SIGTERM."""
    run = tmp_path / "run"
    args = ["train", *sets("train.steps=1000000", "train.ckpt_every=1000000"), "--out", str(run), "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "scorefield", *args], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((run / "config.toml").exists() and _locked(run)):
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first writer never took the lock"
            time.sleep(0.2)
        before = sorted(p.name for p in run.iterdir())
        for extra in (["--resume"], ["--force"]):
            code, _, err = cli(capsys, *args, *extra)
            one_error_line(code, err, f"run directory {run} is being written by another process")
        assert sorted(p.name for p in run.iterdir()) == before
        assert first.poll() is None
    finally:
        first.terminate()
        first.wait(60)
    assert first.returncode == 128 + 15, first.stderr.read()
    assert latest_good(run) is not None


def test_tune_takes_the_run_lock(capsys, run):
    fd = os.open(run, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a train of the run holds it (another open file description)
    try:
        code, _, err = cli(capsys, "tune", "--run", run, "--nfe", 4, "--n", 8, "--iterations", 1)
    finally:
        os.close(fd)
    one_error_line(code, err, "is being written by another process")
    assert not (run / "grids.json").exists()


# --------------------------------------------------------------------------------------------------
# a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 96 KiB tmpfs: room for config, metrics and about three checkpoints of the tiny model."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip() or 'not root'})")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_stops_training_and_sampling_in_one_line(capsys, small_disk, run):
    code, _, err = cli(
        capsys, "train", *sets("train.steps=60", "train.ckpt_every=5", "train.keep_last=6"), "--out",
        small_disk / "run", "--quiet",
    )  # fmt: skip
    one_error_line(code, err, "training needs room for train.keep_last + 1 = 7 checkpoints of about")
    assert not [p for p in small_disk.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(bytes(max(free - 1024, 0)))
    code, _, err = cli(capsys, "sample", "--run", run, "--n", 2000, "--sampler", "em", "--steps", 2,
                       "--quiet", "--out", small_disk / "s.csv")  # fmt: skip
    one_error_line(code, err, "no room left to write")
    assert not (small_disk / "s.csv").exists()


# --------------------------------------------------------------------------------------------------
# checkpoints that lie


def _copy(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


def test_a_malformed_newest_sidecar_falls_back_to_an_older_checkpoint(capsys, run, tmp_path):
    """Sidecars that parse but have the wrong structure are CheckpointErrors, so the documented fallback
    to the newest checkpoint that verifies works (before: KeyError, TypeError, ValueError)."""
    newest = checkpoint_dir(run) / "step-0000020.json"
    breakages = {
        "int keys not pairs": lambda s: s["state"]["optimizer"].update(state={"__int_keys__": [1, 2]}),
        "tensor reference not a name": lambda s: s["state"]["model"].update(bad={"__tensor__": [1]}),
        "step a string": lambda s: s.update(step="20"),
        "meta a list": lambda s: s.update(meta=[]),
        "a state entry missing": lambda s: s["state"].pop("scaler"),
        "config invalid": lambda s: s["meta"]["config"]["train"].update(steps=-1),
        "columns not names": lambda s: s["meta"].update(columns=[1, 2]),
    }
    for name, breakage in breakages.items():
        copy = _copy(run, tmp_path / name.replace(" ", "_"))
        path = checkpoint_dir(copy) / newest.name
        sidecar = json.loads(path.read_text())
        breakage(sidecar)
        path.write_text(json.dumps(sidecar))
        with pytest.warns(UserWarning, match="skipping checkpoint of step 20"):
            assert load_run(copy).step == 10, name


def test_a_weights_file_larger_than_recorded_is_refused_before_it_is_read(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, {"x": torch.ones(4)})
    weights = checkpoint_dir(tmp_path) / "step-0000001.safetensors"
    os.truncate(weights, 5 * 2**30)  # 5 GiB, sparse: nothing is written, but stat() says so
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read {self}"))
    with pytest.raises(
        CheckpointError, match="is corrupt: it holds 5368709120 bytes, step-0000001.json records"
    ):
        load_checkpoint(weights)


def test_a_cut_last_metrics_line_and_orphaned_temporaries_do_not_block_resume(capsys, run, tmp_path):
    copy = _copy(run, tmp_path / "crashed")
    metrics = copy / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines) + '\n{"step": 25, "lo')  # what a crash mid-line leaves
    orphans = [copy / f"{TEMP_PREFIX}abc.toml", checkpoint_dir(copy) / f"{TEMP_PREFIX}xyz.safetensors"]
    for orphan in orphans:
        orphan.write_bytes(b"half")
    code, out, err = cli(capsys, "train", "--out", copy, "--resume", "--set", "train.steps=30", "--quiet")
    assert code == 0 and "to step 30" in out, err
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [5, 10, 15, 20, 25, 30]
    assert not any(orphan.exists() for orphan in orphans)


# --------------------------------------------------------------------------------------------------
# identical runs, resumed runs


def _config_args(*extra: str) -> list[str]:
    return [*sets("train.steps=20", "train.ckpt_every=3", "train.log_every=5", "train.keep_last=10", *extra)]


def test_two_identical_runs_write_byte_identical_checkpoints(capsys, tmp_path):
    for name in ("a", "b"):
        torch.rand(7)  # the process's global generator moves between the runs
        assert cli(capsys, "train", *_config_args(), "--out", tmp_path / name, "--quiet")[0] == 0
    a, b = (sorted(checkpoint_dir(tmp_path / n).iterdir()) for n in ("a", "b"))
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 14
    for left, right in zip(a, b, strict=True):
        assert left.read_bytes() == right.read_bytes(), left.name


def test_a_resumed_run_writes_the_metrics_an_uninterrupted_one_writes(capsys, tmp_path):
    """Killed after the checkpoint of step 12 (the next ones never written), then resumed: the line of
    step 15 averages steps 11-15, two of them from before the kill, as the uninterrupted run's does."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    for out in (whole, cut):
        assert cli(capsys, "train", *_config_args(), "--out", out, "--quiet")[0] == 0
    for step in (15, 18, 20):
        for suffix in (".json", ".safetensors"):
            (checkpoint_dir(cut) / f"step-{step:07d}{suffix}").unlink()
    assert cli(capsys, "train", *_config_args(), "--out", cut, "--resume", "--quiet")[0] == 0

    def lines(run):
        return [{k: v for k, v in json.loads(line).items() if k != "steps_per_s"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]  # fmt: skip

    assert lines(cut) == lines(whole)
    for step in (15, 18, 20):
        name = f"step-{step:07d}.safetensors"
        assert (checkpoint_dir(cut) / name).read_bytes() == (checkpoint_dir(whole) / name).read_bytes()


# --------------------------------------------------------------------------------------------------
# tables


def test_a_csv_with_a_byte_order_mark_keeps_its_first_row_and_says_what_it_read(capsys, tmp_path):
    rows = np.random.default_rng(1).normal(size=(64, 2))
    body = "\n".join(f"{a!r},{b!r}" for a, b in rows.tolist()) + "\n"
    (tmp_path / "bare.csv").write_bytes(b"\xef\xbb\xbf" + body.encode())  # as Excel saves it
    (tmp_path / "named.csv").write_bytes(b"\xef\xbb\xbferuptions,waiting\n" + body.encode())
    x, names = tables.read_table(tmp_path / "bare.csv")
    assert names is None and x.shape == (64, 2) and float(x[0, 0]) == np.float32(rows[0, 0])
    assert tables.read_table(tmp_path / "named.csv")[1] == ("eruptions", "waiting")
    code, out, err = cli(capsys, "train", *sets(f"data.path={tmp_path / 'named.csv'}"), "--out",
                         tmp_path / "run", "--quiet")  # fmt: skip
    assert code == 0 and "on 64 rows of" in out and "(header: eruptions, waiting)" in out, err
    code, out, err = cli(capsys, "likelihood", "--run", tmp_path / "run", "--data", tmp_path / "bare.csv")
    assert code == 0 and "over 64 rows of" in out and "(no header line)" in out, err


def test_a_header_of_numbers_is_a_header_when_the_user_says_so(tmp_path):
    (tmp_path / "years.csv").write_text("2019,2020\n1.5,2\n3,4\n")
    x, names = tables.read_table(tmp_path / "years.csv")
    assert names is None and x.shape == (3, 2)  # guessed: all numbers, so data
    x, names = tables.read_table(tmp_path / "years.csv", header=True)
    assert names == ("2019", "2020") and x.tolist() == [[1.5, 2.0], [3.0, 4.0]]


def test_a_csv_over_the_size_limit_is_refused_before_it_is_read(capsys, tmp_path, monkeypatch):
    (tmp_path / "big.csv").write_text("a,b\n" + "1,2\n" * 100)
    monkeypatch.setattr(tables, "MAX_CSV_BYTES", 256)
    monkeypatch.setattr(tables.csv, "reader", lambda *a, **k: pytest.fail("read"))
    code, _, err = cli(capsys, "train", *sets(f"data.path={tmp_path / 'big.csv'}"), "--out", tmp_path / "r")
    one_error_line(code, err, "more than the 0 MiB a CSV may hold; save the table as .npy")
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------------------
# inpaint, threads


def test_inpaint_returns_the_observed_cells_exactly(capsys, run, tmp_path):
    (tmp_path / "rows.csv").write_text("x0,x1\n30.2,0.1\n-1.7,0.3\n")
    (tmp_path / "mask.csv").write_text("x0,x1\n1,0\n")
    code, _, err = cli(capsys, "inpaint", "--run", run, "--data", tmp_path / "rows.csv", "--mask",
                       tmp_path / "mask.csv", "--nfe", 4, "--particles", 2, "--quiet", "--out",
                       tmp_path / "filled.csv")  # fmt: skip
    assert code == 0, err
    cells = [line.split(",")[0] for line in (tmp_path / "filled.csv").read_text().splitlines()[1:]]
    assert cells == ["30.2", "-1.7"]


def test_threads_come_from_the_flag_else_omp_num_threads(capsys, run, tmp_path, monkeypatch):
    before = torch.get_num_threads()
    try:
        args = ["sample", "--run", run, "--n", 2, "--sampler", "em", "--steps", 2, "--quiet"]
        assert cli(capsys, *args, "--threads", 1, "--out", tmp_path / "a.npy")[0] == 0
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert cli(capsys, *args, "--out", tmp_path / "b.npy")[0] == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
