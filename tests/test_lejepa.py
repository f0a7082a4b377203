"""app: lejepa, LeJEPA's multi-view recipe in the shared trainer: views, the loss against its formula, gradients,
exact resume, the checkpoint through the loaders and the eval entry point, config errors."""

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import Subset

import app.pretrain
from app.pretrain import Pretrainer
from jepa.checkpoint import load_encoder, read_checkpoint
from jepa.config import ConfigError
from jepa.config.pretrain import load_pretrain_config, model_spec_from_config_dict
from jepa.config.strict import to_dict
from jepa.data.sampling import SeededDataset
from jepa.data.transforms import IMAGENET_NORMALIZATION
from jepa.image.multiview import MultiViewCollator, MultiViewTransform
from jepa.image.transforms import make_pretrain_transforms
from jepa.training.lejepa import LeJEPA, Projector, multiview_groups
from jepa.training.sigreg import SIGReg
from tests.conftest import EMBED_DIM, PATCH, make_encoder
from tests.test_engine import assert_same, read_csv

TINY = {
    "app": "lejepa",
    "data": {"dataset_type": "digits", "batch_size": 8, "crop_size": 32, "patch_size": 8, "num_workers": 0,
             "pin_mem": False},
    "lejepa": {"global_views": 2, "local_views": 2, "local_crop_size": 16, "projector_dims": [64, 32],
               "sigreg_directions": 16},
    "loss": {"lejepa_lambda": 0.1},
    "meta": {"seed": 0, "log_freq": 1},
    "model": {"model_name": None, "embed_dim": EMBED_DIM, "depth": 2, "num_heads": 3},
    "optimization": {"epochs": 2, "warmup": 1, "ipe": 3},
}  # fmt: skip
SMALL_DATA = 20  # 2 batches of 8 per pass over the data: passes and 3-step epochs end at different steps


def tiny_config(folder: Path, *overrides: str):
    raw = copy.deepcopy(TINY)
    raw["logging"] = {"folder": str(folder), "write_tag": "jepa"}
    path = folder.parent / f"{folder.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return load_pretrain_config(path, list(overrides))


def use_small_data(monkeypatch) -> None:
    build = app.pretrain.build_dataset_and_collator

    def small(cfg, seed):
        dataset, collator = build(cfg, seed)
        return Subset(dataset, range(SMALL_DATA)), collator

    monkeypatch.setattr(app.pretrain, "build_dataset_and_collator", small)


# -- views ------------------------------------------------------------------------------------------------------------
def image_views(*, global_views, local_views, crop_size, crop_scale, local_crop_size, local_crop_scale):
    global_crop = make_pretrain_transforms(crop_size=crop_size, crop_scale=crop_scale)
    local_crop = make_pretrain_transforms(crop_size=local_crop_size, crop_scale=local_crop_scale)
    return MultiViewTransform(global_crop, local_crop, global_views=global_views, local_views=local_views)


def coordinate_image(size: int = 240) -> Image.Image:
    """Red = column, green = row (0..size-1 scaled to 0..239), so a crop's pixels tell where it came from."""
    ramp = torch.arange(size) * 240 // size
    pixels = torch.stack([ramp.expand(size, size), ramp[:, None].expand(size, size), torch.zeros(size, size).long()])
    return Image.fromarray(pixels.permute(1, 2, 0).to(torch.uint8).numpy())


def crop_area(view: torch.Tensor, size: int = 240) -> float:
    """The area fraction of the source image that a normalised view ``[3, s, s]`` covers, read from its coordinates."""
    mean, std = (torch.tensor(v)[:, None, None] for v in IMAGENET_NORMALIZATION)
    pixels = (view * std + mean) * 255
    width = (pixels[0].max() - pixels[0].min()) * size / 240
    height = (pixels[1].max() - pixels[1].min()) * size / 240
    return float(width * height) / size**2


