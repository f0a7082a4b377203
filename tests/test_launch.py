"""Slurm launches through submitit (jepa.runtime.launch, app.main_distributed): the executor parameters a real
cluster gets, config snapshots and job arrays, and preemption: the run saves at the step it was signalled and the
requeued job resumes from there. No cluster is reachable here: sbatch files are rendered, not submitted, and jobs run
in this process or through submitit's local executor."""

import contextlib
import os
import signal
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import submitit
import torch
import yaml
from test_engine import assert_same, read_csv, tiny_config, write_tiny_config

import app.main_distributed
from app.pretrain import Pretrainer
from jepa.runtime.launch import EXIT_STOPPED, Job, LaunchError, executor_parameters, make_executor, read_config_list

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("encoder", "predictor", "target_encoder")
CLUSTER_ARGS = [
    "--partition", "gpu-long", "--time", "4300", "--account", "vision", "--qos", "high", "--exclude", "node[01-02]",
    "--nodes", "2", "--tasks-per-node", "8", "--cpus-per-task", "10", "--mem-per-gpu", "55G",
]  # fmt: skip


@pytest.fixture
def restore_environ():
    """Jobs export torch.distributed variables into os.environ; put it back afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def fake_slurm(monkeypatch):
    """Let submitit build a Slurm executor without `srun` on the PATH (nothing is submitted)."""
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))


def launch_args(fname: Path, folder: Path, *extra: str):
    return app.main_distributed.parse_args(["--fname", str(fname), "--folder", str(folder), *extra])


def test_the_executor_gets_what_a_slurm_cluster_needs(tmp_path, fake_slurm):
    args = launch_args(write_tiny_config(tmp_path / "run"), tmp_path / "jobs", *CLUSTER_ARGS, "--max-requeues", "7")
    assert executor_parameters(args, 2, 8, "vitl") == {
        "name": "vitl", "timeout_min": 4300, "nodes": 2, "tasks_per_node": 8, "gpus_per_node": 8,
        "cpus_per_task": 10, "slurm_partition": "gpu-long", "slurm_account": "vision", "slurm_qos": "high",
        "slurm_exclude": "node[01-02]", "slurm_mem_per_gpu": "55G", "slurm_signal_delay_s": 120,
    }  # fmt: skip
    executor = make_executor(args, 2, 8, "vitl")
    slurm = executor._executor
    assert isinstance(slurm, submitit.SlurmExecutor) and slurm.max_num_timeout == 7
    expected = {
        "job_name": "vitl", "time": 4300, "nodes": 2, "ntasks_per_node": 8, "gpus_per_node": 8, "cpus_per_task": 10,
        "partition": "gpu-long", "account": "vision", "qos": "high", "exclude": "node[01-02]", "mem_per_gpu": "55G",
        "signal_delay_s": 120,
    }  # fmt: skip
    assert {k: slurm.parameters.get(k) for k in expected} == expected
    sbatch = slurm._make_submission_file_text("python -m submitit.core._submit folder", "uid")
    for line in [
        "#SBATCH --partition=gpu-long", "#SBATCH --time=4300", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8", "#SBATCH --cpus-per-task=10", "#SBATCH --mem-per-gpu=55G",
        "#SBATCH --account=vision", "#SBATCH --qos=high", "#SBATCH --exclude='node[01-02]'",
        "#SBATCH --signal=USR2@120", f"#SBATCH --output={tmp_path / 'jobs'}/%j/%j_0_log.out",
    ]:  # fmt: skip
        assert line in sbatch.splitlines(), line


def test_nothing_cluster_specific_is_assumed(tmp_path, fake_slurm):
    args = launch_args(write_tiny_config(tmp_path / "run"), tmp_path / "jobs", "--partition", "p", "--time", "60")
    sbatch = make_executor(args, 1, 1, "run")._executor._make_submission_file_text("cmd", "uid")
    for option in ("--account", "--qos", "--exclude", "--mem", "--mem-per-gpu", "--constraint"):
        assert not any(line.startswith(f"#SBATCH {option}=") for line in sbatch.splitlines()), option


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mem", "400G", "--mem-per-gpu", "50G"], "--mem and --mem-per-gpu are exclusive"),
        (["--signal-delay-s", "600"], "--signal-delay-s 600 must be shorter than --time 10 minutes"),
    ],
    ids=["mem-twice", "signal-after-end"],
)
def test_contradictory_options_are_refused(tmp_path, extra, message):
    fname = write_tiny_config(tmp_path / "run")
    args = launch_args(fname, tmp_path / "jobs", "--partition", "p", "--time", "10", *extra)
    with pytest.raises(LaunchError, match=message):
        executor_parameters(args, 1, 1, "run")


def test_partition_and_time_are_required(tmp_path, capsys):
    with pytest.raises(SystemExit):
        launch_args(write_tiny_config(tmp_path / "run"), tmp_path / "jobs", "--time", "10")
    assert "--partition" in capsys.readouterr().err


class RecordingExecutor:
    """Stands in for submitit's executor: records what would be submitted, singly or as a job array."""

    def __init__(self, layout: tuple[int, int]) -> None:
        self.layout = layout
        self.submitted: list[Job] = []
        self.arrays: list[list[Job]] = []
        self._array: list[Job] | None = None

    def submit(self, job: Job) -> SimpleNamespace:
        (self._array if self._array is not None else self.submitted).append(job)
        return SimpleNamespace(job_id="recorded")

    @contextlib.contextmanager
    def batch(self):
        self._array = []
        yield
        self.arrays.append(self._array)
        self._array = None


