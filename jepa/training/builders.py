"""What a pretraining config builds: encoder and predictor, the training set and its mask collator, the mask sets a
batch feeds the JEPA module, the loss and the schedules. ``app.pretrain`` wires them into its trainer; the
benchmarks use them directly."""

from pathlib import Path
from typing import Literal

from torch import Tensor

from jepa.config import PretrainConfig
from jepa.config.pretrain import ImageMaskConfig, OptimizationConfig
from jepa.data.sampling import MapDataset
from jepa.masks.collate import MaskCollator
from jepa.models import VisionTransformer, VisionTransformerPredictor
from jepa.models.builder import build_models_from_spec
from jepa.training.meta_arch import MaskSet
from jepa.training.schedules import Schedules

MOVING_DIGITS_VIDEOS = 2000  # clips generated for `dataset_type: moving_digits` (about 20 s, once)


def build_models(cfg: PretrainConfig) -> tuple[VisionTransformer, VisionTransformerPredictor]:
    """Encoder and predictor as the config describes them (its model spec, through the one builder)."""
    return build_models_from_spec(cfg.model_spec())


def build_dataset_and_collator(
    cfg: PretrainConfig, seed: int, *, moving_digits_videos: int = MOVING_DIGITS_VIDEOS
) -> tuple[MapDataset, MaskCollator]:
    """The training set (samples end with their index) and the mask collator of the config's modality;
    ``moving_digits_videos``: the clips a ``moving_digits`` data set generates (see :func:`video_annotation_files`)."""
    if cfg.is_video:
        return _video_data(cfg, seed, moving_digits_videos)
    return _image_data(cfg, seed)


def _image_data(cfg: PretrainConfig, seed: int) -> tuple[MapDataset, MaskCollator]:
    from jepa.image.datasets import make_image_dataset
    from jepa.image.masks import MultiblockMaskCollator2D
    from jepa.image.transforms import make_pretrain_transforms

    d = cfg.data
    transform = make_pretrain_transforms(
        crop_size=d.crop_size,
        crop_scale=d.crop_scale,
        horizontal_flip=d.use_horizontal_flip,
        color_distortion=d.use_color_distortion,
        color_jitter=d.color_jitter_strength,
        gaussian_blur=d.use_gaussian_blur,
    )
    dataset = make_image_dataset(
        d.dataset_type,
        root_path=d.root_path,
        image_folder=d.image_folder,
        split="train",
        transform=transform,
        image_size=d.crop_size,
        seed=seed,
        on_error="random",  # a random stand-in, not the neighbour, which would get double weight
        max_bad_fraction=d.max_bad_fraction,
    )
    assert isinstance(cfg.mask, ImageMaskConfig)  # an ijepa config holds one mask mapping (PretrainConfig checks it)
    collator = MultiblockMaskCollator2D(cfg.mask, input_size=d.crop_size, patch_size=d.patch_size, seed=seed)
    return dataset, collator


def video_annotation_files(
    cfg: PretrainConfig, split: Literal["train", "val"] = "train", *, moving_digits_videos: int = MOVING_DIGITS_VIDEOS
) -> list[str]:
    """The annotation CSVs of a video config; ``moving_digits`` generates its clips (once) under ``root_path``:
    ``moving_digits_videos`` for the train split, a quarter of them for the val split."""
    d = cfg.data
    if d.dataset_type.lower() != "moving_digits":
        if not d.datasets:
            raise ValueError("data.datasets lists no annotation CSV files")
        return list(d.datasets)
    from jepa.video.moving_digits import make_moving_digits

    root = Path(d.root_path or "runs/data/moving_digits") / f"{d.num_frames * d.sampling_rate}f_{d.crop_size}px"
    videos = moving_digits_videos if split == "train" else moving_digits_videos // 4
    csv = make_moving_digits(
        root, num_videos=videos, num_frames=d.num_frames * d.sampling_rate, size=d.crop_size, split=split
    )
    return [str(csv)]


def _video_data(cfg: PretrainConfig, seed: int, moving_digits_videos: int) -> tuple[MapDataset, MaskCollator]:
    from jepa.video.datasets import VideoDataset
    from jepa.video.masks import MultiblockMaskCollator3D
    from jepa.video.transforms import VideoTrainTransform

    d, aug = cfg.data, cfg.data_aug
    transform = VideoTrainTransform(
        crop_size=d.crop_size,
        random_resize_scale=aug.random_resize_scale,
        random_resize_aspect_ratio=aug.random_resize_aspect_ratio,
        horizontal_flip=True,
        motion_shift=aug.motion_shift,
        auto_augment=aug.auto_augment,
        reprob=aug.reprob,
    )
    dataset = VideoDataset(
        video_annotation_files(cfg, moving_digits_videos=moving_digits_videos),
        datasets_weights=d.datasets_weights,
        frames_per_clip=d.num_frames,
        frame_step=d.sampling_rate,
        duration=d.clip_duration,
        num_clips=d.num_clips,
        random_clip_sampling=True,
        filter_short_videos=d.filter_short_videos,
        transform=transform,
        decoder=d.decoder,
        seed=seed,
        on_error="random",  # a random stand-in, not the neighbour, which would get double weight
        max_bad_fraction=d.max_bad_fraction,
    )
    assert isinstance(cfg.mask, list)  # a vjepa config holds a list of mask configs (PretrainConfig checks it)
    collator = MultiblockMaskCollator3D(
        cfg.mask, crop_size=d.crop_size, num_frames=d.num_frames, patch_size=d.patch_size,
        tubelet_size=d.tubelet_size, seed=seed,
    )  # fmt: skip
    return dataset, collator


def mask_sets(cfg: PretrainConfig, masks_enc: list[Tensor], masks_pred: list[Tensor]) -> list[MaskSet]:
    """Pair a batch's masks as the JEPA module takes them: I-JEPA has one set (its context masks with all its
    target masks); V-JEPA has one (context, target) pair per mask config, set ``i`` using mask token ``i``."""
    if cfg.is_video:
        return [([e], [p]) for e, p in zip(masks_enc, masks_pred, strict=True)]
    return [(masks_enc, masks_pred)]


def loss_type_for(cfg: PretrainConfig) -> str:
    """The prediction loss: the config's, or for ``auto`` the paper's (``l1`` for V-JEPA, ``smooth_l1`` for
    I-JEPA)."""
    if cfg.loss.loss_type != "auto":
        return cfg.loss.loss_type
    return "l1" if cfg.is_video else "smooth_l1"


def pretrain_schedules(opt: OptimizationConfig, ipe: int) -> Schedules:
    """The LR, weight-decay and EMA schedules of ``optimization`` for epochs of ``ipe`` iterations."""
    return Schedules(
        ipe=ipe,
        epochs=opt.epochs,
        ipe_scale=opt.ipe_scale,
        warmup_epochs=opt.warmup,
        start_lr=opt.start_lr,
        lr=opt.lr,
        final_lr=opt.final_lr,
        weight_decay=opt.weight_decay,
        final_weight_decay=opt.final_weight_decay,
        ema=opt.ema,
    )
