"""V-JEPA 2 pretraining: the official train files load strictly with no key dropped, their keys act as the official
code's do (run folder, numbered checkpoints, Slurm resources, frame rate, workers, full-complement masks), and clips
of several lengths train in one run (grouped batches, one mask collator per length, the official mask-token layout
and loss average, exact resume)."""

import copy
import importlib.util
import logging
import math
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import make_encoder, make_predictor, perturb_
from test_engine import assert_same, read_csv
from torch import nn

import app.main
import app.main_distributed
import app.pretrain
from app.pretrain import Pretrainer
from jepa.config import ConfigError, load_pretrain_config, to_dict
from jepa.config.pretrain import OFFICIAL_KEY_ALIASES, PretrainConfig, VideoMaskConfig
from jepa.config.strict import ignored_keys
from jepa.masks import apply_masks
from jepa.runtime.launch import executor_parameters
from jepa.training import builders
from jepa.training.meta_arch import JEPA, ClipGroup
from jepa.video.datasets import VideoDataset, frame_step_for
from jepa.video.masks import LengthGroup, MultiblockMaskCollator3D, MultiLengthMaskCollator

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_TRAIN = ROOT.parent / "shared" / "official_configs" / "vjepa2" / "configs" / "train"
OFFICIAL_CODE = ROOT.parent / "scratch" / "vjepa2"
# The action-conditioned (DROID) file is another app, not V-JEPA pretraining.
TRAIN_FILES = sorted(p for p in OFFICIAL_TRAIN.glob("*/*.yaml") if not p.name.startswith("droid"))
VITL = OFFICIAL_TRAIN / "vitl16" / "pretrain-256px-16f.yaml"
TINY_VJEPA2 = ROOT / "configs" / "pretrain" / "tiny_vjepa2_cpu.yaml"


def official_file(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


train_files = pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=f"{p.parent.name}/{p.stem}") for p in TRAIN_FILES]
    or [pytest.param(None, marks=pytest.mark.skip(reason=f"no {OFFICIAL_TRAIN}"))],
)


def leaves(node: object, path: str = "") -> list[tuple[str, object]]:
    """``(key path, value)`` of every leaf of a YAML tree; a list of mappings is indexed (``mask[0].num_blocks``),
    a list of values is one leaf."""
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in leaves(v, f"{path}.{k}" if path else str(k))]
    if isinstance(node, list) and any(isinstance(v, dict) for v in node):
        return [leaf for i, v in enumerate(node) for leaf in leaves(v, f"{path}[{i}]")]
    return [(path, node)]


def lookup(tree: object, path: str) -> object:
    node = tree
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]  # type: ignore[index]
    return node


def same_value(ours: object, theirs: object) -> bool:
    if isinstance(theirs, list):
        return isinstance(ours, list) and len(ours) == len(theirs) and all(map(same_value, ours, theirs))
    if isinstance(theirs, float) or isinstance(ours, float):
        return isinstance(ours, int | float) and isinstance(theirs, int | float) and math.isclose(ours, theirs)
    return ours == theirs


# Official train files


@train_files
def test_official_train_files_validate_strictly_and_drop_no_key(path, caplog):
    raw = yaml.safe_load(path.read_text())
    with caplog.at_level(logging.WARNING):
        cfg = load_pretrain_config(path)
    resolved = to_dict(cfg)
    registry = ignored_keys(PretrainConfig)
    warned = " ".join(r.getMessage() for r in caplog.records)
    for key, value in leaves(raw):
        generic = re.sub(r"\[\d+\]", "[]", key)
        if generic in registry:  # accepted, unused: its warning names it
            assert f"'{key}'" in warned and registry[generic] in warned, key
            continue
        target = OFFICIAL_KEY_ALIASES.get(key, key)
        assert same_value(lookup(resolved, target), value), f"{key}={value!r} is not {target} in the resolved config"