@pytest.fixture
def recorded(monkeypatch):
    executors: dict[tuple[int, int], RecordingExecutor] = {}

    def make(args, nodes, tasks_per_node, name, *, cpus_per_task=None, mem_per_gpu=None):
        executors[nodes, tasks_per_node] = RecordingExecutor((nodes, tasks_per_node))
        executors[nodes, tasks_per_node].resources = (cpus_per_task, mem_per_gpu)
        return executors[nodes, tasks_per_node]

    monkeypatch.setattr("jepa.runtime.launch.make_executor", make)
    return executors


def write_config(path: Path, nodes: int, tasks: int, lr: float = 1e-3) -> Path:
    raw = yaml.safe_load(write_tiny_config(path.with_suffix("")).read_text())
    raw.update(nodes=nodes, tasks_per_node=tasks)
    raw["optimization"]["lr"] = lr
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_launch_snapshots_the_resolved_config_and_takes_the_layout_from_the_yaml(tmp_path, recorded):
    fname = write_config(tmp_path / "a.yaml", nodes=4, tasks=8)
    jobs = app.main_distributed.submit(
        ["--fname", str(fname), "--folder", str(tmp_path / "jobs"), "--partition", "p", "--time", "60",
         "--set", "optimization.lr=2e-3"]  # fmt: skip
    )
    assert len(jobs) == 1 and list(recorded) == [(4, 8)]
    [job] = recorded[4, 8].submitted
    assert job.entry == "app.main:main" and job.stop_aware and job.requeues == 0
    assert job.argv[0] == "--fname" and len(job.argv) == 2
    snapshot = Path(job.argv[1])
    assert snapshot.parent == (tmp_path / "jobs" / "configs").resolve() and snapshot.name.startswith("a-")
    resolved = yaml.safe_load(snapshot.read_text())
    assert resolved["optimization"]["lr"] == 2e-3 and (resolved["nodes"], resolved["tasks_per_node"]) == (4, 8)
    fname.write_text("changed: after submission")  # the job reads its snapshot, not this file
    assert yaml.safe_load(snapshot.read_text())["optimization"]["lr"] == 2e-3


def test_command_line_layout_overrides_the_yaml(tmp_path, recorded):
    fname = write_config(tmp_path / "a.yaml", nodes=4, tasks=8)
    app.main_distributed.submit(["--fname", str(fname), "--folder", str(tmp_path / "jobs"), "--partition", "p",
                                 "--time", "60", "--nodes", "1", "--tasks-per-node", "2"])  # fmt: skip
    assert list(recorded) == [(1, 2)]


@pytest.mark.parametrize("style", ["yaml-list", "lines"])
def test_batch_launch_submits_job_arrays(tmp_path, recorded, style):
    a = write_config(tmp_path / "a.yaml", 2, 8, lr=1e-3)
    b = write_config(tmp_path / "b.yaml", 2, 8, lr=2e-3)
    c = write_config(tmp_path / "c.yaml", 1, 4)
    listing = tmp_path / "list.txt"
    names = [str(a), str(b), str(c)]
    listing.write_text(yaml.safe_dump(names) if style == "yaml-list" else "# sweep\n" + "\n\n".join(names) + "\n")
    jobs = app.main_distributed.submit(["--fname", str(listing), "--folder", str(tmp_path / "jobs"), "--partition",
                                        "p", "--time", "60", "--batch-launch"])  # fmt: skip
    assert len(jobs) == 3
    [array] = recorded[2, 8].arrays  # same layout: one array of two jobs
    assert [yaml.safe_load(Path(j.argv[1]).read_text())["optimization"]["lr"] for j in array] == [1e-3, 2e-3]
    assert recorded[1, 4].submitted and not recorded[1, 4].arrays