def test_views_have_their_sizes_and_crop_scales():
    transform = image_views(global_views=3, local_views=5, crop_size=32, crop_scale=(0.5, 1.0),
                                   local_crop_size=16, local_crop_scale=(0.05, 0.2))  # fmt: skip
    image = coordinate_image()
    for _ in range(4):
        global_views, local_views = transform(image)
        assert global_views.shape == (3, 3, 32, 32) and local_views.shape == (5, 3, 16, 16)
        # The resize blurs the edges by about a pixel of the view: a small tolerance on the measured areas.
        assert all(0.5 * 0.85 <= crop_area(v) <= 1.0 for v in global_views)
        assert all(0.05 * 0.7 <= crop_area(v) <= 0.2 * 1.1 for v in local_views)
        assert not torch.equal(global_views[0], global_views[1])  # independent crops
    assert len(image_views(global_views=2, local_views=0, crop_size=32, crop_scale=(0.3, 1.0),
                                  local_crop_size=16, local_crop_scale=(0.05, 0.3))(image)) == 1  # fmt: skip


def test_views_are_a_function_of_index_and_seed_and_groups_are_view_major():
    transform = image_views(global_views=2, local_views=3, crop_size=32, crop_scale=(0.3, 1.0),
                                   local_crop_size=16, local_crop_scale=(0.05, 0.3))  # fmt: skip
    images = [coordinate_image(), coordinate_image(200)]
    seeded = SeededDataset(_Transformed(images, transform))
    a, b = seeded[(1, 7)], seeded[(1, 7)]
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0], strict=True))
    assert not torch.equal(seeded[(1, 8)][0][0], a[0][0])
    collator = MultiViewCollator([32, 16], PATCH)
    batch = collator([seeded[(0, 3)], seeded[(1, 4)]])
    (views, _, seeds), masks_enc, masks_pred = batch
    assert seeds.tolist() == [3, 4] and [m.shape for m in masks_enc] == [(2, 16), (2, 4)]
    assert all(torch.equal(m[i], torch.arange(m.shape[1])) for m in masks_enc + masks_pred for i in range(2))
    groups = multiview_groups(batch)
    assert [g.x.shape for g in groups] == [(4, 3, 32, 32), (6, 3, 16, 16)]
    for group, kind in zip(groups, views, strict=True):
        count = kind.shape[1]
        for v in range(count):
            for s in range(2):
                assert torch.equal(group.x[v * 2 + s], kind[s, v])  # view v of sample s at row v * B + s
        (enc,), (pred,) = group.mask_sets[0]
        assert enc.shape == pred.shape == (count * 2, kind.shape[-1] ** 2 // PATCH**2)


class _Transformed:
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), 0, i


# -- the objective ----------------------------------------------------------------------------------------------------
def tiny_lejepa(norm="batch_norm", global_views=2, local_views=2, lam=0.3) -> LeJEPA:
    return LeJEPA(make_encoder(), Projector(EMBED_DIM, [64, 32], norm), global_views=global_views,
                  local_views=local_views, lejepa_lambda=lam, sigreg_directions=16, seed=3)  # fmt: skip


def random_groups(batch: int, global_views: int, local_views: int):
    views = [torch.randn(batch, global_views, 3, 32, 32)] + (
        [torch.randn(batch, local_views, 3, 16, 16)] if local_views else []
    )
    collator = MultiViewCollator([32, 16][: len(views)], PATCH)
    masks_enc, masks_pred = collator.sample_masks(batch, torch.Generator())
    return multiview_groups(((views, None, None), masks_enc, masks_pred))


def manual_loss(model: LeJEPA, groups, step: int, detach_centre: bool = False) -> torch.Tensor:
    """The paper's loss written out: every view encoded on its own, tokens mean-pooled, projected together."""
    V, L = model.global_views, model.local_views
    B = groups[0].x.shape[0] // V
    views = [groups[0].x[v * B : (v + 1) * B] for v in range(V)]
    if L:
        views += [groups[1].x[v * B : (v + 1) * B] for v in range(L)]
    pooled = torch.cat([model.encoder(x).mean(dim=1) for x in views])
    z = model.predictor(pooled).reshape(V + L, B, -1)
    centre = z[:V].mean(dim=0)
    if detach_centre:
        centre = centre.detach()
    pred = sum(((z[v] - centre) ** 2).sum() for v in range(V + L)) / z.numel()
    reference = SIGReg(16, seed=3)
    sigreg = sum(reference(z[v], step) for v in range(V + L)) / (V + L)
    return (1 - model.lejepa_lambda) * pred + model.lejepa_lambda * sigreg