@train_files
def test_official_train_files_pass_the_command_line_check(path, capsys):
    assert app.main.main(["--fname", str(path), "--validate"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["logging"]["folder"] == yaml.safe_load(path.read_text())["folder"]


def test_the_registry_of_unused_keys_is_the_schemas_ignored_fields():
    registry = ignored_keys(PretrainConfig)
    assert registry["meta.copy_data"] == "data is read in place"
    assert "meta.eval_freq" not in registry  # the online probe reads it (jepa.training.online_probe)
    assert "data.decode_one_clip" in registry and "meta.seed" not in registry
    assert all(path.count(".") == 1 for path in registry)  # section.key: no top-level key is ignored


def test_the_vjepa2_keys_do_what_the_official_code_does(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = load_pretrain_config(official_file(VITL))
    d = cfg.data
    assert cfg.logging.folder == "/your_folder/pretrain/16.8.vitl.256px.16f"  # top-level `folder`
    assert cfg.meta.checkpoint_freq == 50  # save_every_freq
    assert (cfg.cpus_per_task, cfg.mem_per_gpu, cfg.nodes, cfg.tasks_per_node) == (16, "220G", 16, 8)
    assert d.dataset_fpcs == [16, 16, 16] and d.num_frames == 16 and d.clip_lengths == [16]
    assert (d.fps, d.frame_step, d.sampling_rate) == (4.0, None, None) and d.persistent_workers
    # As the official init_video_model: len(mask) * len(dataset_fpcs) tokens; one length -> every set uses token 0.
    assert cfg.num_mask_tokens == 6 == cfg.model_spec().predictor.num_mask_tokens
    assert builders.mask_token_indices(cfg, 0, 2) == [0, 0] and builders.spare_mask_tokens(cfg) == 5
    assert [m.full_complement for m in cfg.mask] == [False, False]
    assert cfg.optimization.warmup == 40 and cfg.optimization.epochs == 10  # the LR never peaks: a warning says so
    assert "optimization.warmup (40.0 epochs) outlasts" in caplog.text


def tiny_raw(**data: object) -> dict:
    """A tiny V-JEPA 2 style config (moving digits, RoPE, two lengths) as a YAML mapping."""
    raw = yaml.safe_load(TINY_VJEPA2.read_text())
    raw["data"].update(batch_size=4, crop_size=32, patch_size=8, num_workers=0, **data)
    raw["model"].update(embed_dim=48, num_heads=3, depth=2, pred_embed_dim=48, pred_num_heads=3, pred_depth=2)
    raw["meta"].update(dtype="float32", log_freq=1)
    raw["optimization"].update(epochs=3, ipe=3)
    raw["mask"][0]["num_blocks"] = 2
    return raw


def load_raw(tmp_path: Path, raw: dict, *overrides: str) -> PretrainConfig:
    path = tmp_path / f"cfg{len(list(tmp_path.glob('cfg*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_pretrain_config(path, list(overrides))


def edit(section: str, **values: object):
    def apply(raw: dict) -> None:
        (raw[section] if section else raw).update(values)

    return apply


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (edit("", folder="/a"), "folder='/a' contradicts logging.folder='runs/tiny_vjepa2_cpu'"),
        (edit("meta", save_every_freq=5), "meta.save_every_freq=5 contradicts meta.checkpoint_freq=1"),
        (edit("meta", save_every_freq=-1, checkpoint_freq=-1), "meta.save_every_freq: got -1, expected epochs >= 1"),
        (edit("data", sampling_rate=2), "sampling_rate and fps are both set"),
        (edit("data", fps=None, clip_duration=1.0, sampling_rate=2), "sampling_rate and clip_duration are both set"),
        (edit("data", dataset_fpcs=[4, 5]), "data.dataset_fpcs[1]: got 5, expected a positive multiple of tubelet"),
        (edit("data", num_frames=4), "num_frames 4 differs from the longest clip of dataset_fpcs [4, 8] (8)"),
        (edit("", mem_per_gpu="lots"), "mem_per_gpu: got 'lots'"),
        (edit("", cpus_per_task=0), "cpus_per_task: got 0"),
    ],
    ids=["folder", "save-every", "save-never", "step-and-fps", "step-and-duration", "fpc-tubelet", "num-frames",
         "mem", "cpus"],
)  # fmt: skip
def test_contradictions_are_errors_that_name_both_keys(tmp_path, change, message):
    raw = tiny_raw()
    change(raw)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_raw(tmp_path, raw)


def test_dataset_fpcs_needs_one_length_per_annotation_file(tmp_path):
    raw = tiny_raw(dataset_type="VideoDataset", datasets=["a.csv", "b.csv", "c.csv"], root_path=None)
    with pytest.raises(ConfigError, match="dataset_fpcs has 2 entries for the 3 annotation files"):
        load_raw(tmp_path, raw)


def test_official_names_work_in_overrides_and_agreeing_aliases_load(tmp_path):
    raw = tiny_raw()
    raw.update(folder=str(tmp_path / "run"))
    raw["logging"]["folder"] = str(tmp_path / "run")
    raw["meta"]["save_every_freq"] = 1
    cfg = load_raw(tmp_path, raw, "folder=/x/run", "meta.save_every_freq=7")
    assert (cfg.logging.folder, cfg.meta.checkpoint_freq) == ("/x/run", 7)


def test_the_resolved_config_loads_back_identically(tmp_path):
    cfg = load_pretrain_config(official_file(VITL))
    again = load_raw(tmp_path, to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)


def test_the_launcher_sizes_tasks_from_the_config_unless_told(tmp_path):
    prepared = app.main_distributed.prepare(official_file(VITL), [])
    assert (prepared.nodes, prepared.tasks_per_node, prepared.cpus_per_task, prepared.mem_per_gpu) == (
        16, 8, 16, "220G")  # fmt: skip
    args = SimpleNamespace(time=60, signal_delay_s=120, gpus_per_node=None, cpus_per_task=None, mem_per_gpu=None,
                           mem=None, partition="p", account=None, qos=None, exclude=None)  # fmt: skip
    params = executor_parameters(args, 16, 8, "vitl", cpus_per_task=16, mem_per_gpu="220G")
    assert (params["cpus_per_task"], params["slurm_mem_per_gpu"]) == (16, "220G")
    args.cpus_per_task, args.mem_per_gpu = 4, "50G"
    params = executor_parameters(args, 16, 8, "vitl", cpus_per_task=16, mem_per_gpu="220G")
    assert (params["cpus_per_task"], params["slurm_mem_per_gpu"]) == (4, "50G")
    args.mem_per_gpu, args.mem = None, "400G"  # --mem replaces the config's per-GPU memory
    params = executor_parameters(args, 16, 8, "vitl", cpus_per_task=16, mem_per_gpu="220G")
    assert "slurm_mem_per_gpu" not in params and params["slurm_mem"] == "400G"


# Masks


def test_full_complement_targets_every_token_outside_the_truncated_context():
    spec = dict(aspect_ratio=(0.75, 1.5), num_blocks=2, spatial_scale=(0.2, 0.2), temporal_scale=(0.5, 1.0))
    plain = MultiblockMaskCollator3D([VideoMaskConfig(**spec, max_keep=20)], crop_size=32, num_frames=8, patch_size=8)
    full = MultiblockMaskCollator3D([VideoMaskConfig(**spec, max_keep=20, full_complement=True)], crop_size=32,
                                    num_frames=8, patch_size=8)  # fmt: skip
    n = 4 * 4 * 4
    [enc_a], [pred_a] = plain.sample_masks(5, torch.Generator().manual_seed(3))
    [enc], [pred] = full.sample_masks(5, torch.Generator().manual_seed(3))
    assert torch.equal(enc, enc_a) and enc.shape == (5, 20)  # the same context
    assert pred.shape == (5, n - 20) and not torch.equal(pred[:, : pred_a.shape[1]], pred_a)
    for row_enc, row_pred in zip(enc.tolist(), pred.tolist()):
        # What the official collator computes: sorted(set(range(N)) - set(context)).
        assert row_pred == sorted(set(range(n)) - set(row_enc))


def clip_sample(frames: int, seed: int) -> tuple:
    return (torch.full((3, frames, 32, 32), float(seed)), 0, seed)


def test_multi_length_collator_groups_by_length_with_each_lengths_masks():
    specs = [VideoMaskConfig(num_blocks=2, spatial_scale=(0.2, 0.2)), VideoMaskConfig(num_blocks=1)]
    collator = MultiLengthMaskCollator(specs, [8, 4, 8], crop_size=32, patch_size=8, tubelet_size=2, seed=5)
    assert collator.lengths == (8, 4)
    batch = [clip_sample(4, 11), clip_sample(8, 12), clip_sample(4, 13), clip_sample(8, 14), clip_sample(8, 15)]
    groups = collator(batch)
    assert [g.length_index for g in groups] == [0, 1]
    assert [g.batch[2].tolist() for g in groups] == [[12, 14, 15], [11, 13]]  # batch order within a length
    assert [tuple(g.batch[0].shape) for g in groups] == [(3, 3, 8, 32, 32), (2, 3, 4, 32, 32)]
    for group, tokens in zip(groups, (4 * 16, 2 * 16)):
        assert len(group.masks_enc) == len(group.masks_pred) == 2
        assert all(int(m.max()) < tokens for m in group.masks_enc + group.masks_pred)  # on its own grid
    # Each group's masks are those the single-length collator draws for exactly its samples (pure functions).
    for group, frames, members in ((groups[0], 8, [1, 3, 4]), (groups[1], 4, [0, 2])):
        single = MultiblockMaskCollator3D(specs, crop_size=32, num_frames=frames, patch_size=8, seed=5)
        _, enc, pred = single([batch[i] for i in members])
        assert all(map(torch.equal, enc + pred, group.masks_enc + group.masks_pred))
    again = collator(batch)
    assert all(torch.equal(a, b) for g, h in zip(groups, again) for a, b in zip(g.masks_enc, h.masks_enc))
    assert [g.length_index for g in collator(batch[:1] + batch[2:3])] == [1]  # a batch without long clips
    with pytest.raises(ValueError, match="clip of 6 frames"):
        collator([clip_sample(6, 1)])


# The mask-token layout and the loss


def official_wrappers():
    path = OFFICIAL_CODE / "src" / "utils" / "wrappers.py"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    spec = importlib.util.spec_from_file_location("official_vjepa2_wrappers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RecordingPredictor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x, masks_x, masks_y, mask_index=1, has_cls=False):
        self.calls.append(mask_index)
        return x


def test_mask_token_per_group_follows_the_official_predictor_wrapper(tmp_path):
    official = official_wrappers()
    cfg = load_raw(tmp_path, tiny_raw(dataset_fpcs=[4, 8, 8]))
    assert cfg.data.clip_lengths == [4, 8] and cfg.num_mask_tokens == len(cfg.mask) * len(cfg.data.dataset_fpcs) == 6
    recorder = RecordingPredictor()
    wrapper = official.PredictorMultiSeqWrapper(recorder)
    groups, sets = 2, len(cfg.mask)
    wrapper([[torch.zeros(1)] * sets] * groups, [[None] * sets] * groups, [[None] * sets] * groups)
    ours = [builders.mask_token_indices(cfg, g, sets) for g in range(groups)]
    assert sum(ours, []) == recorder.calls == [0, 0, 1, 1]
    # V-JEPA 1 layout (no dataset_fpcs): a token per mask config.
    v1 = load_raw(tmp_path, tiny_raw(dataset_fpcs=None, num_frames=8))
    assert builders.mask_token_indices(v1, 0, 2) == [0, 1] and v1.num_mask_tokens == 2
    assert builders.spare_mask_tokens(v1) == 0 and builders.spare_mask_tokens(cfg) == 4


def tiny_jepa(**kwargs) -> JEPA:
    encoder = perturb_(make_encoder(8, use_rope=True))
    predictor = perturb_(make_predictor(8, use_rope=True, num_mask_tokens=4, square_rope_grid=False))
    return JEPA(encoder, predictor, loss_type="l1", **kwargs)


def random_masks(grid: int, batch: int, keep: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(grid, generator=g)[:keep].sort().values for _ in range(batch)])


def two_length_groups() -> list[ClipGroup]:
    torch.manual_seed(1)
    groups = []
    for length_index, (frames, batch) in enumerate(((4, 1), (8, 3))):
        grid = frames // 2 * 16
        sets = [([random_masks(grid, batch, 10, 10 * frames + s)], [random_masks(grid, batch, 6, 20 * frames + s)])
                for s in range(2)]  # fmt: skip
        groups.append(ClipGroup(torch.randn(batch, 3, frames, 32, 32), sets, [length_index, length_index]))
    return groups


def test_the_loss_of_a_two_length_batch_is_the_official_mean_over_groups_and_mask_configs():
    model = tiny_jepa()
    groups = two_length_groups()
    out = model(groups)
    pair_losses, sample_weighted = [], []
    with torch.no_grad():
        for group in groups:
            h = model.target_encoder(group.x)
            h = F.layer_norm(h, (h.shape[-1],))
            for (enc, pred), index in zip(group.mask_sets, group.mask_indices):
                z = model.predictor(model.encoder(group.x, enc), enc, pred, mask_index=index)
                loss = (z - apply_masks(h, pred)).abs().mean()  # loss_exp 1: |z - h| ** 1 / 1
                pair_losses.append(loss)
                sample_weighted.append(loss * group.x.shape[0])
    expected = sum(pair_losses) / 4  # every (group, mask config) pair weighs the same, whatever the group's size
    torch.testing.assert_close(out.loss_pred.detach(), expected, rtol=0, atol=1e-6)
    per_clip = sum(sample_weighted) / sum(g.x.shape[0] * len(g.mask_sets) for g in groups)
    assert not torch.isclose(out.loss_pred.detach(), per_clip)  # groups of 1 and 3 clips: not a per-clip mean
    assert out.target_pooled.shape == (4, 48)
    # The tokens used are the groups' (0 and 1); the spare ones get no gradient, as in the official code.
    out.loss.backward()
    grads = [t.grad for t in model.predictor.mask_tokens]
    assert grads[0] is not None and grads[1] is not None and grads[2] is None and grads[3] is None


def test_one_length_group_is_the_plain_forward():
    model = tiny_jepa()
    group = two_length_groups()[1]
    torch.testing.assert_close(model([group]).loss, model(group.x, group.mask_sets, group.mask_indices).loss)
    with pytest.raises(ValueError, match="one mask token index per set"):
        model([ClipGroup(group.x, group.mask_sets, [0])])


def rows(group: ClipGroup, picks: list[int]) -> ClipGroup:
    """Rows ``picks`` of ``group``: its clips and every mask (what one rank holds of a group of the global batch)."""
    sets = [([e[picks] for e in enc], [p[picks] for p in pred]) for enc, pred in group.mask_sets]
    return ClipGroup(group.x[picks], sets, group.mask_indices)


def test_rank_losses_weighted_by_their_share_of_each_length_average_to_the_one_process_loss(monkeypatch):
    """Two ranks simulated in one process: the global batch holds 1 short and 3 long clips; in grouped order
    (short, long, long, long) rank 0 takes rows 0 and 2, rank 1 rows 1 and 3, so rank 1 has no short clip. The mean
    of the ranks' weighted losses and gradients (what DDP averages) is one process's on the whole batch."""
    import jepa.training.ddp as ddp

    model = tiny_jepa(reg_coeff=0.5)  # the spread regulariser is a mean over samples too
    short, long = two_length_groups()
    one = model([short, long])
    one.loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    shares = {0: [rows(short, [0]), rows(long, [1])], 1: [rows(long, [0, 2])]}
    monkeypatch.setattr(ddp, "get_world_size", lambda: 2)
    # The all-reduce of the per-length clip counts: 1 short and 3 long over the two ranks.
    monkeypatch.setattr(ddp, "all_reduce_sum", lambda t: t.copy_(torch.tensor([1.0, 3.0], dtype=t.dtype)))
    weighted = ddp.GlobalGroupMean(model, [4, 8])
    losses, grads = [], []
    for rank in (0, 1):
        out = weighted(shares[rank])
        out.loss.backward()
        losses.append(out)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if rank == 1:  # no short clip: the short clips' mask token gets no gradient on this rank (DDP must know)
            assert model.predictor.mask_tokens[0].grad is None and model.predictor.mask_tokens[1].grad is not None
        model.zero_grad(set_to_none=True)
    for field in ("loss", "loss_pred", "loss_reg"):
        mean = (getattr(losses[0], field) + getattr(losses[1], field)) / 2
        torch.testing.assert_close(mean.detach(), getattr(one, field).detach(), rtol=0, atol=1e-6)
    assert set(grads[0]) == set(expected) and set(grads[1]) < set(expected)
    for name, g in expected.items():
        mean = (grads[0][name] + grads[1].get(name, torch.zeros_like(g))) / 2  # DDP's average, zeros where unused
        torch.testing.assert_close(mean, g, rtol=1e-4, atol=1e-6, msg=name)
    # An unweighted mean of the ranks' own losses is not the one-process loss (rank 1 would count its long clips
    # as the whole batch).
    plain = (model(shares[0]).loss + model(shares[1]).loss) / 2
    assert not torch.isclose(plain.detach(), one.loss.detach(), atol=1e-4)
    with pytest.raises(ValueError, match=r"of \[4, 8\] frames, got a group of shape \(1, 3, 6, 32, 32\)"):
        weighted([ClipGroup(torch.zeros(1, 3, 6, 32, 32), short.mask_sets, short.mask_indices)])


def test_without_a_process_group_the_weighted_loss_is_the_mean_over_groups():
    from jepa.training.ddp import GlobalGroupMean

    model = tiny_jepa()
    groups = two_length_groups()
    torch.testing.assert_close(GlobalGroupMean(model, [4, 8])(groups).loss, model(groups).loss, rtol=0, atol=1e-6)


# Frames at a target rate


def write_counter_video(path: Path, frames: int, rate: Fraction) -> Path:
    """An MP4 at ``rate`` whose frame ``k`` is flat grey ``8 * k`` (readable back through lossy H.264)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0"}
        for k in range(frames):
            image = np.full((32, 32, 3), 8 * k, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_fps_samples_frames_every_ceil_container_fps_floor_divided_by_the_target(tmp_path):
    video = write_counter_video(tmp_path / "ntsc.mp4", 30, Fraction(30000, 1001))  # 29.97 fps
    csv = tmp_path / "train.csv"
    csv.write_text(f"{video} 0\n")
    step = frame_step_for(30000 / 1001, frames_per_clip=4, fps=8)
    assert step == 30 // 8 == 3  # official: ceil(29.97) // 8; rounding 29.97 / 8 = 3.75 would give 4
    dataset = VideoDataset([csv], frames_per_clip=4, fps=8, random_clip_sampling=False, decoder="pyav")
    clip, _, _ = dataset[0]
    read = [round(float(f.float().mean()) / 8) for f in clip]
    start = (30 - 4 * step) // 2  # a centred clip (evaluation-style sampling)
    assert read == [start + k * step for k in range(4)]
    cfg = load_raw(tmp_path, tiny_raw(dataset_type="VideoDataset", datasets=[str(csv), str(csv)], root_path=None,
                                      fps=8, dataset_fpcs=[4, 2]))  # fmt: skip
    built, _ = builders.build_dataset_and_collator(cfg, 0)
    assert (built.fps, built.clip_lengths.tolist()) == (8.0, [4, 2])
    assert frame_step_for(25.0, frames_per_clip=16, fps=4) == 6 and frame_step_for(24.0, frames_per_clip=8, fps=50) == 1


# Training on two clip lengths


@pytest.fixture
def two_length_run(tmp_path, monkeypatch):
    monkeypatch.setattr(app.pretrain, "MOVING_DIGITS_VIDEOS", 12)
    raw = tiny_raw(root_path=str(tmp_path / "clips"))

    def config(name: str, *overrides: str) -> PretrainConfig:
        r = copy.deepcopy(raw)
        r["logging"]["folder"] = str(tmp_path / name)
        return load_raw(tmp_path, r, *overrides)

    return config


def test_a_two_length_run_trains_and_resumes_bit_identically(two_length_run):
    n = 7  # stopping at 2 and going on crosses epoch ends (3, 6) and a pass over the 24 samples (6 batches of 4)
    a = Pretrainer(two_length_run("a", "model.drop_path_rate=0.1"))
    assert isinstance(a.loader.collate_fn, MultiLengthMaskCollator) and len(a.dataset) == 24
    assert a.model.predictor.num_mask_tokens == 4 and a.model.encoder.num_frames == 8
    assert all(isinstance(g, LengthGroup) for g in next(iter(a.loader)))
    a.train(max_steps=n)
    Pretrainer(two_length_run("b", "model.drop_path_rate=0.1")).train(max_steps=2)
    b = Pretrainer(two_length_run("b", "model.drop_path_rate=0.1", "meta.load_checkpoint=true"))
    b.train(max_steps=n)
    for name in ("encoder", "predictor", "target_encoder"):
        assert_same(getattr(a.model, name).state_dict(), getattr(b.model, name).state_dict(), name)
    assert_same(a.optimizer.state_dict(), b.optimizer.state_dict(), "opt")
    _, rows_a = read_csv(Path(a.cfg.logging.folder) / "jepa_r0.csv")
    _, rows_b = read_csv(Path(b.cfg.logging.folder) / "jepa_r0.csv")
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b] and len(rows_a) == n
    tokens = a.model.predictor.mask_tokens
    assert tokens[0].abs().sum() > 0 and tokens[1].abs().sum() > 0  # one per length, trained
    assert tokens[2].abs().sum() == 0 and tokens[3].abs().sum() == 0  # spare, untouched (zero-initialised)


def test_one_distinct_length_takes_the_single_length_path(two_length_run):
    trainer = Pretrainer(two_length_run("s", "data.dataset_fpcs=[4, 4]"))
    assert type(trainer.loader.collate_fn) is MultiblockMaskCollator3D  # batches as without dataset_fpcs (DDP too)
    assert trainer.cfg.num_mask_tokens == 4 and len(trainer.dataset) == 24
    trainer.train(max_steps=1)
    assert [t.abs().sum() > 0 for t in trainer.model.predictor.mask_tokens] == [True, False, False, False]


def test_batches_mix_lengths(two_length_run):
    trainer = Pretrainer(two_length_run("c"))
    seen = set()
    for batch in trainer._batches(6):
        groups = builders.clip_groups(trainer.cfg, batch)
        seen |= {g.x.shape[2] for g in groups}
        assert sum(g.x.shape[0] for g in groups) == 4
        trainer.step += 1
    assert seen == {4, 8}


def test_sigreg_with_several_lengths_on_several_processes_is_refused(two_length_run):
    trainer = Pretrainer(two_length_run("r"))
    trainer.world_size = 2
    trainer.cfg.loss.sigreg_weight = 0.05
    with pytest.raises(ConfigError, match="loss.sigreg_weight 0.05 on 2 processes: SIGReg sums its statistics"):
        trainer._make_loader(trainer.dataset, trainer.loader.collate_fn, 0)


def test_persistent_workers_reach_the_loader_and_keep_the_batches(two_length_run):
    zero = Pretrainer(two_length_run("w0"))
    assert zero.loader.persistent_workers is False  # no workers: nothing to keep
    one = Pretrainer(two_length_run("w1", "data.num_workers=1"))
    assert one.loader.persistent_workers is True  # the default, as V-JEPA 2's
    steps = 8  # more than one pass over the data (6 batches)
    for trainer in (zero, one):
        trainer.seen = []
        for batch in trainer._batches(steps):
            trainer.seen.append([(g.length_index, g.batch[2].tolist(), [m.tolist() for m in g.masks_pred])
                                 for g in batch])  # fmt: skip
            trainer.step += 1
    assert zero.seen == one.seen


@pytest.mark.slow
def test_spare_mask_tokens_train_on_two_processes(tmp_path):
    # V-JEPA 2's layout leaves mask tokens without a gradient at every step, which DDP refuses unless told.
    csv = builders.video_annotation_files(load_raw(tmp_path, tiny_raw(root_path=str(tmp_path / "clips"))),
                                          moving_digits_videos=8)[0]  # fmt: skip
    raw = tiny_raw(dataset_type="VideoDataset", datasets=[csv, csv], dataset_fpcs=[4, 4], root_path=None)
    raw["logging"]["folder"] = str(tmp_path / "run")
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "app.main", "--fname", str(path), "--max-steps", "3", "--devices", "cpu", "cpu",
           "--set", "data.batch_size=2"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    latest = torch.load(tmp_path / "run" / "jepa-latest.pth.tar", map_location="cpu", weights_only=True)
    assert (latest["world_size"], latest["step"]) == (2, 3)
    tokens = [latest["predictor"][f"mask_tokens.{i}"].abs().sum().item() for i in range(4)]
    assert tokens[0] > 0 and tokens[1:] == [0.0, 0.0, 0.0]


def test_the_tiny_vjepa2_config_is_a_two_length_rope_run():
    cfg = load_pretrain_config(TINY_VJEPA2)
    assert cfg.data.clip_lengths == [4, 8] and cfg.model.use_rope and cfg.model.use_mask_tokens
    assert cfg.data.fps == 4 and cfg.data.dataset_type == "moving_digits"
    assert app.main.main(["--fname", str(TINY_VJEPA2), "--validate"]) == 0