def test_batch_launch_names_missing_configs(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{write_tiny_config(tmp_path / 'a')}\n{tmp_path / 'nope.yaml'}\n")
    with pytest.raises(LaunchError, match="nope.yaml"):
        read_config_list(listing)


def test_an_invalid_config_is_reported_before_anything_is_written(tmp_path, capsys, recorded):
    fname = write_config(tmp_path / "a.yaml", 1, 1)
    fname.write_text(fname.read_text().replace("optimization:", "optimisation:"))
    status = app.main_distributed.main(
        ["--fname", str(fname), "--folder", str(tmp_path / "jobs"), "--partition", "p", "--time", "60"]
    )
    assert status == 1 and "optimisation" in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists() and not recorded


def test_checkpoint_requeues_the_job_with_resume_a_bounded_number_of_times():
    job = Job("app.main:main", ["--fname", "f.yaml"], stop_aware=True, max_requeues=2)
    assert job.task_argv == ["--fname", "f.yaml"]
    first = job.checkpoint()
    assert isinstance(first, submitit.helpers.DelayedSubmission)
    assert first.function.requeues == 1 and first.function.task_argv == ["--fname", "f.yaml", "--resume"]
    assert (first.args, first.kwargs) == ((), {})
    second = first.function.checkpoint()
    assert second.function.requeues == 2 and second.function.checkpoint() is None  # bound reached: no requeue


@pytest.fixture
def submitit_task(restore_environ, monkeypatch):
    """This process as a one-task submitit job (the environment submitit's debug executor gives a task)."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "debug")
    monkeypatch.setenv("SUBMITIT_DEBUG_JOB_ID", "test")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(name, None)


def test_a_job_task_runs_the_entry_point_in_the_submitit_environment(tmp_path, submitit_task):
    fname = write_tiny_config(tmp_path / "run")
    assert Job("app.main:main", ["--fname", str(fname), "--max-steps", "2"], stop_aware=True)() == 0
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("0", "1")  # exported from submitit's job environment
    latest = torch.load(tmp_path / "run" / "jepa-latest.pth.tar", map_location="cpu", weights_only=True)
    assert latest["step"] == 2


def test_a_failing_entry_point_fails_the_job(tmp_path, submitit_task):
    with pytest.raises(RuntimeError, match="exited with status 1"):
        Job("app.main:main", ["--fname", str(tmp_path / "missing.yaml")])()


STEPS, SIGNALLED_AT = 6, 4  # the tiny run: 2 epochs of 3 steps, logging every step; preempted during step 4


def signal_at_step(step: int):
    """Pretrainer.train_step that sends this process the preemption signal once ``step`` is done, as Slurm does
    before a time limit."""
    original = Pretrainer.train_step

    def train_step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.step == step:
            os.kill(os.getpid(), signal.SIGUSR2)
        return out

    return train_step


def test_preemption_saves_at_the_signalled_step_and_the_requeued_job_resumes(tmp_path, submitit_task, monkeypatch):
    reference = Pretrainer(tiny_config(tmp_path / "reference"))
    reference.train()
    fname = write_tiny_config(tmp_path / "run")
    job = Job("app.main:main", ["--fname", str(fname)], stop_aware=True)
    requeued = []
    # submitit's own handler, as rank 0 runs it: checkpoint the job, requeue it, exit.
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: requeued.append(job.checkpoint()))
    try:
        with monkeypatch.context() as mp:
            mp.setattr(Pretrainer, "train_step", signal_at_step(SIGNALLED_AT))
            assert job() == EXIT_STOPPED
    finally:
        signal.signal(signal.SIGUSR2, previous)
    latest = torch.load(tmp_path / "run" / "jepa-latest.pth.tar", map_location="cpu", weights_only=True)
    assert latest["step"] == SIGNALLED_AT  # saved where the signal arrived: no step lost
    [delayed] = requeued
    assert delayed.function.task_argv[-1] == "--resume"
    assert delayed.result() == 0  # the requeued job: resumes from latest and finishes
    final = torch.load(tmp_path / "run" / "jepa-latest.pth.tar", map_location="cpu", weights_only=True)
    assert final["step"] == STEPS
    for m in MODELS:
        assert_same(final[m], getattr(reference.model, m).state_dict(), m)
    _, rows = read_csv(tmp_path / "run" / "jepa_r0.csv")
    _, reference_rows = read_csv(tmp_path / "reference" / "jepa_r0.csv")
    assert [r["step"] for r in rows] == [str(s) for s in range(1, STEPS + 1)]
    assert [r["loss"] for r in rows] == [r["loss"] for r in reference_rows]


PREEMPTED_ENTRY = """
import os
import signal

import app.main
from app.pretrain import Pretrainer


def main(argv, stop=None):
    # The first attempt is preempted: Slurm's USR2 arrives during step {step}.
    if "--resume" not in argv:
        original = Pretrainer.train_step

        def train_step(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            if self.step == {step}:
                os.kill(os.getpid(), signal.SIGUSR2)
            return out

        Pretrainer.train_step = train_step
    return app.main.main(argv, stop=stop)
"""


@pytest.mark.slow
def test_local_executor_runs_two_tasks_and_requeues_a_preempted_job(tmp_path, monkeypatch):
    """The Slurm code path end to end on submitit's local executor: two tasks join a gloo group, both are
    signalled at step 4, save there, submitit requeues the job, and the second attempt resumes and finishes."""
    (tmp_path / "entry").mkdir()
    (tmp_path / "entry" / "preempted_entry.py").write_text(textwrap.dedent(PREEMPTED_ENTRY.format(step=SIGNALLED_AT)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "entry"), str(ROOT)]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    fname = write_tiny_config(tmp_path / "run")
    args = launch_args(fname, tmp_path / "jobs", "--partition", "p", "--time", "10", "--cluster", "local",
                       "--tasks-per-node", "2", "--gpus-per-node", "0", "--set", "data.batch_size=8")  # fmt: skip
    from jepa.runtime.launch import launch

    [job] = launch(args, entry="preempted_entry:main", prepare=app.main_distributed.prepare, stop_aware=True)
    assert job.results() == [0, 0], job.stderr()
    log = job.stdout()
    assert "Requeued job" in log and "stop requested: saved" in log, log
    final = torch.load(tmp_path / "run" / "jepa-latest.pth.tar", map_location="cpu", weights_only=True)
    assert (final["step"], final["world_size"]) == (STEPS, 2)
    _, rows = read_csv(tmp_path / "run" / "jepa_r0.csv")
    assert [r["step"] for r in rows] == [str(s) for s in range(1, STEPS + 1)]
    # Two ranks of 8 train like one process with batches of 16 (see test_distributed for the tolerance).
    reference = Pretrainer(tiny_config(tmp_path / "reference", "data.batch_size=16"))
    reference.train()
    for m in MODELS:
        expected = getattr(reference.model, m).state_dict()
        assert max((final[m][k] - expected[k]).abs().max().item() for k in expected) < 1e-6, m


def test_eval_launch_uses_the_eval_config_layout_and_runs_evals_on_the_job_ranks(tmp_path, recorded):
    import evals.main_distributed

    k400 = ROOT / "configs" / "evals" / "k400.yaml"
    evals.main_distributed.submit(["--fname", str(k400), "--folder", str(tmp_path / "jobs"), "--partition", "p",
                                   "--time", "60", "--set", "optimization.batch_size=2"])  # fmt: skip
    [job] = recorded[8, 8].submitted  # k400.yaml: 8 nodes x 8 GPUs
    assert job.entry == "evals.main:main" and not job.stop_aware
    assert yaml.safe_load(Path(job.argv[1]).read_text())["optimization"]["batch_size"] == 2
    assert job.checkpoint().function.task_argv[-1] == "--resume"  # the probes resume from their checkpoint


def test_an_eval_job_task_runs_the_eval(tmp_path, submitit_task):
    cfg = {
        "eval_name": "image_classification_frozen", "folder": str(tmp_path / "out"), "tag": "digits",
        "data": {"dataset_name": "digits", "num_classes": 10, "resolution": 32, "num_workers": 0, "pin_mem": False},
        "data_aug": {"auto_augment": False, "reprob": 0.0},
        "optimization": {"num_epochs": 1, "batch_size": 128},
        "pretrain": {"model_name": None, "embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 8,
                     "folder": str(tmp_path), "checkpoint": None},
    }  # fmt: skip
    fname = tmp_path / "eval.yaml"
    fname.write_text(yaml.safe_dump(cfg))
    assert Job("evals.main:main", ["--fname", str(fname)])() == 0
    results = yaml.safe_load((tmp_path / "out" / "digits" / "results.json").read_text())  # JSON is YAML
    assert (results["world_size"], results["val_samples"], results["epochs"]) == (1, 359, 1)
