"""Soak test: the tiny V-JEPA config for thousands of steps under injected faults.

    python benchmarks/soak.py --steps 3000 --out runs/soak [--seed 0] [--corrupt 6] [--interval 20 60]

The run trains ``python -m app.main`` on moving-digit clips read from an annotation CSV (so files can go bad under
it) and is disturbed at random times (seeded): SIGTERM (the run must save ``latest`` at the step it stopped and
exit 75), kill -9 (the run loses what it did since its last checkpoint; that is what checkpoints are for) and
corrupted clip files appearing mid-run (truncated, emptied, overwritten with garbage); after each interruption it
is restarted with ``--resume``. Memory (RSS of the run and its DataLoader workers) is sampled every second.

One JSON line per attempt, then a summary line:
``steps_lost_on_signal`` (steps trained but not in ``latest`` after a SIGTERM: goal 0), ``steps_redone_after_kill``
(steps repeated after kill -9, bounded by the checkpoint interval), ``log_is_exact`` (the CSV has each step once, in
order), ``bad_files_injected`` / ``bad_files_reported`` / ``bad_files_missed`` (from the run's bad-sample record),
and ``rss_mb`` first / max / last over the run (goal: flat).
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "pretrain" / "tiny_vjepa_cpu.yaml"
TAG = "jepa"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000, help="global steps of the whole run")
    p.add_argument("--out", type=Path, default=Path("runs/soak"))
    p.add_argument("--seed", type=int, default=0, help="seeds the fault schedule")
    p.add_argument("--videos", type=int, default=200, help="clips in the training CSV")
    p.add_argument("--corrupt", type=int, default=6, help="clip files corrupted over the run")
    p.add_argument("--interruptions", type=int, default=4, help="SIGTERMs and as many kill -9s over the run")
    p.add_argument("--interval", type=float, nargs=2, default=(20.0, 60.0), help="seconds between faults")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="more config overrides")
    return p.parse_args(argv)


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (DataLoader workers), from /proc."""
    pids = {pid}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:  # ppid
                pids.add(int(entry.name))
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def logged_steps(csv_path: Path) -> list[int]:
    if not csv_path.is_file():
        return []
    lines = csv_path.read_text().splitlines()[1:]
    return [int(line.split(",")[1]) for line in lines if line.strip()]


def checkpoint_step(folder: Path) -> int:
    from jepa.checkpoint import read_checkpoint

    path = folder / f"{TAG}-latest.pth.tar"
    return int(read_checkpoint(path)["step"]) if path.is_file() else 0


def corrupt(path: Path, rng: random.Random) -> str:
    kind = rng.choice(["truncate", "empty", "garbage"])
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(rng.randbytes(len(data)))
    return kind


def copy_clips(source: Path, clips: Path) -> Path:
    """Copy the clips that the annotation CSV ``source`` lists into ``clips`` (emptied first), with a CSV of the
    copies, which it returns: the soak corrupts copies, so that the generated clips stay intact for the next soak."""
    shutil.rmtree(clips, ignore_errors=True)
    clips.mkdir(parents=True)
    rows = []
    for line in source.read_text().splitlines():
        if line.strip():
            path, label = line.split()
            copy = clips / Path(path).name
            shutil.copyfile(path, copy)
            rows.append(f"{copy} {label}\n")
    data = clips / "train.csv"
    data.write_text("".join(rows))
    return data


