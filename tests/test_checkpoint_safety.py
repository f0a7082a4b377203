"""Fault injections for checkpoint files: no code runs from a crafted pickle, bad files are named errors, weights
export to safetensors, and writes that fail (full disk, read-only folder, kill -9) leave nothing behind."""

import errno
import logging
import os
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NUM_HEADS, make_classifier, make_encoder, make_input, make_predictor, perturb_
from PIL import Image
from test_engine import tiny_config
from test_hub import tiny

import jepa
import jepa.checkpoint
import jepa.hub
from app.pretrain import Pretrainer
from jepa import extract
from jepa.checkpoint import (
    SAFE_GLOBALS,
    CheckpointError,
    atomic_write,
    read_checkpoint,
    remove_stale_tmp,
    save_checkpoint,
    save_safetensors,
)

ROOT = Path(__file__).resolve().parents[1]
HUB_RELEASE = "ijepa_vith14_in1k"


# ================================================================================================================
# Crafted pickles


class SystemPayload:
    """Unpickles as ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ExecPayload(SystemPayload):
    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


class TouchPayload(SystemPayload):
    """``Path.touch`` pickles through ``getattr(Path, "touch")``."""

    def __reduce__(self):
        return Path.touch, (self.marker,)


class StatePayload(SystemPayload):
    """A class of ours whose ``__setstate__`` (run when unpickling builds the object) creates the marker."""

    def __reduce__(self):
        return StatePayload, (self.marker,), {"marker": self.marker}

    def __setstate__(self, state):
        Path(state["marker"]).touch()


PAYLOADS = {"os.system": SystemPayload, "exec": ExecPayload, "Path.touch": TouchPayload, "class": StatePayload}
# The global each payload's pickle names (what the error must report).
REFUSED = {"os.system": "posix.system" if os.name == "posix" else "system", "exec": "exec", "Path.touch": "getattr",
           "class": f"{__name__}.StatePayload"}  # fmt: skip


def _extract_main(*args) -> None:
    extract.main([str(a) for a in args])


def loaders(tmp_path: Path):
    """Every public way to open a checkpoint file, each as ``name -> callable(path)``."""
    images = tmp_path / "images"
    out = tmp_path / "feats.npy"
    return {
        "read_checkpoint": read_checkpoint,
        "load_encoder": lambda p: jepa.load_encoder(p, num_heads=NUM_HEADS),
        "load_encoder[encoder]": lambda p: jepa.load_encoder(p, which="encoder", num_heads=NUM_HEADS),
        "load_predictor": lambda p: jepa.load_predictor(p, num_heads=NUM_HEADS),
        "load_classifier": lambda p: jepa.load_classifier(p, num_heads=NUM_HEADS),
        "save_safetensors": lambda p: save_safetensors(p, tmp_path / "out.safetensors"),
        "hub.load": lambda p: jepa.hub.load(HUB_RELEASE, checkpoint=p),
        "hub entry point": lambda p: jepa.hub.entry_point(HUB_RELEASE)(pretrained=False, checkpoint=str(p)),
        "extract --checkpoint": lambda p: _extract_main(
            "--checkpoint", p, "--num-heads", 3, "--data", images, "--out", out, "--device", "cpu"
        ),  # fmt: skip
        "extract --hub": lambda p: _extract_main(
            "--hub", HUB_RELEASE, "--checkpoint", p, "--data", images, "--out", out, "--device", "cpu"
        ),  # fmt: skip
    }


def official_layout(payload=None) -> dict:
    """A training checkpoint in the official layout, with ``payload`` as its ``loss`` (where official files keep a
    non-tensor object)."""
    state = make_encoder(1).state_dict()
    return {
        "encoder": {f"module.{k}": v for k, v in state.items()},
        "target_encoder": {f"module.{k}": v for k, v in state.items()},
        "predictor": make_predictor(1).state_dict(),
        "classifier": make_classifier().state_dict(),
        "epoch": 1,
        "loss": 0.5 if payload is None else payload,
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_a_crafted_pickle_runs_in_no_loader(tmp_path, payload, legacy):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth.tar"
    torch.save(official_layout(PAYLOADS[payload](marker)), path, _use_new_zipfile_serialization=not legacy)
    torch.load(path, weights_only=False)  # the payload is live: full unpickling runs it
    assert marker.exists()
    marker.unlink()
    for name, load in loaders(tmp_path).items():
        with pytest.raises(CheckpointError) as e:
            load(path)
        assert not marker.exists(), f"{name} ran the payload"
        message = str(e.value)
        assert str(path) in message and REFUSED[payload] in message and "could run code" in message, (name, message)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_memory_mapped_read_gives_the_same_contents_and_is_as_safe(tmp_path, legacy):
    """``mmap=True`` (how the config checks read a checkpoint's stored config before a run) reads the same dict
    without reading the weights up front, and refuses a crafted file like a full read."""
    path = tmp_path / "ok.pth.tar"
    ckpt = {**official_layout(), "config": {"model": {"num_heads": 3}}}
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    mapped, full = read_checkpoint(path, mmap=True), read_checkpoint(path)
    assert mapped["config"] == full["config"] == ckpt["config"]
    assert all(torch.equal(mapped["encoder"][k], v) for k, v in full["encoder"].items())
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth.tar"
    torch.save(official_layout(SystemPayload(marker)), evil, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError, match="could run code"):
        read_checkpoint(evil, mmap=True)
    assert not marker.exists()


def test_resume_refuses_a_crafted_checkpoint(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth.tar"
    torch.save(official_layout(SystemPayload(marker)), path)
    trainer = Pretrainer(tiny_config(tmp_path / "run"))
    with pytest.raises(CheckpointError, match="posix.system|system"):
        trainer.load(path)
    assert not marker.exists()


def test_no_torch_load_outside_read_checkpoint():
    """Every file is opened through read_checkpoint, so its checks cannot be bypassed: no other torch.load (only
    mentions of ``torch.load(weights_only=True)`` in docs), no full unpickling, no pickle.load of a file."""
    offenders = []
    for folder in ("jepa", "app", "evals", "benchmarks"):
        for src in sorted((ROOT / folder).rglob("*.py")):
            text, name = src.read_text(), str(src.relative_to(ROOT))
            calls = re.findall(r"torch\.load\(([^)]*)\)", text)
            if name != "jepa/checkpoint.py":
                calls = [c for c in calls if c != "weights_only=True"]
            offenders += [f"{name}: torch.load({c})" for c in calls if "weights_only=True" not in c]
            offenders += [f"{name}: {s}" for s in ("weights_only=False", "pickle.load(") if s in text]
            # jepa.runtime.distributed unpickles results its own spawned ranks send back, never a file.
            if "pickle.loads(" in text and name != "jepa/runtime/distributed.py":
                offenders.append(f"{name}: pickle.loads(")
    assert offenders == []
    assert (ROOT / "jepa" / "checkpoint.py").read_text().count("torch.load(path") == 1


def test_importing_and_loading_register_no_safe_globals(tmp_path):
    """The allow-list is applied around each load only; importing jepa adds nothing to torch's global list."""
    allowed = {id(obj) for obj, _ in SAFE_GLOBALS}

    def registered() -> list:
        return [g for g in torch.serialization.get_safe_globals() if id(g[0] if isinstance(g, tuple) else g) in allowed]

    assert registered() == []
    read_checkpoint(_numpy_checkpoint(tmp_path / "official.pth.tar", legacy=False))
    assert registered() == []


# ================================================================================================================
# NumPy scalars of the official files


NUMPY_ENTRIES = {
    "loss": np.float64(0.25),
    "lr": np.float32(1e-3),
    "epoch": np.int64(3),
    "flag": np.bool_(True),
    "dtype": np.dtype("float16"),
}


def _numpy_checkpoint(path: Path, legacy: bool) -> Path:
    ckpt = {"target_encoder": make_encoder(1).state_dict(), **NUMPY_ENTRIES}
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_numpy_scalars_load(tmp_path, legacy):
    path = _numpy_checkpoint(tmp_path / "official.pth.tar", legacy)
    loaded = read_checkpoint(path)
    for key, value in NUMPY_ENTRIES.items():
        assert type(loaded[key]) is type(value) and loaded[key] == value, key
    assert jepa.load_encoder(path, num_heads=NUM_HEADS).embed_dim == 48


def test_numpy_scalars_pickled_by_the_other_numpy_major_version_load(tmp_path):
    """Files written under NumPy 1 name ``numpy.core.multiarray.scalar``, under NumPy 2 ``numpy._core...``: both
    load, whichever NumPy is installed (edited in a legacy-format file, whose pickle is not compressed)."""
    path = _numpy_checkpoint(tmp_path / "official.pth.tar", legacy=True)
    data = path.read_bytes()
    here, other = (b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    if here not in data:
        here, other = other, here
    assert here in data
    path.write_bytes(data.replace(here, other))
    loaded = read_checkpoint(path)
    assert loaded["loss"] == np.float64(0.25) and loaded["epoch"] == 3


def test_the_allow_list_is_numpy_scalars_and_dtypes_only():
    names = {name for _, name in SAFE_GLOBALS}
    assert {"numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"} <= names
    assert f"{type(np.dtype('float64')).__module__}.{type(np.dtype('float64')).__qualname__}" in names
    others = names - {"numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"}
    assert all(isinstance(obj, type) and issubclass(obj, np.dtype) for obj, name in SAFE_GLOBALS if name in others)


def test_numpy_arrays_are_refused(tmp_path):
    path = tmp_path / "array.pth.tar"
    torch.save({"stats": np.arange(3)}, path)
    with pytest.raises(CheckpointError, match=r"array.pth.tar.*_reconstruct.*could run code"):
        read_checkpoint(path)


# ================================================================================================================
# Files that are not checkpoints


def _good_file(tmp_path: Path) -> bytes:
    return save_checkpoint(official_layout(), tmp_path / "good.pth.tar").read_bytes()


def _legacy_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "legacy.pth.tar"
    torch.save(official_layout(), path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


BAD_FILES = {
    "text": (lambda tmp: b"epoch,loss\n1,0.5\n", "is not a checkpoint: expected"),
    "empty": (lambda tmp: b"", "is empty"),
    "random bytes": (lambda tmp: np.random.default_rng(0).bytes(4096), "is not a checkpoint: expected"),
    "plain pickle": (lambda tmp: pickle.dumps({"a": 1}), "is not a checkpoint: expected"),
    "numpy file": (lambda tmp: b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'}", "is not a checkpoint: expected"),
    "truncated zip": (lambda tmp: _good_file(tmp)[:-100], "damaged or truncated"),
    "half a zip": (lambda tmp: _good_file(tmp)[: len(_good_file(tmp)) // 2], "damaged or truncated"),
    "zip header only": (lambda tmp: _good_file(tmp)[:40], "damaged or truncated"),
    "truncated legacy": (lambda tmp: _legacy_bytes(tmp)[:-100], "damaged or truncated"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_file_that_is_not_a_checkpoint_is_a_named_error(tmp_path, kind):
    make, expected = BAD_FILES[kind]
    path = tmp_path / "bad.pth.tar"
    path.write_bytes(make(tmp_path))
    for name, load in loaders(tmp_path).items():
        with pytest.raises(CheckpointError, match=expected) as e:
            load(path)
        assert str(path) in str(e.value), name


def test_a_folder_is_a_named_error(tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path} is a folder, expected a file"):
        jepa.load_encoder(tmp_path, num_heads=NUM_HEADS)


@pytest.mark.parametrize("cut", [0, 20, 1000, -8], ids=["empty", "header", "part", "tail"])
def test_a_damaged_safetensors_file_is_a_named_error(tmp_path, cut):
    path = save_safetensors(official_layout(), tmp_path / "enc.safetensors")
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(CheckpointError, match="enc.safetensors"):
        jepa.load_encoder(path, num_heads=NUM_HEADS)


# ================================================================================================================
# safetensors


@pytest.fixture
def run_checkpoint(tmp_path, num_frames):
    """A training checkpoint of ours (DDP prefixes, a config) and the frozen reference encoders and predictor."""
    encoder, target = perturb_(make_encoder(num_frames)), perturb_(make_encoder(num_frames))
    predictor = perturb_(make_predictor(num_frames))
    ckpt = {
        "encoder": {f"module.{k}": v for k, v in encoder.state_dict().items()},
        "target_encoder": {f"module.{k}": v for k, v in target.state_dict().items()},
        "predictor": {f"module.backbone.{k}": v for k, v in predictor.state_dict().items()},
        "opt": {"state": {}, "param_groups": []},
        "epoch": 2,
        "loss": 0.25,
        "config": {"model": {"num_heads": NUM_HEADS, "embed_dim": 48}, "data": {"num_frames": num_frames}},
    }
    return save_checkpoint(ckpt, tmp_path / "latest.pth.tar"), ckpt


def _same_outputs(a, b, x, *args) -> None:
    with torch.no_grad():
        assert torch.equal(a(x, *args), b(x, *args))


@pytest.mark.parametrize("which", ["target_encoder", "encoder"])
def test_safetensors_export_loads_bit_identically(tmp_path, run_checkpoint, num_frames, which):
    path, ckpt = run_checkpoint
    st = save_safetensors(path, tmp_path / f"{which}.safetensors", which=which)
    kwargs = {"num_heads": NUM_HEADS, "num_frames": num_frames} if num_frames > 1 else {"num_heads": NUM_HEADS}
    from_pth = jepa.load_encoder(path, which=which, **kwargs)
    from_st = jepa.load_encoder(st, which=which, **kwargs)
    assert str(from_pth) == str(from_st)
    for k, v in from_pth.state_dict().items():
        assert torch.equal(v, from_st.state_dict()[k]), k
    _same_outputs(from_pth, from_st, make_input(num_frames))
    loaded = read_checkpoint(st)
    assert sorted(loaded) == sorted(["config", "metadata", which])
    assert loaded["config"] == ckpt["config"] and loaded["metadata"]["jepa.network"] == which
    assert all(not k.startswith("module.") for k in loaded[which])
    other = "encoder" if which == "target_encoder" else "target_encoder"
    with pytest.raises(CheckpointError, match=f"has no '{other}'"):
        jepa.load_encoder(st, which=other, **kwargs)


def test_safetensors_of_a_predictor_and_a_probe(tmp_path, run_checkpoint, num_frames):
    path, _ = run_checkpoint
    st = save_safetensors(path, tmp_path / "pred.safetensors", which="predictor")
    grid = {"num_heads": NUM_HEADS, "img_size": 32, "patch_size": 8, "num_frames": num_frames}
    n = 16 * (2 if num_frames > 1 else 1)
    perm = torch.stack([torch.randperm(n) for _ in range(2)])
    batch = torch.randn(2, 6, 48), perm[:, :6], perm[:, 6:9]
    _same_outputs(jepa.load_predictor(path, **grid), jepa.load_predictor(st, **grid), *batch)

    probes = [perturb_(make_classifier()), perturb_(make_classifier())]
    probe_path = save_checkpoint({"classifiers": [p.state_dict() for p in probes]}, tmp_path / "probe.pth.tar")
    st = save_safetensors(probe_path, tmp_path / "probe.safetensors", which="classifier", index=1)
    x = torch.randn(2, 5, 48)
    _same_outputs(jepa.load_classifier(probe_path, index=1, num_heads=NUM_HEADS),
                  jepa.load_classifier(st, num_heads=NUM_HEADS), x)  # fmt: skip


def test_safetensors_through_hub_and_extract(tmp_path, monkeypatch):
    release = tiny(HUB_RELEASE)
    monkeypatch.setitem(jepa.hub.RELEASES, HUB_RELEASE, release)
    weights = {
        k: v + 0.1 * torch.randn_like(v) for k, v in jepa.hub.load(release, pretrained=False).state_dict().items()
    }
    pth = save_checkpoint({"target_encoder": weights}, tmp_path / "release.pth.tar")
    st = save_safetensors(pth, tmp_path / "release.safetensors")
    x = torch.randn(2, 3, release.img_size, release.img_size)
    _same_outputs(jepa.hub.load(release, checkpoint=pth), jepa.hub.load(release, checkpoint=st), x)
    _same_outputs(jepa.hub.entry_point(HUB_RELEASE)(checkpoint=str(st)), jepa.hub.load(release, checkpoint=pth), x)

    images = tmp_path / "images" / "cat"
    images.mkdir(parents=True)
    for k in range(2):
        Image.fromarray(np.full((32, 32, 3), 40 * k, dtype=np.uint8)).save(images / f"{k}.png")
    feats = {}
    for name, ckpt in (("pth", pth), ("st", st)):
        out = tmp_path / f"{name}.npy"
        _extract_main("--hub", HUB_RELEASE, "--checkpoint", ckpt, "--data", images.parent, "--out", out,
                      "--device", "cpu", "--crop-size", release.img_size)  # fmt: skip
        feats[name] = np.load(out)
    assert feats["pth"].shape[0] == 2 and np.array_equal(feats["pth"], feats["st"])


def test_safetensors_export_arguments(tmp_path):
    enc = make_encoder(1)
    path = save_safetensors(enc, tmp_path / "m.safetensors", metadata={"note": "from a module"})
    loaded = read_checkpoint(path)
    assert loaded["metadata"]["note"] == "from a module" and "config" not in loaded
    assert sorted(loaded["target_encoder"]) == sorted(enc.state_dict())
    with pytest.raises(ValueError, match="which must be one of"):
        save_safetensors(enc, tmp_path / "x.safetensors", which="ema")
    with pytest.raises(CheckpointError, match="has no 'predictor'"):
        save_safetensors({"target_encoder": enc.state_dict()}, tmp_path / "x.safetensors", which="predictor")
    # Tensors sharing memory (a view of another entry) are written as copies.
    shared = {"a": torch.arange(6.0), "b": torch.arange(6.0)[:3]}
    shared["b"] = shared["a"][:3]
    path = save_safetensors(shared, tmp_path / "shared.safetensors")
    assert torch.equal(read_checkpoint(path)["target_encoder"]["b"], torch.arange(3.0))
    assert not list(tmp_path.glob(".*.tmp"))
    # A safetensors file of someone else's (no jepa metadata) is a plain state dict.
    import safetensors.torch

    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(enc.state_dict(), plain)
    assert sorted(read_checkpoint(plain)) == sorted(enc.state_dict())
    assert jepa.load_encoder(plain, num_heads=NUM_HEADS).embed_dim == 48


# ================================================================================================================
# Pretrainer checkpoints


def _assert_same(a, b, where="") -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_pretrainer_checkpoints_round_trip_through_read_checkpoint(tmp_path):
    trainer = Pretrainer(tiny_config(tmp_path / "run"))
    (x, _, _), masks_enc, masks_pred = next(iter(trainer.loader))
    trainer.train_step(x, [(masks_enc, masks_pred)])  # so that the optimizer has state
    state = trainer.state_dict(loss=0.5)
    path = save_checkpoint(state, tmp_path / "latest.pth.tar")
    _assert_same(state, read_checkpoint(path))
    resumed = Pretrainer(tiny_config(tmp_path / "run2"))
    resumed.load(path)
    _assert_same(trainer.model.state_dict(), resumed.model.state_dict())


# ================================================================================================================
# Failed writes


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``limit`` bytes are written."""

    def __init__(self, f, limit: int) -> None:
        self.f, self.limit, self.written = f, limit, 0

    def write(self, data) -> int:
        if self.written + len(data) > self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


@pytest.mark.parametrize("limit", [0, 64 * 1024], ids=["first-write", "mid-file"])
def test_a_full_disk_is_an_oserror_naming_the_path(tmp_path, monkeypatch, limit):
    """Mid-file, torch.save itself reports only ``RuntimeError: ... unexpected pos``; the errno must survive."""
    path = save_checkpoint({"epoch": 1}, tmp_path / "latest.pth.tar")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k), limit))
    with pytest.raises(OSError) as e:
        save_checkpoint({"epoch": 2, "w": torch.zeros(100_000)}, path)
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert str(path) in str(e.value) and "ENOSPC" in str(e.value) and "disk is full" in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["latest.pth.tar"]  # no temporary left
    assert read_checkpoint(path)["epoch"] == 1


def test_a_failing_write_function_keeps_the_errno(tmp_path):
    def write(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"out\.json.*ENOSPC, the disk is full") as e:
        atomic_write(tmp_path / "out.json", write)
    assert e.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("target", "code", "kind"),
    [("replace", errno.EROFS, OSError), ("replace", errno.EACCES, PermissionError),
     ("mkstemp", errno.EACCES, PermissionError), ("fsync", errno.EIO, OSError)],
)  # fmt: skip
def test_os_errors_while_saving_name_the_path_and_errno(tmp_path, monkeypatch, target, code, kind):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile if target == "mkstemp" else os, target, fail)
    with pytest.raises(kind) as e:
        save_checkpoint({"epoch": 1}, tmp_path / "ep1.pth.tar")
    monkeypatch.undo()
    assert e.value.errno == code
    assert str(tmp_path / "ep1.pth.tar") in str(e.value) and errno.errorcode[code] in str(e.value)
    assert "disk is full" not in str(e.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_a_named_oserror(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=r"ro/latest.pth.tar.*EACCES"):
            save_checkpoint({"epoch": 1}, folder / "latest.pth.tar")
    finally:
        folder.chmod(0o755)
    assert os.listdir(folder) == []


# ================================================================================================================
# Stale temporary files


KILLED_WRITER = """
import os, signal, sys
from jepa.checkpoint import atomic_write

def write(f):
    f.write(b"x" * 1000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

atomic_write(sys.argv[1], write)
"""


def test_remove_stale_tmp_removes_exactly_what_a_killed_write_left(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(run / "jepa-latest.pth.tar")], cwd=ROOT)
    assert proc.returncode == -9
    (leftover,) = run.iterdir()
    assert leftover.name.startswith(".jepa-latest.pth.tar.") and leftover.name.endswith(".tmp")
    keep = ["notes.tmp", ".foo.tmp", ".latest.pth.tar.abc.tmp", ".latest.pth.tar.ABCDEFGH.tmp", "x.abcdefgh.tmp",
            ".latest.pth.tar.abcdefgh.tmp.bak", "jepa-latest.pth.tar", ".hidden"]  # fmt: skip
    for name in keep:
        (run / name).write_text("keep")
    (run / ".dir.abcdefgh.tmp").mkdir()
    (run / "sub").mkdir()
    (run / "sub" / ".ep1.pth.tar.abcdefgh.tmp").write_text("other folder")
    _, own = tempfile.mkstemp(prefix=".results.json.", suffix=".tmp", dir=run)  # atomic_write's naming
    with caplog.at_level(logging.INFO, logger="jepa.checkpoint"):
        removed = remove_stale_tmp(run)
    assert removed == sorted([leftover, Path(own)])
    assert sorted(p.name for p in run.iterdir()) == sorted([*keep, ".dir.abcdefgh.tmp", "sub"])
    assert (run / "sub" / ".ep1.pth.tar.abcdefgh.tmp").exists()
    assert all(str(p) in caplog.text for p in removed)
    assert remove_stale_tmp(run) == [] and remove_stale_tmp(tmp_path / "missing") == []