@pytest.mark.parametrize("local_views", [0, 3])
@pytest.mark.parametrize("norm", ["batch_norm", "layer_norm"])
def test_loss_matches_the_formula_and_the_centre_carries_gradient(norm, local_views):
    model = tiny_lejepa(norm, global_views=2, local_views=local_views)
    groups = random_groups(6, 2, local_views)
    out = model(groups, step=5)
    expected = manual_loss(model, groups, step=5)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    assert out.loss_sigreg is not None and out.loss_sigreg > 0 and out.loss_pred > 0
    torch.testing.assert_close(out.loss, 0.7 * out.loss_pred + 0.3 * out.loss_sigreg)
    assert out.target_pooled.shape == (6, EMBED_DIM) and 0 <= out.position_share <= 1
    params = [p for p in model.parameters() if p.requires_grad]
    ours = torch.autograd.grad(out.loss, params)
    theirs = torch.autograd.grad(manual_loss(model, groups, step=5), params)
    stopped = torch.autograd.grad(manual_loss(model, groups, step=5, detach_centre=True), params)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # With global views only the centre is their mean, where the squared distances' gradient in the centre is 0;
    # with local views the centre is pulled towards them too, which a stop-gradient would lose.
    differs = [not torch.allclose(a, c, rtol=1e-3, atol=1e-6) for a, c in zip(ours, stopped, strict=True)]
    assert any(differs) == (local_views > 0)


def test_sigreg_directions_follow_the_step():
    model = tiny_lejepa(lam=1.0)
    groups = random_groups(6, 2, 2)
    with torch.no_grad():
        a, b, c = (model(groups, step=s).loss_sigreg for s in (1, 1, 2))
    assert a == b and a != c


def test_every_trainable_parameter_gets_a_gradient():
    model = tiny_lejepa()
    model(random_groups(6, 2, 2), step=0).loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not any(p.requires_grad for p in model.target_encoder.parameters())


def test_update_target_copies_the_encoder_whatever_the_momentum():
    model = tiny_lejepa()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    model.update_target(0.999)
    assert_same(model.target_encoder.state_dict(), model.encoder.state_dict())


def test_bad_view_groups_are_errors():
    model = tiny_lejepa(local_views=2)
    with pytest.raises(ValueError, match="2 view groups"):
        model(random_groups(4, 2, 0))
    with pytest.raises(ValueError, match="lejepa_lambda"):
        tiny_lejepa(lam=1.5)
    with pytest.raises(TypeError):
        LeJEPA(make_encoder(), Projector(EMBED_DIM, [8]), global_views=2, local_views=0, lejepa_lamda=0.1)


# -- in the trainer ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def completed_run(tmp_path_factory):
    """A whole tiny run (2 epochs of 3 steps) on 20 digits."""
    folder = tmp_path_factory.mktemp("lejepa") / "run"
    with pytest.MonkeyPatch.context() as mp:
        use_small_data(mp)
        trainer = Pretrainer(tiny_config(folder))
        summary = trainer.train()
    return folder, trainer, summary


def test_run_trains_logs_and_writes_the_official_layout(completed_run):
    folder, trainer, summary = completed_run
    assert isinstance(trainer.model, LeJEPA) and summary["steps"] == 6
    _, rows = read_csv(folder / "jepa_r0.csv")
    assert len(rows) == 6 and all(float(r["loss_sigreg"]) > 0 for r in rows)
    for r in rows:  # the logged loss is the trade-off of the logged terms
        expected = 0.9 * float(r["loss_pred"]) + 0.1 * float(r["loss_sigreg"])
        assert float(r["loss"]) == pytest.approx(expected, rel=1e-5)
    assert rows[0]["ctx_tokens"] == "16"  # all tokens of a 32 px global view in patches of 8
    ckpt = read_checkpoint(folder / "jepa-latest.pth.tar")
    assert {"encoder", "predictor", "target_encoder", "opt", "epoch", "config"} <= ckpt.keys()
    assert ckpt["config"]["app"] == "lejepa"
    assert_same(ckpt["target_encoder"], ckpt["encoder"], "target_encoder")
    assert_same(ckpt["predictor"], trainer.model.predictor.state_dict(), "predictor")
    for encoder in (
        load_encoder(folder / "jepa-latest.pth.tar", num_heads=3),  # the target encoder, from the weights' shapes
        load_encoder(ckpt, spec=model_spec_from_config_dict(ckpt["config"])),  # from the config it stores
    ):
        assert_same(encoder.state_dict(), trainer.model.encoder.state_dict(), "loaded encoder")