def outcome(folder: Path, target: int, injected: dict[str, str], rss: dict[int, list[float]]) -> dict:
    """The run's log, bad-sample record and memory, against what the soak did to it."""
    from jepa.data import read_bad_sample_log

    steps = logged_steps(folder / f"{TAG}_r0.csv")
    reported = {}
    for path in folder.glob(f"{TAG}_bad_samples_r*.tsv"):
        reported.update(read_bad_sample_log(path))
    return {
        "log_is_exact": steps == sorted(set(steps)) and (not steps or steps[-1] == target),
        "bad_files_injected": len(injected), "bad_files_reported": len(reported),
        "bad_files_missed": sorted(set(injected) - set(reported)),
        # Per attempt (a restart starts a new process): memory after start-up, at its peak and at the end.
        "rss_mb": {a: {"after_10s": round(v[min(9, len(v) - 1)], 1), "max": round(max(v), 1), "last": round(v[-1], 1)}
                   for a, v in rss.items()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from jepa.video.moving_digits import make_moving_digits

    rng = random.Random(args.seed)
    out = args.out.resolve()
    source = make_moving_digits(out / "source", num_videos=args.videos, num_frames=16, size=32, split="train")
    data = copy_clips(Path(source), out / "clips")
    folder = out / "run"
    csv_log = folder / f"{TAG}_r0.csv"
    ipe = 20
    epochs = max(1, -(-args.steps // ipe))
    overrides = [
        f"logging.folder={folder}", "data.dataset_type=VideoDataset", f"data.datasets=[{data}]",
        "data.root_path=null", f"data.batch_size={args.batch_size}", "data.num_workers=1", "meta.dtype=float32",
        "meta.log_freq=5", f"optimization.ipe={ipe}", f"optimization.epochs={epochs}", *args.overrides,
    ]  # fmt: skip
    videos = [Path(line.split()[0]) for line in Path(data).read_text().splitlines() if line.strip()]
    to_corrupt = rng.sample(videos, min(args.corrupt, len(videos)))
    # Every kind of fault happens: a shuffled schedule, consumed in order; the run then goes on to its end.
    faults = ["corrupt"] * len(to_corrupt) + ["sigterm", "kill9"] * args.interruptions
    rng.shuffle(faults)
    injected: dict[str, str] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    rss: dict[int, list[float]] = {}
    lost_on_signal = redone_after_kill = 0
    attempt, target = 0, epochs * ipe
    started = time.monotonic()
    while True:
        cmd = [sys.executable, "-m", "app.main", "--fname", str(CONFIG), "--devices", "cpu", "--set", *overrides]
        if attempt > 0:
            cmd.append("--resume")
        else:
            cmd.append("--overwrite")
        log = (out / f"attempt{attempt}.log").open("w")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        fault_at = time.monotonic() + rng.uniform(*args.interval)
        fault = None
        while proc.poll() is None:
            time.sleep(1.0)
            if (mb := rss_mb(proc.pid)) > 0:
                rss.setdefault(attempt, []).append(mb)
            if time.monotonic() < fault_at or not faults:
                continue
            fault = faults.pop()
            if fault == "corrupt":
                victim = to_corrupt.pop()
                injected[str(victim)] = corrupt(victim, rng)
                fault_at = time.monotonic() + rng.uniform(*args.interval)
                fault = None
                continue
            before = max(logged_steps(csv_log), default=0)
            proc.send_signal(signal.SIGTERM if fault == "sigterm" else signal.SIGKILL)
            proc.wait()
            saved = checkpoint_step(folder)
            if fault == "sigterm":
                # Steps trained before the signal are at most one logging interval past `before`; the stopped step
                # itself is logged, so the last logged step must be the one in latest.
                lost_on_signal += max(0, max(logged_steps(csv_log), default=0) - saved)
            else:
                redone_after_kill += max(0, before - saved)
            break
        log.close()
        line = {"attempt": attempt, "fault": fault, "exit": proc.returncode, "latest_step": checkpoint_step(folder),
                "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
        print(json.dumps(line), flush=True)
        if fault is None:
            if proc.returncode != 0:
                print(json.dumps({"error": f"attempt {attempt} failed, see {out}/attempt{attempt}.log"}))
                return 1
            break
        attempt += 1
    summary = {
        "case": "soak", "steps": checkpoint_step(folder), "target_steps": target, "attempts": attempt + 1,
        "steps_lost_on_signal": lost_on_signal, "steps_redone_after_kill": redone_after_kill,
        **outcome(folder, target, injected, rss), "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
