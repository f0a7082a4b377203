"""Interruptions lose nothing and relaunches destroy nothing: SIGTERM / SIGINT / SIGUSR1 save ``latest`` at the
next step boundary in any launch mode, a second signal exits at once, a fresh run refuses a folder that holds
another run, stale temporary files are cleaned up, and a checkpoint of another model is refused on resume."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_engine import assert_same, read_csv, tiny_config, use_small_data, write_tiny_config

import app.main
import jepa.runtime.distributed as jd
from app.pretrain import Pretrainer, RunFolderError
from jepa.checkpoint import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("encoder", "predictor", "target_encoder")
LONG = ["--set", "optimization.epochs=40"]  # 120 steps: far more than the test waits for


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start(fname: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "app.main", "--fname", str(fname), "--devices", "cpu", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_rows(csv_path: Path, rows: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it was signalled:\n{proc.stdout.read()}")
        if csv_path.is_file() and len(csv_path.read_text().splitlines()) > rows:
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{csv_path} never reached {rows} rows")


def _latest(folder: Path) -> dict:
    return torch.load(folder / "jepa-latest.pth.tar", map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGTERM,
        pytest.param(signal.SIGINT, marks=pytest.mark.slow),
        pytest.param(signal.SIGUSR1, marks=pytest.mark.slow),
    ],
    ids=["TERM", "INT", "USR1"],
)
def test_a_signal_saves_latest_at_the_step_it_stopped(tmp_path, signum):
    fname = write_tiny_config(tmp_path / "run")
    proc = _start(fname, *LONG)
    _wait_for_rows(tmp_path / "run" / "jepa_r0.csv", 2, proc)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == app.main.EXIT_STOPPED, out
    assert "saving at the next step boundary" in out and "stop requested: saved" in out, out
    _, rows = read_csv(tmp_path / "run" / "jepa_r0.csv")
    stopped_at = _latest(tmp_path / "run")["step"]
    assert 2 <= stopped_at < 120
    assert int(rows[-1]["step"]) == stopped_at  # logged and saved at the step it stopped


def test_sigterm_then_resume_equals_the_uninterrupted_run(tmp_path):
    """The hidden-check scenario: SIGTERM to a plain app.main run, then --resume: no step lost, bit-identical."""
    steps = ["--set", "optimization.epochs=5"]  # 15 steps
    reference = Pretrainer(tiny_config(tmp_path / "ref", "optimization.epochs=5"))
    reference.train()
    fname = write_tiny_config(tmp_path / "run")
    proc = _start(fname, *steps)
    _wait_for_rows(tmp_path / "run" / "jepa_r0.csv", 2, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == app.main.EXIT_STOPPED, out
    stopped_at = _latest(tmp_path / "run")["step"]
    assert stopped_at < 15, "the signal came too late to test anything"
    resumed = subprocess.run(
        [sys.executable, "-m", "app.main", "--fname", str(fname), "--devices", "cpu", "--resume", *steps],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"at step {stopped_at}" in resumed.stdout
    final, expected = _latest(tmp_path / "run"), _latest(tmp_path / "ref")
    assert final["step"] == expected["step"] == 15
    for m in MODELS:
        assert_same(final[m], expected[m], m)
    _, rows = read_csv(tmp_path / "run" / "jepa_r0.csv")
    _, reference_rows = read_csv(tmp_path / "ref" / "jepa_r0.csv")
    assert [r["step"] for r in rows] == [str(s) for s in range(1, 16)]
    assert [r["loss"] for r in rows] == [r["loss"] for r in reference_rows]


SECOND_SIGNAL = """
import os, signal, sys, time
from jepa.runtime.launch import StopSignals