def test_exact_resume(tmp_path, monkeypatch):
    use_small_data(monkeypatch)
    n, stop = 5, 3  # stops at an epoch's end in the middle of the second pass over the data (2 batches a pass)
    a = Pretrainer(tiny_config(tmp_path / "a"))
    a.train(max_steps=n)
    Pretrainer(tiny_config(tmp_path / "b")).train(max_steps=stop)
    b = Pretrainer(tiny_config(tmp_path / "b", "meta.load_checkpoint=true"))
    b.train(max_steps=n)
    assert a.step == b.step == n
    for name in ("encoder", "predictor", "target_encoder"):  # the projector's batch-norm statistics too
        assert_same(getattr(a.model, name).state_dict(), getattr(b.model, name).state_dict(), name)
    assert_same(a.optimizer.state_dict(), b.optimizer.state_dict(), "opt")
    _, rows_a = read_csv(tmp_path / "a" / "jepa_r0.csv")
    _, rows_b = read_csv(tmp_path / "b" / "jepa_r0.csv")
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]


def test_checkpoint_runs_through_the_eval_entry_point(completed_run, tmp_path):
    from evals.main import main

    folder, _, _ = completed_run
    cfg = {
        "eval_name": "image_classification_frozen", "folder": str(tmp_path / "out"), "tag": "lejepa",
        "data": {"dataset_name": "digits", "num_classes": 10, "resolution": 32, "num_workers": 0, "pin_mem": False},
        "data_aug": {"auto_augment": False, "reprob": 0.0},
        "optimization": {"num_epochs": 1, "batch_size": 128},
        "pretrain": {"model_name": None, "embed_dim": EMBED_DIM, "depth": 2, "num_heads": 3, "patch_size": PATCH,
                     "folder": str(folder), "checkpoint": "jepa-latest.pth.tar", "checkpoint_key": "target_encoder"},
    }  # fmt: skip
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--fname", str(path)]) == 0
    summary = json.loads((tmp_path / "out" / "lejepa" / "results.json").read_text())
    assert summary["encoder_checkpoint"] == str(folder / "jepa-latest.pth.tar") and 0 <= summary["top1"] <= 100


# -- config -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lejepa.global_view=3", "global_views"),  # a misspelt key: named, with the closest valid one
        ("lejepa.local_crop_size=12", "lejepa.local_crop_size: got 12, expected a multiple of data.patch_size 8"),
        ("lejepa.local_crop_size=40", "at most data.crop_size 32"),
        ("lejepa.local_crop_scale=[0.0,0.3]", "local_crop_scale"),
        ("lejepa.projector_dims=[]", "projector_dims"),
        ("lejepa.projector_norm=group_norm", "projector_norm"),
        ("loss.lejepa_lambda=1.5", "lejepa_lambda"),
        ("loss.sigreg_weight=0.1", "weighs SIGReg by loss.lejepa_lambda"),
        ("meta.pretrained_checkpoint=x.pth", "starts from scratch or resumes its own run"),
        ("data.dataset_type=droid", "reads image or video data sets"),
    ],
)
def test_config_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        tiny_config(tmp_path / "run", override)


def test_one_view_is_an_error_and_keys_of_other_objectives_warn(tmp_path, caplog):
    with pytest.raises(ConfigError, match="one view per sample"):
        tiny_config(tmp_path / "run", "lejepa.global_views=1", "lejepa.local_views=0")
    with caplog.at_level(logging.WARNING):
        tiny_config(tmp_path / "run", "mask.num_pred_masks=3", "optimization.ema=[0.99,1.0]", "loss.target=online")
        tiny_config(tmp_path / "run", "app=ijepa", "lejepa.local_views=3")
    text = caplog.text
    assert "'mask.num_pred_masks' is set but not used" in text and "'optimization.ema' is set but not used" in text
    assert "'loss.target' is set but not used" in text and "'lejepa.local_views' is set but not used" in text


def test_shipped_recipe_validates():
    cfg = load_pretrain_config(Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "tiny_lejepa_cpu.yaml")
    assert cfg.app == "lejepa" and cfg.model.size == {"embed_dim": 96, "depth": 4, "num_heads": 4}
    assert cfg.optimization.epochs * (cfg.optimization.ipe or 0) == 600 and cfg.meta.dtype == "float32"


# -- clips ------------------------------------------------------------------------------------------------------------
CLIP_FRAMES = 4
TINY_CLIPS = ("data.dataset_type=moving_digits", f"data.num_frames={CLIP_FRAMES}", "data.sampling_rate=1",
              "data.tubelet_size=2", "data.batch_size=4")  # fmt: skip


def coordinate_clip(frames: int = CLIP_FRAMES, size: int = 240) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]``: red = column, green = row (as :func:`coordinate_image`), blue = 40 x the frame."""
    image = torch.from_numpy(np.array(coordinate_image(size)))
    clip = image.expand(frames, size, size, 3).clone()
    clip[..., 2] = 40 * torch.arange(frames)[:, None, None]
    return clip


def test_clip_views_keep_every_frame_under_one_crop_box():
    from jepa.video.transforms import VideoTrainTransform

    def crop(size, scale):
        return VideoTrainTransform(crop_size=size, random_resize_scale=scale, horizontal_flip=False)

    transform = MultiViewTransform(crop(32, (0.5, 1.0)), crop(16, (0.05, 0.2)), global_views=2, local_views=3)
    global_views, local_views = transform(coordinate_clip())
    assert global_views.shape == (2, 3, CLIP_FRAMES, 32, 32) and local_views.shape == (3, 3, CLIP_FRAMES, 16, 16)
    for view in [*global_views, *local_views]:
        for t in range(1, CLIP_FRAMES):  # the same box in every frame (columns and rows), the frames in order
            torch.testing.assert_close(view[:2, t], view[:2, 0])
            assert (view[2, t] > view[2, t - 1]).all()
    assert all(0.5 * 0.85 <= crop_area(v[:, 0]) <= 1.0 for v in global_views)
    assert all(0.05 * 0.7 <= crop_area(v[:, 0]) <= 0.2 * 1.1 for v in local_views)
    assert not torch.equal(global_views[0], global_views[1])


def test_clip_collator_keeps_every_tubelet_token():
    collator = MultiViewCollator([32, 16], 4, num_frames=8, tubelet_size=2)
    assert collator.tokens == [4 * 8 * 8, 4 * 4 * 4]
    with pytest.raises(ValueError, match="num_frames 6 is not a multiple of tubelet_size 4"):
        MultiViewCollator([32], 4, num_frames=6, tubelet_size=4)


def test_clip_config_builds_a_video_encoder_and_checks_its_keys(tmp_path, caplog):
    cfg = tiny_config(tmp_path / "run", *TINY_CLIPS)
    assert cfg.video_data and not cfg.is_video
    spec = cfg.model_spec()
    assert (spec.encoder.num_frames, spec.encoder.tubelet_size) == (CLIP_FRAMES, 2)
    assert model_spec_from_config_dict(to_dict(cfg)) == spec
    assert (
        not tiny_config(tmp_path / "run").video_data
        and tiny_config(tmp_path / "run").model_spec().encoder.num_frames == 1
    )
    with caplog.at_level(logging.WARNING):
        tiny_config(
            tmp_path / "run", *TINY_CLIPS, "data.use_color_distortion=true", "data_aug.random_resize_scale=[0.5,1.0]"
        )
    assert "'data.use_color_distortion' is set but not used" in caplog.text
    assert "'data_aug.random_resize_scale' is set but not used" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the clip views' crop keys are read
        tiny_config(tmp_path / "run", *TINY_CLIPS, "data.crop_scale=[0.5,1.0]", "data.use_horizontal_flip=true")
    assert "crop_scale" not in caplog.text and "use_horizontal_flip" not in caplog.text
    # One length given per entry, the same length: the stored config still gives this run's spec (one mask token).
    same_length = tiny_config(tmp_path / "run", *TINY_CLIPS, f"data.dataset_fpcs=[{CLIP_FRAMES},{CLIP_FRAMES}]")
    assert model_spec_from_config_dict(to_dict(same_length)) == same_length.model_spec()
    with pytest.raises(ConfigError, match="num_frames 5 is not a multiple of tubelet_size 2"):
        tiny_config(tmp_path / "run", *TINY_CLIPS, "data.num_frames=5")
    with pytest.raises(
        ConfigError, match="data.dataset_fpcs: got \\[2, 4\\], but app lejepa takes one clip of one length"
    ):
        tiny_config(tmp_path / "run", *TINY_CLIPS, "data.dataset_fpcs=[2,4]")
    with pytest.raises(ConfigError, match="data.num_clips: got 2"):
        tiny_config(tmp_path / "run", *TINY_CLIPS, "data.num_clips=2")
    with pytest.raises(ConfigError, match="set data.dataset_type: VideoDataset or remove data.datasets"):
        tiny_config(tmp_path / "run", "data.datasets=[clips.csv]")


def test_clip_data_wires_the_crop_keys_and_the_checks_and_probe_read_clips(tmp_path, monkeypatch):
    from jepa.config.checks import check_paths
    from jepa.training.builders import build_dataset_and_collator
    from jepa.training.online_probe import probe_splits
    from jepa.video.datasets import VideoDataset

    cfg = tiny_config(tmp_path / "run", *TINY_CLIPS, f"data.root_path={tmp_path / 'digits'}",
                      "data.crop_scale=[0.6,0.9]", "lejepa.local_crop_scale=[0.1,0.2]")  # fmt: skip
    dataset, collator = build_dataset_and_collator(cfg, 0, moving_digits_videos=8)
    transform = dataset.transform
    assert (transform.global_crop.scale, transform.local_crop.scale) == ([0.6, 0.9], [0.1, 0.2])
    assert (transform.global_crop.crop_size, transform.local_crop.crop_size) == (32, 16)
    assert collator.tokens == [2 * 4 * 4, 2 * 2 * 2]  # 2 tubelets in time x (32 / 8)^2 and (16 / 8)^2 patches
    (global_views, local_views), _label = dataset.load(0)
    assert global_views.shape == (2, 3, CLIP_FRAMES, 32, 32) and local_views.shape == (2, 3, CLIP_FRAMES, 16, 16)
    splits = probe_splits(cfg)  # the online probe reads the generated clips' labelled val split
    assert splits is not None and isinstance(splits.val, VideoDataset)
    missing = tiny_config(tmp_path / "run", *TINY_CLIPS[1:], "data.dataset_type=VideoDataset",
                          f"data.datasets=[{tmp_path / 'absent.csv'}]")  # fmt: skip
    with pytest.raises(ConfigError, match="absent.csv"):
        check_paths(missing)


def test_clip_run_trains_on_video_and_its_checkpoint_loads_as_a_video_encoder(tmp_path, monkeypatch):
    monkeypatch.setattr(app.pretrain, "MOVING_DIGITS_VIDEOS", 8)
    folder = tmp_path / "run"
    trainer = Pretrainer(tiny_config(folder, *TINY_CLIPS, f"data.root_path={tmp_path / 'digits'}"))
    summary = trainer.train(max_steps=2)
    assert summary["steps"] == 2 and trainer.model.encoder.is_video
    _, rows = read_csv(folder / "jepa_r0.csv")
    # Every token of a 4-frame 32 px global view: 2 tubelets in time x 4 x 4 patches of 8.
    assert rows[0]["ctx_tokens"] == str(2 * 4 * 4) and all(float(r["loss_sigreg"]) > 0 for r in rows)
    ckpt = read_checkpoint(folder / "jepa-latest.pth.tar")
    encoder = load_encoder(ckpt, spec=model_spec_from_config_dict(ckpt["config"]))
    assert encoder.is_video and encoder.num_frames == CLIP_FRAMES
    assert_same(encoder.state_dict(), trainer.model.encoder.state_dict(), "loaded encoder")


def test_shipped_clip_recipe_validates():
    cfg = load_pretrain_config(
        Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "tiny_lejepa_video_cpu.yaml"
    )
    assert cfg.app == "lejepa" and cfg.video_data and cfg.model.size == {"embed_dim": 96, "depth": 4, "num_heads": 4}
    assert cfg.optimization.epochs * (cfg.optimization.ipe or 0) == 600 and cfg.meta.dtype == "float32"
    assert not cfg.data.use_horizontal_flip  # one flip per view would swap a clip's left and right motion
    assert cfg.loss.lejepa_lambda == 0.2  # the trade-off measured best on moving digits and shape clips (README)