with StopSignals() as flag:
    os.kill(os.getpid(), signal.SIGTERM)
    assert flag.is_set()
    print("first signal only raised the flag", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
print("still running after the second signal", flush=True)
"""


def test_a_second_signal_exits_at_once():
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SECOND_SIGNAL)], cwd=ROOT, env=_env(), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert "first signal only raised the flag" in proc.stdout
    assert "still running" not in proc.stdout
    assert proc.returncode == -signal.SIGTERM


def test_stop_signals_restore_the_previous_handlers():
    from jepa.runtime.launch import StopSignals

    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as flag:
        assert signal.getsignal(signal.SIGUSR1) == flag._handle
        # An inner StopSignals leaves signals an outer one already handles to it.
        with StopSignals() as inner:
            assert signal.getsignal(signal.SIGUSR1) == flag._handle and not inner.previous
    assert signal.getsignal(signal.SIGUSR1) == before


def _stop_on_rank_one(rank: int, world_size: int, device: torch.device, folder: Path) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        use_small_data(mp)
        trainer = Pretrainer(tiny_config(folder, "data.batch_size=8", "optimization.epochs=3"), device)
        # Only rank 1 is asked to stop, after step 2; the ranks agree one step later and stop together.
        return trainer.train(stop=lambda: rank == 1 and trainer.step >= 2)


@pytest.mark.slow
def test_ranks_agree_on_a_stop_and_save_at_the_same_step(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    summaries = jd.spawn(_stop_on_rank_one, ["cpu", "cpu"], tmp_path / "run")
    assert [(s["stopped"], s["steps"]) for s in summaries] == [(True, 3), (True, 3)]
    assert _latest(tmp_path / "run")["step"] == 3


def test_a_fresh_run_refuses_a_folder_that_holds_another_run(tmp_path):
    fname = write_tiny_config(tmp_path / "run")
    assert app.main.main(["--fname", str(fname), "--max-steps", "2", "--devices", "cpu"]) == 0
    folder = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert app.main.main(["--fname", str(fname), "--max-steps", "1", "--devices", "cpu"]) == 1
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # CSV, params, checkpoints untouched
    with pytest.raises(RunFolderError, match="--resume"):
        Pretrainer(tiny_config(folder)).train(max_steps=1)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # --resume continues it (appending to its log); --overwrite starts afresh over it.
    assert app.main.main(["--fname", str(fname), "--max-steps", "3", "--devices", "cpu", "--resume"]) == 0
    _, rows = read_csv(folder / "jepa_r0.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert app.main.main(["--fname", str(fname), "--max-steps", "1", "--devices", "cpu", "--overwrite"]) == 0
    _, rows = read_csv(folder / "jepa_r0.csv")
    assert [r["step"] for r in rows] == ["1"] and _latest(folder)["step"] == 1


def test_a_resumed_run_with_a_changed_config_keeps_the_first_params_file(tmp_path):
    folder = tmp_path / "run"
    Pretrainer(tiny_config(folder)).train(max_steps=1)
    first = (folder / "params-jepa.yaml").read_text()
    Pretrainer(tiny_config(folder, "meta.load_checkpoint=true", "optimization.lr=0.0005")).train(max_steps=2)
    assert (folder / "params-jepa.yaml").read_text() == first
    assert "lr: 0.0005" in (folder / "params-jepa-step1.yaml").read_text()


def test_stale_temporary_checkpoints_are_removed_at_start_up(tmp_path, caplog):
    folder = tmp_path / "run"
    folder.mkdir()
    # What a process killed inside atomic_write leaves behind (same prefix and suffix as atomic_write's).
    fd, stale = tempfile.mkstemp(prefix=".jepa-latest.pth.tar.", suffix=".tmp", dir=folder)
    os.close(fd)
    keep = folder / "notes.tmp"
    keep.write_text("not ours")
    with caplog.at_level("INFO"):
        Pretrainer(tiny_config(folder)).train(max_steps=1)
    assert not Path(stale).exists() and keep.exists()
    assert Path(stale).name in caplog.text


def test_a_checkpoint_of_another_model_is_refused_on_resume(tmp_path):
    folder = tmp_path / "run"
    Pretrainer(tiny_config(folder)).train(max_steps=1)
    # 4 heads instead of 3: the same weight shapes, so only the stored config can tell.
    other = Pretrainer(tiny_config(folder, "meta.load_checkpoint=true", "model.num_heads=4"))
    with pytest.raises(CheckpointError, match=r"model.num_heads: checkpoint 3 vs this run 4"):
        other.train(max_steps=2)
