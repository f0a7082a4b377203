"""Pretraining config: one schema for I-JEPA (images) and V-JEPA (video).

The sections and key names are the official V-JEPA ones; official I-JEPA files (no ``app``, a single ``mask``
mapping, the model named under ``meta``) are recognised and mapped onto the same schema, so both load unchanged.
"""

import copy
import dataclasses
import difflib
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from jepa.config.spec import VIT_SIZES, EncoderSpec, ModelSpec, PredictorSpec
from jepa.config.strict import (
    ConfigError,
    D,
    apply_overrides,
    check_choice,
    check_range,
    from_dict,
    ignored,
    read_yaml_sections,
    refuse_folder_keys,
    require,
    set_fields,
    to_dict,
    warn_unused,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

logger = logging.getLogger(__name__)

Pair = tuple[float, float]

IMAGE_DATASET_TYPES = ("ImageFolder", "imagenet", "digits", "mnist5k")  # jepa.image.datasets.make_image_dataset
VIDEO_DATASET_TYPES = ("VideoDataset", "moving_digits")  # app.pretrain.video_annotation_files
# app vjepa_droid (jepa.worldmodel): DROID-layout trajectories listed in data.datasets, or the generated toy world.
WORLD_DATASET_TYPES = ("droid", "toy_world")
BUILTIN_IMAGES = ("digits", "mnist5k")


def reads_clips(app: str, dataset_type: str) -> bool:
    """Whether the encoder of ``app`` trains on clips ``[B, C, T, H, W]``: the masked video apps always, app lejepa
    when ``data.dataset_type`` is a video data set (its views are then crops of a clip); not the world model, whose
    frozen encoder has its own spec."""
    if app in VIDEO_APPS:
        return True
    return app == "lejepa" and dataset_type.lower() in {k.lower() for k in VIDEO_DATASET_TYPES}


# The apps of masked video pretraining (V-JEPA, V-JEPA 2; V-JEPA 2.1 adds images in the same run).
VIDEO_APPS = ("vjepa", "vjepa_2_1")
_INT_MIN = "an int >= 1"
_DEFAULT_FRAMES = 16  # DataConfig.num_frames
_DEFAULT_FRAME_STEP = 4  # the frame step when no spacing is set (the official V-JEPA default)


@dataclass(kw_only=True)
class DataConfig:
    """Where samples come from and how a batch is shaped."""

    # ImageFolder | imagenet | digits | mnist5k | VideoDataset | moving_digits | droid | toy_world (app vjepa_droid;
    # a vjepa_droid file that leaves dataset_type out reads DROID trajectories, as the official ones do)
    dataset_type: str = "ImageFolder"
    root_path: str | None = None  # ImageFolder: root_path / image_folder / train; moving_digits: where clips go
    image_folder: str | None = None
    datasets: list[str] = field(default_factory=list)  # video annotation CSVs
    # Labelled held-out annotation CSVs for the online probe (meta.eval_freq) of a VideoDataset run.
    val_datasets: list[str] | None = None
    datasets_weights: list[float] | None = None
    batch_size: int = 64  # per device
    crop_size: int = 224
    crop_scale: Pair = (0.3, 1.0)
    patch_size: int = 16
    num_frames: int = 16  # with dataset_fpcs: their largest (what the model is built for)
    tubelet_size: int = 2
    # How a clip's frames are spaced: at most one of a fixed step (sampling_rate, 4 when none is set), a target frame
    # rate (fps, V-JEPA 2: step = ceil(video fps) // fps per video) or a clip duration in seconds; see frame_step.
    sampling_rate: int | None = None
    fps: float | None = None
    clip_duration: float | None = None
    # V-JEPA 2: frames per clip of each entry of datasets, so that one run trains on clips of several lengths (the
    # samples of a batch are grouped by length, each group with its own masks; jepa.video.masks.MultiLengthMaskCollator)
    dataset_fpcs: list[int] | None = None
    num_clips: int = 1
    filter_short_videos: bool = False
    # Stop when more than this fraction of the distinct files a process tried could not be read (each bad one is
    # replaced by a random readable sample, counted and listed in <folder>/<write_tag>_bad_samples_r<rank>.tsv).
    max_bad_fraction: float = 0.5
    decoder: Literal["auto", "decord", "pyav"] = "auto"
    decode_one_clip: bool = ignored(True, "clips are always decoded one at a time")
    num_workers: int = 4
    # Keep the loader's worker processes between passes over the data (what V-JEPA 2 does when the key is absent):
    # no restart cost per pass; batches stay the same, since every sample and mask is seeded by itself.
    persistent_workers: bool = True
    pin_mem: bool = True
    use_horizontal_flip: bool = False
    use_color_distortion: bool = False
    color_jitter_strength: float = 0.0
    use_gaussian_blur: bool = False
    # app vjepa_droid: the metadata keys of the recordings a trajectory's clip is drawn from (one at random).
    camera_views: list[str] = field(default_factory=lambda: ["left_mp4_path"])
    stereo_view: bool = ignored(False, "the official DROID loader reads it but never uses it")

    def __post_init__(self) -> None:
        check_choice("dataset_type", self.dataset_type, IMAGE_DATASET_TYPES + VIDEO_DATASET_TYPES + WORLD_DATASET_TYPES)
        require(len(self.camera_views) >= 1, "camera_views", self.camera_views, "at least one metadata key")
        for name in ("batch_size", "crop_size", "patch_size", "num_frames", "tubelet_size", "num_clips"):
            require(getattr(self, name) >= 1, name, getattr(self, name), _INT_MIN)
        require(self.sampling_rate is None or self.sampling_rate >= 1, "sampling_rate", self.sampling_rate,
                "null or a frame step >= 1")  # fmt: skip
        require(self.fps is None or self.fps > 0, "fps", self.fps, "null or frames per second > 0")
        spacing = [k for k in ("sampling_rate", "fps", "clip_duration") if getattr(self, k) is not None]
        if len(spacing) > 1:
            raise ConfigError(
                f"{' and '.join(spacing)} are both set ({', '.join(f'{k}={getattr(self, k)!r}' for k in spacing)}): "
                "a clip's frames are spaced by one of a frame step, a target frame rate or a duration; remove one"
            )
        self._resolve_clip_lengths()
        require(self.num_workers >= 0, "num_workers", self.num_workers, "an int >= 0 (0: load in the main process)")
        # After the bounds: patch_size is >= 1 here.
        if self.crop_size % self.patch_size:
            raise ConfigError(f"crop_size {self.crop_size} is not a multiple of patch_size {self.patch_size}")
        check_range("crop_scale", self.crop_scale, 0.0, 1.0, lo_open=True)
        require(self.clip_duration is None or self.clip_duration > 0, "clip_duration", self.clip_duration,
                "null or seconds > 0")  # fmt: skip
        require(self.color_jitter_strength >= 0, "color_jitter_strength", self.color_jitter_strength, ">= 0")
        require(0 <= self.max_bad_fraction <= 1, "max_bad_fraction", self.max_bad_fraction, "a fraction in [0, 1]")
        if self.datasets_weights is not None:
            if len(self.datasets_weights) != len(self.datasets):
                raise ConfigError(
                    f"datasets_weights has {len(self.datasets_weights)} entries for {len(self.datasets)} datasets"
                )
            require(all(w >= 0 for w in self.datasets_weights) and sum(self.datasets_weights) > 0,
                    "datasets_weights", self.datasets_weights, "weights >= 0 with a positive sum")  # fmt: skip

    def _resolve_clip_lengths(self) -> None:
        """With ``dataset_fpcs``: every length a positive multiple of ``tubelet_size``, and ``num_frames`` their
        largest (set here when the file leaves it at its default, an error when it names another)."""
        if self.dataset_fpcs is None:
            return
        fpcs = self.dataset_fpcs
        require(len(fpcs) >= 1, "dataset_fpcs", fpcs, "null or one frames-per-clip per entry of datasets")
        for i, fpc in enumerate(fpcs):
            require(fpc >= self.tubelet_size and fpc % self.tubelet_size == 0, f"dataset_fpcs[{i}]", fpc,
                    f"a positive multiple of tubelet_size {self.tubelet_size}")  # fmt: skip
        if self.num_frames not in (_DEFAULT_FRAMES, max(fpcs)):
            raise ConfigError(
                f"num_frames {self.num_frames} differs from the longest clip of dataset_fpcs {fpcs} ({max(fpcs)}), "
                "the length the model is built for: remove num_frames or set it to that"
            )
        self.num_frames = max(fpcs)

    @property
    def frame_step(self) -> int | None:
        """The fixed frame step within a clip (``sampling_rate``, 4 when no spacing is set); None when ``fps`` or
        ``clip_duration`` picks one per video."""
        if self.fps is not None or self.clip_duration is not None:
            return None
        return self.sampling_rate or _DEFAULT_FRAME_STEP

    @property
    def clip_lengths(self) -> list[int]:
        """The distinct clip lengths in frames, in ``dataset_fpcs`` order of first appearance (``[num_frames]``
        without it): index ``i`` is the length group ``i`` of a batch."""
        return list(dict.fromkeys(self.dataset_fpcs or [self.num_frames]))


@dataclass(kw_only=True)
class DataAugConfig:
    """Video augmentation (V-JEPA); image augmentation switches live in ``data`` as in I-JEPA's files."""

    auto_augment: bool = False
    motion_shift: bool = False
    random_resize_aspect_ratio: Pair = (0.75, 1.35)
    random_resize_scale: Pair = (0.3, 1.0)
    reprob: float = 0.0
    # The official DROID config's switch; app vjepa_droid resizes frames without augmentation (jepa.worldmodel.data).
    horizontal_flip: bool = False

    def __post_init__(self) -> None:
        check_range("random_resize_aspect_ratio", self.random_resize_aspect_ratio, 0.0, math.inf, lo_open=True)
        # Above 1 only in the DROID config (app vjepa_droid, which does not crop); app vjepa checks <= 1.
        check_range("random_resize_scale", self.random_resize_scale, 0.0, math.inf, lo_open=True)
        require(0 <= self.reprob <= 1, "reprob", self.reprob, "a probability in [0, 1]")


@dataclass(kw_only=True)
class ImageMaskConfig:
    """I-JEPA multiblock masks: ``num_pred_masks`` target blocks and ``num_enc_masks`` context blocks per image.

    The spec :class:`jepa.image.masks.MultiblockMaskCollator2D` draws from, as it is: its bounds are checked here
    only (the collator adds the one rule that needs its token grid, ``min_keep`` at most the grid's size).

    Attributes:
        allow_overlap: keep target cells in the context blocks (else they are cut out of each context block).
        aspect_ratio: range of the target blocks' height / width, drawn log-uniformly; context blocks are square.
        enc_mask_scale: range of the fraction of the grid one context block covers (before the targets are cut).
        pred_mask_scale: range of the fraction of the grid one target block covers.
        min_keep: fewest tokens a block may keep (a context block after the targets are cut).
        num_enc_masks: context blocks per image (the official collator's ``nenc``).
        num_pred_masks: target blocks per image (the official collator's ``npred``).
    """

    allow_overlap: bool = False
    aspect_ratio: Pair = (0.75, 1.5)
    enc_mask_scale: Pair = (0.85, 1.0)
    pred_mask_scale: Pair = (0.15, 0.2)
    min_keep: int = 10
    num_enc_masks: int = 1
    num_pred_masks: int = 4
    patch_size: int | None = None  # I-JEPA keeps the patch size here; it must agree with data.patch_size

    def __post_init__(self) -> None:
        # A block of scale 0 holds no token.
        check_range("enc_mask_scale", self.enc_mask_scale, 0.0, 1.0, lo_open=True)
        check_range("pred_mask_scale", self.pred_mask_scale, 0.0, 1.0, lo_open=True)
        check_range("aspect_ratio", self.aspect_ratio, 0.0, math.inf, lo_open=True)
        require(self.min_keep >= 1, "min_keep", self.min_keep, _INT_MIN)
        require(self.num_enc_masks >= 1, "num_enc_masks", self.num_enc_masks, _INT_MIN)
        require(self.num_pred_masks >= 1, "num_pred_masks", self.num_pred_masks, _INT_MIN)
        require(self.patch_size is None or self.patch_size >= 1, "patch_size", self.patch_size, "null or an int >= 1")


@dataclass(kw_only=True)
class VideoMaskConfig:
    """One V-JEPA multiblock 3D mask config (a batch uses several, each with its own predictor mask token).

    The spec :class:`jepa.video.masks.MultiblockMaskCollator3D` draws one mask set from, as it is: its bounds are
    checked here only.

    Attributes:
        aspect_ratio: range of a block's height / width (drawn log-uniformly).
        num_blocks: blocks per sample; their union is the target.
        spatial_scale: range of the fraction of the ``H x W`` plane one block covers.
        temporal_scale: range of the fraction of the ``T`` time steps one block spans.
        max_temporal_keep: the context only holds tokens of the first ``max(1, int(max_temporal_keep * T))`` time
            steps.
        max_keep: if not None, at most this many context tokens per sample (the first ones in index order).
        full_complement: the target is every token outside the (truncated) context, as in V-JEPA 2's collator,
            instead of the blocks (plus the steps past ``max_temporal_keep``) truncated to the batch's shortest.
    """

    aspect_ratio: Pair = (0.75, 1.5)
    num_blocks: int = 8
    spatial_scale: Pair = (0.15, 0.15)
    temporal_scale: Pair = (1.0, 1.0)
    max_temporal_keep: float = 1.0
    max_keep: int | None = None
    full_complement: bool = False

    def __post_init__(self) -> None:
        check_range("spatial_scale", self.spatial_scale, 0.0, 1.0, lo_open=True)
        check_range("temporal_scale", self.temporal_scale, 0.0, 1.0, lo_open=True)
        check_range("aspect_ratio", self.aspect_ratio, 0.0, math.inf, lo_open=True)
        require(self.num_blocks >= 1, "num_blocks", self.num_blocks, _INT_MIN)
        require(0 < self.max_temporal_keep <= 1, "max_temporal_keep", self.max_temporal_keep, "a fraction in (0, 1]")
        require(self.max_keep is None or self.max_keep >= 1, "max_keep", self.max_keep, "null or an int >= 1")


# How images and video share a run (app vjepa_2_1): some ranks on each, as officially, both in every step of one
# process (the same gradient), or interleaved steps.
ImageMix = Literal["auto", "ranks", "accumulate", "interleave"]


@dataclass(kw_only=True)
class ImageDataConfig:
    """V-JEPA 2.1's image data (``img_data``): images trained as 1-frame clips through the encoder's tubelet-1
    tokenizer (``model.img_temporal_dim_size: 1``), with their own crop size, batch size and masks (``img_mask``).

    The data sources are ours, as in ``data`` (``dataset_type`` ImageFolder / imagenet with ``root_path`` and
    ``image_folder``, or the built-in digits / mnist5k); ``datasets`` and ``datasets_weights`` are the official
    loader's paths and are not read. ``mix`` picks how images and video share the run (see
    :attr:`PretrainConfig.image_mix`): ``ranks`` (official) trains the first ``int(world_size * rank_ratio)`` ranks on
    images and the others on video, DDP averaging their gradients; ``accumulate`` gives every step of every rank one
    image batch and one video batch, the step's loss being ``rank_ratio`` x the image loss + ``(1 - rank_ratio)`` x
    the video loss (the gradient the ranks mix averages, in one process: one GPU or a laptop; a share of 0 or 1
    reads only the other modality); ``interleave`` runs image steps on every rank, step ``i`` being one iff
    ``floor((i + 1) * rank_ratio) > floor(i * rank_ratio)`` (cheaper steps, each modality fewer of them);
    ``auto`` is ``ranks`` when that gives at least one image rank and one video rank, else ``accumulate``.
    """

    dataset_type: str = "imagenet"
    root_path: str | None = None
    image_folder: str | None = None
    datasets: list[str] = field(default_factory=list)
    datasets_weights: list[float] | None = None
    dataset_fpcs: list[int] = field(default_factory=lambda: [1])
    # per image rank (ranks), per rank and step (accumulate), per rank on an image step (interleave)
    batch_size: int = 64
    crop_size: int = 512
    crop_scale: Pair = (0.3, 1.0)  # the random resized crop's area (official: data_aug.random_resize_scale's default)
    rank_ratio: float = 0.25
    num_workers: int | None = None  # default: data.num_workers
    mix: ImageMix = "auto"

    def __post_init__(self) -> None:
        check_choice("dataset_type", self.dataset_type, IMAGE_DATASET_TYPES)
        require(self.batch_size >= 1, "batch_size", self.batch_size, _INT_MIN)
        require(self.crop_size >= 1, "crop_size", self.crop_size, _INT_MIN)
        require(self.dataset_fpcs == [1], "dataset_fpcs", self.dataset_fpcs,
                "[1] (images are 1-frame clips through the tubelet-1 tokenizer)")  # fmt: skip
        # 0 and 1 (video or images only, the same model) are the learning check's one-modality baselines.
        require(0 <= self.rank_ratio <= 1, "rank_ratio", self.rank_ratio,
                "a share in [0, 1] of the ranks (ranks), of the loss (accumulate) or of the steps (interleave) on "
                "images")  # fmt: skip
        require(self.num_workers is None or self.num_workers >= 0, "num_workers", self.num_workers,
                "null (data.num_workers) or an int >= 0")  # fmt: skip
        check_range("crop_scale", self.crop_scale, 0.0, 1.0, lo_open=True)
        kind = self.dataset_type.lower()
        if kind in BUILTIN_IMAGES:
            refuse_folder_keys("", set_fields(self), "dataset_type", self.dataset_type, "train")
            for key in sorted(set_fields(self) & {"datasets", "datasets_weights"}):
                warn_unused(f"img_data.{key}", f"dataset_type {self.dataset_type} is built in and reads no folder")
            return
        if self.root_path is None:
            # An official file names its image folder in datasets; ours reads root_path / image_folder / train.
            if len(self.datasets) != 1:
                raise ConfigError(
                    f"root_path: required for dataset_type {self.dataset_type} (the image folder), or one folder in "
                    f"datasets (got {len(self.datasets)})"
                )
            self.root_path = self.datasets[0]
            logger.info("img_data.root_path: %s, the folder img_data.datasets names", self.root_path)
        elif self.datasets:
            warn_unused("img_data.datasets", "img_data.root_path names the image folder")
        if self.datasets_weights is not None and len(self.datasets_weights) > 1:
            warn_unused("img_data.datasets_weights", "one image folder is read")


@dataclass(kw_only=True)
class DistillationConfig:
    """V-JEPA 2.1's distillation: a frozen teacher encoder supplies the regression targets instead of the EMA target
    encoder, with the same data, masks and loop; the student's predictor outputs the teacher's width.

    Attributes:
        teacher_checkpoint: the teacher's file (a training checkpoint of ours or an official one); null: no teacher.
        teacher_key: the entry of that file holding the teacher (``target_encoder``, ``encoder`` or
            ``ema_encoder``).
        teacher_release: the teacher's architecture as a hub release (``vjepa2_1_vit_gigantic_384``, ...;
            :mod:`jepa.hub`); null: the config stored in ``teacher_checkpoint`` (a checkpoint of ours).
    """

    teacher_checkpoint: str | None = None
    teacher_key: Literal["target_encoder", "encoder", "ema_encoder"] = "target_encoder"
    teacher_release: str | None = None
    # The width of the teacher's targets (its levels x its width): null here, filled in from the teacher when the
    # run starts, so that the config a checkpoint stores describes the student's predictor; given, it must agree.
    teacher_embed_dim: int | None = None

    def __post_init__(self) -> None:
        require(self.teacher_checkpoint != "", "teacher_checkpoint", self.teacher_checkpoint, "null or a path")
        require(self.teacher_embed_dim is None or self.teacher_embed_dim >= 1, "teacher_embed_dim",
                self.teacher_embed_dim, "null (read from the teacher) or an int >= 1")  # fmt: skip
        if self.teacher_checkpoint is None:
            for key in sorted(set_fields(self)):
                warn_unused(f"distillation.{key}", "distillation.teacher_checkpoint is null (no teacher)")

    @property
    def enabled(self) -> bool:
        return self.teacher_checkpoint is not None


def encoder_size(model_name: str | None, embed_dim: int | None, depth: int | None, num_heads: int | None
                 ) -> dict[str, int | None]:  # fmt: skip
    """``embed_dim``, ``depth``, ``num_heads`` of a released size (``model_name``) or of the custom ones."""
    if model_name is None:
        return dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads)
    return {k: VIT_SIZES[model_name][k] for k in ("embed_dim", "depth", "num_heads")}


def check_encoder_size(model_name: str | None, embed_dim: int | None, depth: int | None, num_heads: int | None,
                       *, heads_required: bool = True) -> None:  # fmt: skip
    """A released size, or a custom size given in full (``num_heads`` may be left to a checkpoint when not
    ``heads_required``): positive, with a width divisible by the heads."""
    custom = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}
    if model_name is not None:
        if model_name not in VIT_SIZES:
            close = difflib.get_close_matches(model_name, list(VIT_SIZES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"model_name: unknown size {model_name!r}; known: {', '.join(VIT_SIZES)}{hint}")
        if any(v is not None for v in custom.values()):
            raise ConfigError("model_name fixes embed_dim/depth/num_heads; set model_name: null to use them")
        return
    needed = ("embed_dim", "depth", "num_heads") if heads_required else ("embed_dim", "depth")
    missing = [k for k in needed if custom[k] is None]
    if missing:
        raise ConfigError(f"{'/'.join(missing)}: required with model_name null (or name a released size)")
    for key, value in custom.items():
        require(value is None or value >= 1, key, value, _INT_MIN)
    if num_heads is not None and embed_dim is not None and embed_dim % num_heads:
        raise ConfigError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")


@dataclass(kw_only=True)
class ModelConfig:
    """Encoder and predictor. ``model_name`` is a released size; with ``model_name: null`` give the size here."""

    model_name: str | None = "vit_base"
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    pred_depth: int = 6
    pred_embed_dim: int = 384
    pred_num_heads: int | None = None  # default: the encoder's
    uniform_power: bool = False
    use_mask_tokens: bool = True
    zero_init_mask_tokens: bool = True
    use_rope: bool = False
    use_silu: bool = False
    wide_silu: bool = True
    drop_path_rate: float = 0.0
    use_activation_checkpointing: bool = False
    # app vjepa_droid: the action-conditioned predictor's block-causal attention and extrinsics tokens.
    pred_is_frame_causal: bool = True
    use_extrinsics: bool = False
    # app vjepa_2_1 (V-JEPA 2.1, official key names unless said): the image tokenizer for inputs of this many frames
    # (1), learned modality embeddings, RoPE positions rescaled to the 16-token grid, the RoPE layout (ours; auto:
    # pairwise for vjepa_2_1, duplicated otherwise), the target levels (levels_predictor: the last n of the four
    # deep-supervised blocks), and the weight of the context loss per modality with its ramp (0 before
    # lambda_start_iter, linear to lambda_end_iter, then held; ours: the official code fixes 15000 and 30000).
    img_temporal_dim_size: int | None = None
    modality_embedding: bool = False
    interpolate_rope: bool = False
    rope_layout: Literal["auto", "duplicated", "pairwise"] = "auto"
    levels_predictor: int = 4
    normalize_predictor: bool = False
    lambda_value_img: float = 0.0
    lambda_value_vid: float = 0.0
    lambda_progressive: bool = True
    lambda_start_iter: int = 15000
    lambda_end_iter: int = 30000
    # Official switches whose only released value is the one accepted here (see _check_noop_keys).
    n_registers: int = 0
    n_registers_predictor: int = 0
    has_cls_first: bool = False
    is_causal: bool = False
    pred_is_causal: bool = False
    init_type: str = "default"
    use_pred_silu: bool | None = None  # null: model.use_silu (the predictor shares the encoder's activation)
    compile_model: bool = False

    def __post_init__(self) -> None:
        check_encoder_size(self.model_name, self.embed_dim, self.depth, self.num_heads)
        self._check_vjepa21_keys()
        require(self.mlp_ratio > 0, "mlp_ratio", self.mlp_ratio, "> 0")
        require(self.pred_depth >= 1, "pred_depth", self.pred_depth, _INT_MIN)
        require(self.pred_embed_dim >= 1, "pred_embed_dim", self.pred_embed_dim, _INT_MIN)
        require(self.pred_num_heads is None or self.pred_num_heads >= 1, "pred_num_heads", self.pred_num_heads,
                "null (the encoder's) or an int >= 1")  # fmt: skip
        if self.pred_embed_dim % self.predictor_heads:
            raise ConfigError(
                f"pred_embed_dim {self.pred_embed_dim} is not divisible by the predictor's {self.predictor_heads} "
                f"heads ({'pred_num_heads' if self.pred_num_heads else 'the encoder num_heads'})"
            )
        require(0 <= self.drop_path_rate < 1, "drop_path_rate", self.drop_path_rate, "a probability in [0, 1)")

    def _check_vjepa21_keys(self) -> None:
        """The V-JEPA 2.1 keys' own bounds; official switches this version does not implement take only their no-op
        value (an error otherwise, naming the key)."""
        require(self.img_temporal_dim_size in (None, 1), "img_temporal_dim_size", self.img_temporal_dim_size,
                "null (no image tokenizer) or 1 (images as 1-frame clips, as V-JEPA 2.1)")  # fmt: skip
        require(1 <= self.levels_predictor <= 4, "levels_predictor", self.levels_predictor,
                "1 to 4 (the last levels of the four deep-supervised blocks that are regressed)")  # fmt: skip
        for key in ("lambda_value_img", "lambda_value_vid"):
            require(getattr(self, key) >= 0, key, getattr(self, key), ">= 0 (the context loss's weight)")
        require(self.lambda_start_iter >= 0, "lambda_start_iter", self.lambda_start_iter, "steps >= 0")
        if self.lambda_progressive and self.lambda_end_iter <= self.lambda_start_iter:
            raise ConfigError(
                f"lambda_end_iter: got {self.lambda_end_iter}, expected more than lambda_start_iter "
                f"{self.lambda_start_iter} (the context-loss weight ramps between them), or lambda_progressive: false"
            )
        noop: tuple[tuple[str, object, str], ...] = (
            ("n_registers", 0, "register tokens are not implemented"),
            ("n_registers_predictor", 0, "predictor register tokens are not implemented"),
            ("has_cls_first", False, "a class token is not implemented"),
            ("is_causal", False, "causal encoder attention is not implemented"),
            ("pred_is_causal", False, "causal predictor attention is not implemented"),
            ("init_type", "default", "only the default (truncated normal) initialisation is implemented"),
        )
        for key, value, why in noop:
            require(getattr(self, key) == value, key, getattr(self, key), f"{value!r} ({why})")
        if self.use_pred_silu is not None and self.use_pred_silu != self.use_silu:
            raise ConfigError(
                f"use_pred_silu: got {self.use_pred_silu}, expected use_silu's value {self.use_silu} (the predictor "
                "shares the encoder's activation here); remove use_pred_silu or set use_silu to it"
            )
        if self.interpolate_rope and not self.use_rope:
            raise ConfigError("interpolate_rope: true rescales RoPE positions, but use_rope is false")
        if self.compile_model:
            warn_unused("model.compile_model", "models run eagerly here (torch.compile is not wired in)")

    @property
    def size(self) -> dict[str, int]:
        """The encoder's ``embed_dim``, ``depth`` and ``num_heads`` (all three set: ``__post_init__`` requires
        them)."""
        return {k: v for k, v in encoder_size(self.model_name, self.embed_dim, self.depth, self.num_heads).items()
                if v is not None}  # fmt: skip

    @property
    def predictor_heads(self) -> int:
        return self.pred_num_heads or self.size["num_heads"]


@dataclass(kw_only=True)
class LossConfig:
    """Prediction loss. ``auto`` is smooth-L1 for I-JEPA and ``|z - h| ** loss_exp / loss_exp`` for V-JEPA."""

    loss_type: Literal["auto", "smooth_l1", "l1", "l2"] = "auto"
    loss_exp: float = 1.0
    reg_coeff: float = 0.0  # V-JEPA's hinge on the predictions' spread across tokens
    center_targets: bool = False  # subtract the batch mean at each grid position from the targets
    # SIGReg (LeJEPA, jepa.training.sigreg) on the context encoder's embeddings: weight (0: off), on the per-sample
    # mean-pooled embedding or on every token, random directions per step.
    sigreg_weight: float = 0.0
    sigreg_on: Literal["pooled", "tokens"] = "pooled"
    sigreg_directions: int = 256
    # Regression targets: the EMA target encoder (ema), the online encoder without gradient (online_stopgrad: EMA
    # momentum 0), or the online encoder with gradient (online: no teacher at all, as LeJEPA argues SIGReg allows).
    target: Literal["ema", "online_stopgrad", "online"] = "ema"
    # app lejepa: the one trade-off of its loss, (1 - lejepa_lambda) * prediction + lejepa_lambda * SIGReg.
    lejepa_lambda: float = 0.05
    # app vjepa_droid: rollout steps of the rollout L1 term (1: it equals teacher forcing), and whether targets and
    # predictions are layer-normed (the official files: true; the official code reads a missing key as false).
    auto_steps: int = 1
    normalize_reps: bool = True
    # app vjepa_2_1: dense prediction (the context tokens are predicted too; null: true for vjepa_2_1, as
    # officially), their loss weighted by 1 / sqrt(distance to the nearest target token), that distance rescaled to
    # the 16-token grid (offset_context_loss); shift_by_n (the official chop_last_n_tokens) only as null / 0.
    predict_all: bool | None = None
    weight_distance_loss: bool = False
    offset_context_loss: bool = False
    shift_by_n: int | None = None

    def __post_init__(self) -> None:
        require(self.auto_steps >= 1, "auto_steps", self.auto_steps, _INT_MIN)
        require(self.shift_by_n in (None, 0), "shift_by_n", self.shift_by_n,
                "null or 0 (dropping the last tokens, official chop_last_n_tokens, is not implemented)")  # fmt: skip
        require(0 <= self.lejepa_lambda <= 1, "lejepa_lambda", self.lejepa_lambda, "a weight in [0, 1]")
        require(self.loss_exp > 0, "loss_exp", self.loss_exp, "> 0 (the loss is |z - h| ** loss_exp / loss_exp)")
        require(self.reg_coeff >= 0, "reg_coeff", self.reg_coeff, ">= 0")
        require(self.sigreg_weight >= 0, "sigreg_weight", self.sigreg_weight, ">= 0 (0: no SIGReg)")
        require(self.sigreg_directions >= 1, "sigreg_directions", self.sigreg_directions, "an int >= 1")
        changed = set_fields(self)
        if self.sigreg_weight == 0:
            for key in sorted(changed & {"sigreg_on", "sigreg_directions"}):
                warn_unused(f"loss.{key}", "loss.sigreg_weight is 0, so SIGReg is off")
        if self.target == "online" and self.sigreg_weight == 0 and self.reg_coeff == 0:
            logger.warning(
                "loss.target: online regresses the online encoder onto itself with no anti-collapse term "
                "(loss.sigreg_weight and loss.reg_coeff are 0): expect a collapse"
            )


@dataclass(kw_only=True)
class MetaConfig:
    """Run-level switches."""

    seed: int = 0
    load_checkpoint: bool = False  # resume: from read_checkpoint, else from <folder>/<write_tag>-latest.pth.tar
    read_checkpoint: str | None = None  # relative: to logging.folder
    # auto: bfloat16 on GPUs and CPUs with native bf16 (AVX-512 BF16 / AMX), float32 elsewhere (jepa.runtime.precision)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    use_sdpa: bool = True
    # ddp: every rank holds the whole model (DistributedDataParallel); fsdp: FSDP2 shards weights, gradients and
    # AdamW state over the ranks (jepa.training.ddp.shard_fsdp), for ViT-g / gigantic; checkpoints are the same.
    sharding: Literal["ddp", "fsdp"] = "ddp"
    log_freq: int = 10  # steps between log lines / CSV rows
    checkpoint_freq: int = 1  # epochs between checkpoints (the last epoch is always saved)
    # Epochs between online k-NN probes of the target encoder on a labelled held-out split (jepa.training.
    # online_probe); null: none. The official files' value (100) is kept; it probes only where such a split exists.
    eval_freq: int | None = None
    # Warn (once, with the step) when the effective rank of the pooled target features falls below this share of
    # the width: dimensional collapse, which feat_std does not show. 0 disables the warning.
    collapse_warn_rank: float = 0.25
    # Warn (once, with the step) when that effective rank falls below this share of its first logged value (the
    # rank of the target encoder as the run (re)started): a collapse that training causes, also where random-init
    # features already sit below collapse_warn_rank (tiny video ViTs start near 3% of the width). 0 disables it.
    collapse_warn_drop: float = 0.5
    copy_data: bool = ignored(False, "data is read in place")
    # Continue pretraining from released weights or another run's (encoder, predictor, target encoder) with a fresh
    # optimizer, schedules from step 0 and this run's own folder (jepa.training.warm_start).
    pretrained_checkpoint: str | None = None
    # When that checkpoint's predictor holds another number of mask tokens than this config needs: refuse
    # ("error") or reuse its tokens in turn ("cycle": token i takes the checkpoint's token i % n).
    pretrained_mask_tokens: Literal["error", "cycle"] = "error"
    # app vjepa_droid: the checkpoint of the frozen encoder (null: a random one, logged), the entry its weights are
    # read from (target_encoder_key; the encoder is both the context and the target one, so context_encoder_key must
    # agree), and whether that file's predictor (an AC predictor) initialises the one trained here.
    pretrain_checkpoint: str | None = None
    context_encoder_key: Literal["encoder", "target_encoder"] = "target_encoder"
    target_encoder_key: Literal["encoder", "target_encoder"] = "target_encoder"
    load_predictor: bool = False

    def __post_init__(self) -> None:
        require(0 <= self.seed < 2**32, "seed", self.seed, "an int in [0, 2**32) (what numpy accepts)")
        require(self.pretrained_checkpoint != "", "pretrained_checkpoint", self.pretrained_checkpoint,
                "null or a path")  # fmt: skip
        require(self.log_freq >= 1, "log_freq", self.log_freq, "steps >= 1")
        require(self.checkpoint_freq >= 1, "checkpoint_freq", self.checkpoint_freq, "epochs >= 1")
        require(self.eval_freq is None or self.eval_freq >= 1, "eval_freq", self.eval_freq,
                "null (no online probe) or epochs >= 1")  # fmt: skip
        require(0 <= self.collapse_warn_rank < 1, "collapse_warn_rank", self.collapse_warn_rank,
                "a share of the width in [0, 1) (0: no warning)")  # fmt: skip
        require(0 <= self.collapse_warn_drop < 1, "collapse_warn_drop", self.collapse_warn_drop,
                "a share of the first logged effective rank in [0, 1) (0: no warning)")  # fmt: skip
        require(self.read_checkpoint != "", "read_checkpoint", self.read_checkpoint, "null or a path")


def check_betas(betas: Pair) -> None:
    require(all(0 <= b < 1 for b in betas), "betas", betas, "two AdamW coefficients in [0, 1)")


@dataclass(kw_only=True)
class OptimizationConfig:
    """AdamW with warmup + cosine LR, cosine weight decay and a linear EMA ramp, all per step.

    ``ipe`` is iterations per epoch (default: the length of the data loader); the schedules span
    ``ipe_scale * epochs * ipe`` steps, so with ``ipe_scale > 1`` training stops before they reach their ends.
    """

    epochs: int = 100
    ipe: int | None = None
    ipe_scale: float = 1.0
    warmup: float = 10  # epochs
    start_lr: float = 2e-4
    lr: float = 1e-3
    final_lr: float = 1e-6
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    ema: Pair = (0.996, 1.0)
    clip_grad: float | None = None
    betas: Pair = (0.9, 0.999)
    # V-JEPA 2's cooldown: a run that starts from anneal_ckpt's weights and anneals the LR (jepa.training.schedules);
    # resume_anneal: resume from this run's own latest anneal checkpoint when there is one.
    is_anneal: bool = False
    anneal_ckpt: str | None = None
    resume_anneal: bool = False
    # app vjepa_droid: epochs of the final linear decay of its warmup-stable-decay LR (jepa.worldmodel.model).
    anneal: float = 0.0

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "epochs", self.epochs, _INT_MIN)
        require(0 <= self.anneal <= self.epochs, "anneal", self.anneal, f"epochs in [0, epochs={self.epochs}]")
        require(self.warmup >= 0, "warmup", self.warmup, "epochs >= 0")
        if self.warmup > self.ipe_scale * self.epochs:
            # The V-JEPA 2 pretraining files do this (40 warmup epochs of a 10-epoch run): the LR climbs all along.
            logger.warning(
                "optimization.warmup (%s epochs) outlasts the schedules (ipe_scale x epochs = %s): the LR rises "
                "from start_lr towards lr for the whole run and never reaches it", self.warmup,
                self.ipe_scale * self.epochs,
            )  # fmt: skip
        if self.is_anneal and not self.anneal_ckpt:
            raise ConfigError(
                f"anneal_ckpt: got {self.anneal_ckpt!r}, but is_anneal is true: the cooldown starts from a "
                "checkpoint (set anneal_ckpt to its path, or is_anneal: false)"
            )
        require(self.ipe is None or self.ipe >= 1, "ipe", self.ipe, "null (the loader's length) or steps >= 1")
        require(self.ipe_scale >= 1.0, "ipe_scale", self.ipe_scale, ">= 1 (the schedules' length in epochs)")
        for name in ("start_lr", "lr", "final_lr", "weight_decay", "final_weight_decay"):
            require(getattr(self, name) >= 0, name, getattr(self, name), ">= 0 (negative values ascend the loss)")
        check_range("ema", self.ema, 0.0, 1.0)
        require(self.clip_grad is None or self.clip_grad > 0, "clip_grad", self.clip_grad, "null (no clipping) or > 0")
        check_betas(self.betas)


@dataclass(kw_only=True)
class LoggingConfig:
    folder: str = "runs/default"
    write_tag: str = "jepa"

    def __post_init__(self) -> None:
        require(self.folder != "", "folder", self.folder, "a folder path")
        require(self.write_tag != "" and "/" not in self.write_tag, "write_tag", self.write_tag,
                "a file name prefix without '/'")  # fmt: skip


def check_position_widths(where: str, width: int, heads: int, *, video: bool, uniform_power: bool, rope: bool
                          ) -> None:  # fmt: skip
    """The width a model's position encoding can be built for (jepa.models.pos_embed, jepa.models.rope)."""
    if rope:
        if width // heads < 6:
            raise ConfigError(f"{where}: a head width of {width // heads} is too small for 3D RoPE (needs >= 6)")
        return
    # 2D tables split the width in halves of sines and cosines, 3D tables (without uniform_power) in 1/2 + 1/4 + 1/4.
    step = 2 if video and uniform_power else 8 if video else 4
    if width % step:
        raise ConfigError(f"{where}: the sine-cosine position table needs a width divisible by {step}, got {width}")


def pretrain_model_spec(video: bool, data: DataConfig, model: ModelConfig, use_sdpa: bool, num_mask_tokens: int,
                        *, vjepa21: bool = False, predict_all: bool = False, teacher_embed_dim: int | None = None,
                        ) -> ModelSpec:  # fmt: skip
    """The one mapping of a pretraining config's keys (``data``'s grid, ``model``, ``meta.use_sdpa``, the number of
    mask configs) onto the model spec, for a config (:meth:`PretrainConfig.model_spec`) and for a stored one
    (:func:`model_spec_from_config_dict`).

    ``vjepa21`` (app vjepa_2_1): the encoder gets V-JEPA 2.1's options (image tokenizer, modality embeddings, deep
    supervision with ``model.levels_predictor`` levels, pairwise RoPE unless ``model.rope_layout`` says otherwise,
    ``interpolate_rope``) and the predictor the same levels in and out, ``predict_all`` as ``return_all_tokens`` and
    a distillation teacher's output width as ``teacher_embed_dim``."""
    m = model
    size = {} if m.model_name else dict(m.size, mlp_ratio=m.mlp_ratio)  # a released size fixes its MLP ratio too
    layout = m.rope_layout if m.rope_layout != "auto" else "pairwise" if vjepa21 else "duplicated"
    v21_encoder: dict[str, Any] = dict(rope_layout=layout)
    v21_predictor: dict[str, Any] = {}
    if vjepa21:
        levels = m.levels_predictor
        v21_encoder.update(img_temporal_dim_size=m.img_temporal_dim_size, modality_embedding=m.modality_embedding,
                           deep_supervision=True, n_output_distillation=levels,
                           interpolate_rope=m.interpolate_rope)  # fmt: skip
        v21_predictor = dict(n_output_distillation=levels, teacher_embed_dim=teacher_embed_dim,
                             return_all_tokens=predict_all, interpolate_rope=m.interpolate_rope)  # fmt: skip
    encoder = EncoderSpec.of(
        m.model_name,
        **size,
        img_size=data.crop_size,
        patch_size=data.patch_size,
        num_frames=data.num_frames if video else 1,
        tubelet_size=data.tubelet_size,
        uniform_power=m.uniform_power,
        use_rope=m.use_rope,
        use_silu=m.use_silu,
        wide_silu=m.wide_silu,
        use_sdpa=use_sdpa,
        drop_path_rate=m.drop_path_rate,
        use_activation_checkpointing=m.use_activation_checkpointing,
        **v21_encoder,
    )
    predictor = PredictorSpec(
        predictor_embed_dim=m.pred_embed_dim,
        depth=m.pred_depth,
        num_heads=m.predictor_heads,
        num_mask_tokens=num_mask_tokens,  # see mask_token_count
        use_mask_tokens=m.use_mask_tokens,
        zero_init_mask_tokens=m.zero_init_mask_tokens,
        square_rope_grid=False,  # trained here: RoPE positions of the real grid (the square one is a release quirk)
        **v21_predictor,
    )
    return ModelSpec(encoder=encoder, predictor=predictor)


def world_model_encoder_spec(data: DataConfig, model: ModelConfig, use_sdpa: bool) -> ModelSpec:
    """``app: vjepa_droid``'s frozen encoder: the ``model`` section's ViT over single frames encoded as static
    tubelets (``num_frames = tubelet_size``, one time step; with RoPE the official builder's longer ``num_frames``
    changes nothing), with no predictor in the spec (the AC predictor's keywords: ``jepa.training.builders``)."""
    one_step = copy.copy(data)
    one_step.num_frames = data.tubelet_size
    spec = pretrain_model_spec(True, one_step, model, use_sdpa, 1)
    return ModelSpec(encoder=spec.encoder)


def is_image_step(step: int, rank_ratio: float) -> bool:
    """Whether global step ``step`` of an interleaved image + video run (``img_data.mix: interleave``) trains on
    images: iff ``floor((step + 1) * rank_ratio) > floor(step * rank_ratio)``, so that the first ``n`` steps hold
    ``floor(n * rank_ratio)`` image steps, spread evenly, and any step's modality and both loaders' positions are
    functions of the step alone (a resumed run continues as the uninterrupted one)."""
    return image_steps_before(step + 1, rank_ratio) > image_steps_before(step, rank_ratio)


def image_steps_before(step: int, rank_ratio: float) -> int:
    """The image steps among global steps ``0 .. step - 1`` of an interleaved run (see :func:`is_image_step`)."""
    return math.floor(step * Fraction(repr(rank_ratio)))  # exact: 0.29 * 100 is 28.999... in floats


def mask_token_count(mask_configs: int, dataset_fpcs: list[int] | None) -> int:
    """The predictor's mask tokens: one per mask config (V-JEPA, I-JEPA's one), or with V-JEPA 2's
    ``dataset_fpcs`` one per (mask config, entry of ``dataset_fpcs``), as the official code builds them (most stay
    unused there too: see :meth:`PretrainConfig.mask_token_index`)."""
    return mask_configs * (len(dataset_fpcs) if dataset_fpcs else 1)


def model_spec_from_config_dict(config: Mapping[str, Any]) -> ModelSpec:
    """The model spec of a stored config (``to_dict(PretrainConfig)``, what our checkpoints keep under ``config``).

    Only the keys the spec reads are taken, each validated as in a config file; keys this version does not know are
    ignored (a file of another version) and missing ones take their defaults.
    """

    def section(cls: type[D], name: str, keys: tuple[str, ...] | None = None) -> D:
        raw = config.get(name) or {}
        known = keys or tuple(f.name for f in dataclasses.fields(cls))
        return from_dict(cls, {k: v for k, v in raw.items() if k in known}, name)

    grid_keys = ("dataset_type", "crop_size", "patch_size", "num_frames", "tubelet_size", "dataset_fpcs")
    data = section(DataConfig, "data", grid_keys)
    meta = section(MetaConfig, "meta", ("use_sdpa",))
    if config.get("app") == "vjepa_droid":
        return world_model_encoder_spec(data, section(ModelConfig, "model"), meta.use_sdpa)
    mask = config.get("mask")
    app = config.get("app", "vjepa")
    video = reads_clips(app, data.dataset_type)
    # Mask tokens come with the masks: one per mask config (and dataset_fpcs entry); app lejepa has none (one unused).
    tokens = mask_token_count(len(mask), data.dataset_fpcs) if isinstance(mask, list) else 1
    model = section(ModelConfig, "model")
    if app != "vjepa_2_1":
        return pretrain_model_spec(video, data, model, meta.use_sdpa, tokens)
    loss = section(LossConfig, "loss", ("predict_all",))
    teacher = (config.get("distillation") or {}).get("teacher_embed_dim")
    return pretrain_model_spec(video, data, model, meta.use_sdpa, tokens, vjepa21=True,
                               predict_all=loss.predict_all is not False, teacher_embed_dim=teacher)  # fmt: skip


@dataclass(kw_only=True)
class LeJEPAConfig:
    """LeJEPA's multi-view recipe (``app: lejepa``, :mod:`jepa.training.lejepa`): the views of each image (or clip) and
    the projector head. The global views are ``data.crop_size`` crops of area ``data.crop_scale``, the local ones
    ``local_crop_size`` crops of area ``local_crop_scale`` (the paper: 2 x 224 px at 0.3-1 and 6 x 98 px at
    0.05-0.3); a clip's view is one crop box for all its frames (a moving one with ``data_aug.motion_shift``), with
    ``data_aug``'s aspect ratios, RandAugment and erasing; the loss's trade-off is ``loss.lejepa_lambda``."""

    global_views: int = 2
    local_views: int = 6
    local_crop_size: int = 96
    local_crop_scale: Pair = (0.05, 0.3)
    # Hidden widths then the output width of the MLP on the mean-pooled encoder tokens (the paper: 2048, 2048, 128).
    projector_dims: list[int] = field(default_factory=lambda: [2048, 2048, 128])
    projector_norm: Literal["batch_norm", "layer_norm", "none"] = "batch_norm"  # the paper's: batch_norm
    sigreg_directions: int = 256  # random directions of SIGReg per step (loss.sigreg_directions is the JEPA term's)

    def __post_init__(self) -> None:
        require(self.global_views >= 1, "global_views", self.global_views, _INT_MIN)
        require(self.local_views >= 0, "local_views", self.local_views, "an int >= 0 (0: global views only)")
        require(self.local_crop_size >= 1, "local_crop_size", self.local_crop_size, _INT_MIN)
        require(self.sigreg_directions >= 1, "sigreg_directions", self.sigreg_directions, _INT_MIN)
        check_range("local_crop_scale", self.local_crop_scale, 0.0, 1.0, lo_open=True)
        require(len(self.projector_dims) >= 1 and all(d >= 1 for d in self.projector_dims), "projector_dims",
                self.projector_dims, "a list of widths >= 1 (hidden widths, then the output width)")  # fmt: skip
        if self.global_views == 1 and self.local_views == 0:
            raise ConfigError(
                "global_views 1 and local_views 0: one view per sample leaves nothing to predict; add views"
            )


@dataclass(kw_only=True)
class ToyWorldConfig:
    """The built-in toy world of ``app: vjepa_droid`` with ``data.dataset_type: toy_world``
    (:mod:`jepa.worldmodel.toyworld`): trajectories generated once under ``data.root_path`` (frames of
    ``data.crop_size`` pixels, written at ``fps``) and read through the DROID loader."""

    num_trajectories: int = 400
    length: int = 24  # frames per trajectory
    fps: int = 4
    radius: float = 0.12  # blob radius, fraction of the canvas side
    max_step: float = 0.1  # largest move per step along each axis, fraction of the side
    halo: float = 1.5  # width of the blob's glow, fraction of the side (0: none; jepa.worldmodel.toyworld)
    # Boxes [x0, y0, x1, y1] in [0, 1] coordinates that the blob cannot enter.
    obstacles: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("num_trajectories", "length", "fps"):
            require(getattr(self, name) >= 1, name, getattr(self, name), _INT_MIN)
        require(0 < self.radius < 0.5, "radius", self.radius, "a fraction of the side in (0, 0.5)")
        require(0 < self.max_step <= 1, "max_step", self.max_step, "a fraction of the side in (0, 1]")
        require(self.halo >= 0, "halo", self.halo, "a width >= 0 (0: no glow)")
        for i, box in enumerate(self.obstacles):
            require(len(box) == 4 and box[0] < box[2] and box[1] < box[3] and all(0 <= v <= 1 for v in box),
                    f"obstacles[{i}]", box,
                    "[x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")  # fmt: skip


# Model keys that only app vjepa_2_1 reads.
_VJEPA21_MODEL_KEYS = {
    "img_temporal_dim_size", "modality_embedding", "interpolate_rope", "levels_predictor", "normalize_predictor",
    "lambda_value_img", "lambda_value_vid", "lambda_progressive", "lambda_start_iter", "lambda_end_iter",
}  # fmt: skip
# Keys that only app vjepa_droid reads: (section, key) -> a reason for the warning elsewhere.
_WORLD_MODEL_KEYS = (("loss", "auto_steps"), ("loss", "normalize_reps"), ("meta", "pretrain_checkpoint"),
                     ("meta", "context_encoder_key"), ("meta", "target_encoder_key"), ("meta", "load_predictor"),
                     ("model", "pred_is_frame_causal"), ("model", "use_extrinsics"), ("optimization", "anneal"),
                     ("data", "camera_views"), ("data_aug", "horizontal_flip"))  # fmt: skip


@dataclass(kw_only=True)
class PretrainConfig:
    """A whole pretraining run. ``app`` picks the modality and objective: ``ijepa`` (images), ``vjepa`` (video),
    ``vjepa_2_1`` (V-JEPA 2.1: video, with images of ``img_data`` in the same run, dense and deep-supervised
    prediction, optionally distilled from a teacher of ``distillation``), ``lejepa`` (LeJEPA's multi-view recipe on
    images, or on clips of a video ``data.dataset_type``, its keys in ``lejepa`` and ``loss.lejepa_lambda``) or
    ``vjepa_droid`` (the action-conditioned world model)."""

    app: Literal["ijepa", "vjepa", "vjepa_2_1", "lejepa", "vjepa_droid"] = "vjepa"
    nodes: int = 1
    tasks_per_node: int = 1
    # Slurm resources of each task (app.main_distributed; its --cpus-per-task / --mem-per-gpu win when given).
    cpus_per_task: int | None = None
    mem_per_gpu: str | None = None  # e.g. 220G
    data: DataConfig = field(default_factory=DataConfig)
    data_aug: DataAugConfig = field(default_factory=DataAugConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mask: ImageMaskConfig | list[VideoMaskConfig] = field(default_factory=ImageMaskConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    lejepa: LeJEPAConfig = field(default_factory=LeJEPAConfig)
    toy_world: ToyWorldConfig = field(default_factory=ToyWorldConfig)
    # app vjepa_2_1: the image data trained beside data's video, and their masks (V-JEPA mask configs drawn on the
    # 1-frame token grid with tubelets of 1, as officially; null: the list of mask, as officially).
    img_data: ImageDataConfig | None = None
    img_mask: list[VideoMaskConfig] | None = None
    distillation: DistillationConfig = field(default_factory=DistillationConfig)

    @property
    def is_video(self) -> bool:
        """Masked video pretraining (``app: vjepa`` and ``vjepa_2_1``); the world model reads video too but has no
        masks."""
        return self.app in VIDEO_APPS  # app lejepa on clips: see video_data

    @property
    def video_data(self) -> bool:
        """The encoder trains on clips: a video app, or app lejepa on a video data set (:func:`reads_clips`)."""
        return reads_clips(self.app, self.data.dataset_type)

    @property
    def is_vjepa21(self) -> bool:
        return self.app == "vjepa_2_1"

    @property
    def image_masks(self) -> list[VideoMaskConfig]:
        """The mask configs of image batches (app vjepa_2_1): ``img_mask``, else the video ones (as officially)."""
        assert isinstance(self.mask, list)  # a video app (checked in __post_init__)
        return self.img_mask if self.img_mask is not None else self.mask

    def image_mix(self, world_size: int) -> Literal["ranks", "accumulate", "interleave"] | None:
        """How this run shares its steps between images and video on ``world_size`` processes: ``ranks`` (the
        first ``int(world_size * img_data.rank_ratio)`` ranks train on images), ``accumulate`` (every step of every
        rank both, the losses weighted by :meth:`modality_weights`), ``interleave`` (every rank, image steps by
        :func:`is_image_step`), or None without ``img_data``. ``auto`` is ``ranks`` when that leaves at least one
        rank to each modality, else ``accumulate``. A ``ranks`` mix that cannot (one process, or too few image
        ranks) is a :class:`ConfigError`."""
        img = self.img_data
        if img is None:
            return None
        image_ranks = int(world_size * img.rank_ratio)
        possible = world_size > 1 and 1 <= image_ranks < world_size
        if img.mix == "auto":
            return "ranks" if possible else "accumulate"
        if img.mix == "ranks" and not possible:
            raise ConfigError(
                f"img_data.mix: ranks needs at least one image rank and one video rank, but int({world_size} ranks x "
                f"rank_ratio {img.rank_ratio}) = {image_ranks}: use mix: accumulate (or auto), more processes or "
                "another rank_ratio"
            )
        return img.mix

    def modality_weights(self) -> dict[str, float]:
        """An ``accumulate`` step's loss weights: ``rank_ratio`` on the image batch, the rest on the video batch
        (what the ``ranks`` mix's gradient average gives the two modalities); a modality of weight 0 is not read."""
        assert self.img_data is not None
        ratio = self.img_data.rank_ratio
        return {m: w for m, w in (("image", ratio), ("video", 1.0 - ratio)) if w > 0}

    @property
    def is_world_model(self) -> bool:
        """``app: vjepa_droid``: an action-conditioned predictor on a frozen encoder (:mod:`jepa.worldmodel`)."""
        return self.app == "vjepa_droid"

    @property
    def num_mask_tokens(self) -> int:
        """The predictor's mask tokens (:func:`mask_token_count`)."""
        if isinstance(self.mask, list):
            return mask_token_count(len(self.mask), self.data.dataset_fpcs)
        return 1  # I-JEPA's one

    def mask_token_index(self, length_index: int, mask_index: int) -> int:
        """The predictor mask token of mask config ``mask_index`` on the clips of length group ``length_index``
        (:attr:`DataConfig.clip_lengths`).

        V-JEPA (no ``dataset_fpcs``) gives each mask config its own token. V-JEPA 2 (``dataset_fpcs``) gives each
        clip length one, shared by the mask configs: the official predictor wrapper passes the length group's
        position as the token index, so of the ``len(mask) * len(dataset_fpcs)`` tokens only the first (one per
        distinct length) are trained, and a single-length run (all the released ones) trains token 0 alone. The
        official position counts the groups present in the batch; here it is the length's place among all of
        them, so a batch that happens to lack short clips does not hand the long ones the short clips' token."""
        if self.data.dataset_fpcs is None or not self.is_video:
            return mask_index
        return length_index

    def model_spec(self) -> ModelSpec:
        """The encoder and predictor this run trains (:func:`jepa.models.builder.build_models_from_spec`); for
        ``app: vjepa_droid`` the frozen encoder alone (:func:`world_model_encoder_spec`)."""
        if self.is_world_model:
            return world_model_encoder_spec(self.data, self.model, self.meta.use_sdpa)
        if not self.is_vjepa21:
            return pretrain_model_spec(self.video_data, self.data, self.model, self.meta.use_sdpa, self.num_mask_tokens)
        return pretrain_model_spec(
            True, self.data, self.model, self.meta.use_sdpa, self.num_mask_tokens, vjepa21=True,
            predict_all=bool(self.loss.predict_all), teacher_embed_dim=self.distillation.teacher_embed_dim,
        )  # fmt: skip

    def __post_init__(self) -> None:
        require(self.nodes >= 1, "nodes", self.nodes, _INT_MIN)
        require(self.tasks_per_node >= 1, "tasks_per_node", self.tasks_per_node, _INT_MIN)
        require(self.cpus_per_task is None or self.cpus_per_task >= 1, "cpus_per_task", self.cpus_per_task,
                "null or an int >= 1")  # fmt: skip
        require(self.mem_per_gpu is None or re.fullmatch(r"[1-9]\d*[KMGT]?", self.mem_per_gpu) is not None,
                "mem_per_gpu", self.mem_per_gpu, "null or a Slurm size such as 220G")  # fmt: skip
        d = self.data
        if self.is_video and not isinstance(self.mask, list):
            raise ConfigError("mask: a V-JEPA config needs a list of mask configs")
        if self.app == "lejepa" and isinstance(self.mask, list):
            raise ConfigError("mask: app lejepa encodes whole views, without masks: remove the mask list")
        if not self.is_video and isinstance(self.mask, list):
            raise ConfigError("mask: an I-JEPA config needs one mask mapping (num_pred_masks, ...), not a list")
        if self.is_video and not self.mask:
            raise ConfigError("mask: the list of mask configs is empty")
        if self.is_world_model and "dataset_type" not in set_fields(d):
            d.dataset_type = "droid"  # the official files leave it out
        kinds: tuple[str, ...]
        if self.is_video:
            kinds, what = VIDEO_DATASET_TYPES, "video"
        elif self.is_world_model:
            kinds, what = WORLD_DATASET_TYPES, "video"
        elif self.app == "lejepa":  # images, or clips (reads_clips)
            kinds, what = IMAGE_DATASET_TYPES + VIDEO_DATASET_TYPES, "image or video"
        else:
            kinds, what = IMAGE_DATASET_TYPES, "image"
        if d.dataset_type.lower() not in {k.lower() for k in kinds}:
            raise ConfigError(
                f"data.dataset_type: got {d.dataset_type!r}, but app {self.app} reads {what} data sets: "
                f"{', '.join(kinds)}"
            )
        if isinstance(self.mask, ImageMaskConfig):
            if self.mask.patch_size not in (None, d.patch_size):
                raise ConfigError(f"mask.patch_size {self.mask.patch_size} differs from data.patch_size {d.patch_size}")
            tokens = (d.crop_size // d.patch_size) ** 2
            if self.mask.min_keep > tokens:
                raise ConfigError(
                    f"mask.min_keep: got {self.mask.min_keep}, expected at most the {tokens} tokens of a "
                    f"{d.crop_size} px crop in patches of {d.patch_size}"
                )
        if self.is_video:
            check_range("data_aug.random_resize_scale", self.data_aug.random_resize_scale, 0.0, 1.0, lo_open=True)
        if (self.video_data or self.is_world_model) and d.num_frames % d.tubelet_size:
            raise ConfigError(f"data.num_frames {d.num_frames} is not a multiple of tubelet_size {d.tubelet_size}")
        m = self.model
        width = dict(video=self.video_data or self.is_world_model, uniform_power=m.uniform_power, rope=m.use_rope)
        check_position_widths("model.embed_dim", m.size["embed_dim"], m.size["num_heads"], **width)
        check_position_widths("model.pred_embed_dim", m.pred_embed_dim, m.predictor_heads, **width)
        if self.optimization.is_anneal and self.meta.pretrained_checkpoint is not None:
            raise ConfigError(
                f"optimization.is_anneal is true and meta.pretrained_checkpoint is {self.meta.pretrained_checkpoint!r}"
                f": a cooldown starts from optimization.anneal_ckpt ({self.optimization.anneal_ckpt!r}); set one of "
                "the two"
            )
        self._check_vjepa21()
        if self.is_world_model:
            self._check_world_model()
        else:
            self._check_unused_keys()
            for section, key in _WORLD_MODEL_KEYS:
                if key in set_fields(getattr(self, section)):
                    warn_unused(f"{section}.{key}", f"only app vjepa_droid reads it, this is app {self.app}")
            for key in sorted(set_fields(self.toy_world)):
                warn_unused(f"toy_world.{key}", f"only app vjepa_droid reads it, this is app {self.app}")
        self._check_lejepa()

    def _check_vjepa21(self) -> None:
        """``app: vjepa_2_1``: the image data's grid and tokenizer, the defaults the official code gives its keys
        (``loss.predict_all`` true), and the teacher; elsewhere its keys are unused (a warning) or contradict the
        app (an error)."""
        m, loss = self.model, self.loss
        if not self.is_vjepa21:
            reason = f"only app vjepa_2_1 reads it, this is app {self.app}"
            for key in ("img_data", "img_mask"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"{key}: images beside video in one run need app: vjepa_2_1 (this is app "
                                      f"{self.app})")  # fmt: skip
            if self.distillation.enabled:
                raise ConfigError(f"distillation.teacher_checkpoint: a teacher needs app: vjepa_2_1 (this is app "
                                  f"{self.app})")  # fmt: skip
            for key in sorted(set_fields(m) & _VJEPA21_MODEL_KEYS):
                warn_unused(f"model.{key}", reason)
            for key in sorted(set_fields(loss) & {"predict_all", "weight_distance_loss", "offset_context_loss"}):
                warn_unused(f"loss.{key}", reason)
            return
        if loss.predict_all is None:
            loss.predict_all = True  # the official default
        if not loss.predict_all:
            for key in sorted(set_fields(loss) & {"weight_distance_loss", "offset_context_loss"}):
                warn_unused(f"loss.{key}", "loss.predict_all is false (no context loss)")
            for key in sorted(set_fields(m) & {"lambda_value_img", "lambda_value_vid"}):
                warn_unused(f"model.{key}", "loss.predict_all is false (no context loss)")
        depth = m.size["depth"]
        if depth < 4:
            raise ConfigError(
                f"model.depth: got {depth}, expected >= 4: app vjepa_2_1 regresses the outputs of four blocks "
                "(deep supervision)"
            )
        img = self.img_data
        if img is None:
            if self.img_mask is not None:
                warn_unused("img_mask", "img_data is not set (a video-only run)")
            if "lambda_value_img" in set_fields(m):
                warn_unused("model.lambda_value_img", "img_data is not set (a video-only run)")
            return
        if m.img_temporal_dim_size != 1:
            raise ConfigError(
                f"model.img_temporal_dim_size: got {m.img_temporal_dim_size!r}, expected 1 with img_data (images go "
                "through the tubelet-1 tokenizer as 1-frame clips)"
            )
        if img.crop_size % self.data.patch_size:
            raise ConfigError(
                f"img_data.crop_size {img.crop_size} is not a multiple of data.patch_size {self.data.patch_size}"
            )
        if not m.use_rope and img.crop_size != self.data.crop_size:
            logger.info("img_data.crop_size %d differs from data.crop_size %d: the image tokens' sine-cosine table "
                        "is resampled to their grid", img.crop_size, self.data.crop_size)  # fmt: skip

    def _check_world_model(self) -> None:
        """``app: vjepa_droid``: its data (DROID CSVs, or the toy world without them), and the keys of the masked
        objectives that it ignores (a warning)."""
        d, kind = self.data, self.data.dataset_type.lower()
        changed = set_fields(d)
        if kind == "droid" and not d.datasets:
            raise ConfigError("data.datasets: lists no trajectory CSV, required for app vjepa_droid on DROID data")
        if kind == "toy_world" and "datasets" in changed:
            raise ConfigError(
                "data.datasets is set, but dataset_type toy_world generates its own trajectories: set "
                "data.dataset_type: droid to train on the listed CSVs, or remove data.datasets"
            )
        if kind == "droid":
            for key in sorted(set_fields(self.toy_world)):
                warn_unused(f"toy_world.{key}", "dataset_type is droid (the toy world is not generated)")
        if d.dataset_fpcs is not None and len(set(d.dataset_fpcs)) > 1:
            raise ConfigError(f"data.dataset_fpcs {d.dataset_fpcs}: app vjepa_droid trains on one clip length")
        reason = "app vjepa_droid has no masks (its objective is teacher forcing + rollout)"
        if isinstance(self.mask, list) or set_fields(self.mask):
            warn_unused("mask", reason)
        for key in sorted(set_fields(self.loss) & {"loss_type", "reg_coeff", "center_targets", "sigreg_weight",
                                                   "sigreg_on", "sigreg_directions", "target"}):  # fmt: skip
            warn_unused(f"loss.{key}", "app vjepa_droid's loss is L1 teacher forcing + L1 rollout")
        if "ema" in set_fields(self.optimization):
            warn_unused("optimization.ema", "app vjepa_droid's encoder is frozen (no EMA)")
        aug = "app vjepa_droid resizes frames to data.crop_size without augmentation"
        for key in sorted(set_fields(self.data_aug)):
            warn_unused(f"data_aug.{key}", aug)
        for key in sorted(changed & {"crop_scale", "use_horizontal_flip", "use_color_distortion",
                                     "color_jitter_strength", "use_gaussian_blur", "image_folder", "sampling_rate",
                                     "clip_duration", "num_clips", "filter_short_videos", "val_datasets"}):  # fmt: skip
            warn_unused(f"data.{key}", "app vjepa_droid reads trajectory clips at data.fps")
        for key in sorted(set_fields(self.model) & {"use_mask_tokens", "zero_init_mask_tokens"}):
            warn_unused(f"model.{key}", "the action-conditioned predictor has no mask tokens")
        meta = self.meta
        if meta.context_encoder_key != meta.target_encoder_key:
            warn_unused("meta.context_encoder_key", "the frozen encoder is both; it is read from target_encoder_key")
        for key, value in (("meta.pretrained_checkpoint", meta.pretrained_checkpoint),
                           ("optimization.is_anneal", self.optimization.is_anneal)):  # fmt: skip
            if value:
                raise ConfigError(
                    f"{key}: got {value!r}, but app vjepa_droid starts from meta.pretrain_checkpoint (the frozen "
                    "encoder, and its predictor with meta.load_predictor) or resumes its own run"
                )
        if meta.load_predictor and not meta.pretrain_checkpoint:
            raise ConfigError("meta.load_predictor is true but meta.pretrain_checkpoint is null: nothing to load")
        if self.optimization.clip_grad is not None:
            logger.info("app vjepa_droid: optimization.clip_grad clips the predictor's gradients (the official run "
                        "does not clip)")  # fmt: skip

    def _check_lejepa(self) -> None:
        """``app: lejepa``: local crops on the token grid, and no key of the mask-based objectives that would
        contradict it (an error) or that it would ignore (a warning); elsewhere, the LeJEPA keys are unused."""
        lj, loss, changed_loss = self.lejepa, self.loss, set_fields(self.loss)
        if self.app != "lejepa":
            for key in sorted(set_fields(lj)):
                warn_unused(f"lejepa.{key}", f"only app lejepa reads it, this is app {self.app}")
            if "lejepa_lambda" in changed_loss:
                warn_unused("loss.lejepa_lambda", f"only app lejepa reads it, this is app {self.app}")
            return
        d = self.data
        if self.video_data and (len(d.clip_lengths) > 1 or d.num_clips != 1):
            key = "dataset_fpcs" if len(d.clip_lengths) > 1 else "num_clips"
            raise ConfigError(
                f"data.{key}: got {getattr(d, key)!r}, but app lejepa takes one clip of one length per sample (its "
                "views are crops of that clip): remove data.dataset_fpcs, and set data.num_clips: 1"
            )
        if lj.local_crop_size % d.patch_size or lj.local_crop_size > d.crop_size:
            raise ConfigError(
                f"lejepa.local_crop_size: got {lj.local_crop_size}, expected a multiple of data.patch_size "
                f"{d.patch_size} at most data.crop_size {d.crop_size} (the global views' size)"
            )
        if loss.sigreg_weight > 0:
            raise ConfigError(
                f"loss.sigreg_weight is {loss.sigreg_weight}, but app lejepa weighs SIGReg by loss.lejepa_lambda "
                "(its one trade-off): remove loss.sigreg_weight"
            )
        for key, value in (("meta.pretrained_checkpoint", self.meta.pretrained_checkpoint),
                           ("optimization.is_anneal", self.optimization.is_anneal)):  # fmt: skip
            if value:
                raise ConfigError(
                    f"{key}: got {value!r}, but app lejepa starts from scratch or resumes its own run for now (its "
                    "predictor entry holds a projector head)"
                )
        reason = "app lejepa's loss is (1 - loss.lejepa_lambda) * prediction + loss.lejepa_lambda * SIGReg"
        for key in sorted(changed_loss & {"loss_type", "reg_coeff", "center_targets", "sigreg_on", "target"}):
            warn_unused(f"loss.{key}", reason)
        if "ema" in set_fields(self.optimization):
            warn_unused("optimization.ema", "app lejepa has no EMA teacher (the target encoder copies the encoder)")
        assert isinstance(self.mask, ImageMaskConfig)  # not a video app (checked above)
        for key in sorted(set_fields(self.mask)):
            warn_unused(f"mask.{key}", "app lejepa encodes whole views, without masks")
        for key in sorted(set_fields(self.model) & {"pred_depth", "pred_embed_dim", "pred_num_heads"}):
            warn_unused(f"model.{key}", "app lejepa has a projector head (lejepa.projector_dims), no predictor")

    def _check_unused_keys(self) -> None:
        """Keys set for another path than the one ``app`` and ``data.dataset_type`` pick: an error where they
        contradict it (data given for a built-in data set), a warning where they would simply be ignored."""
        d, kind = self.data, self.data.dataset_type.lower()
        changed = set_fields(d)
        if self.video_data:
            image_aug = ("crop_scale", "use_horizontal_flip", "use_color_distortion", "color_jitter_strength",
                         "use_gaussian_blur")  # fmt: skip
            unused = {k: "image augmentation (V-JEPA's is data_aug)" for k in image_aug}
            if self.app == "lejepa":  # its clip views: data.crop_scale and the flip, then data_aug's other keys
                unused = {k: "app lejepa's clip views have no colour or blur augmentation" for k in image_aug[2:]}
                if "random_resize_scale" in set_fields(self.data_aug):
                    warn_unused("data_aug.random_resize_scale", "app lejepa's global views take data.crop_scale")
            unused["image_folder"] = "only image data sets read it"
            if kind == "moving_digits":
                if "datasets" in changed:
                    raise ConfigError(
                        "data.datasets is set, but dataset_type moving_digits generates its own clips: set "
                        "data.dataset_type: VideoDataset to train on the listed CSVs, or remove data.datasets"
                    )
                # dataset_fpcs: the generated clips are read once per entry, at that length.
            else:
                if not d.datasets:
                    raise ConfigError("data.datasets: lists no annotation CSV, required for dataset_type VideoDataset")
                unused["root_path"] = "VideoDataset reads the paths in data.datasets (root_path is for moving_digits)"
                if d.dataset_fpcs is not None and len(d.dataset_fpcs) != len(d.datasets):
                    raise ConfigError(
                        f"data.dataset_fpcs has {len(d.dataset_fpcs)} entries for the {len(d.datasets)} annotation "
                        "files of data.datasets: give one frames-per-clip per file"
                    )
        else:
            if d.datasets or d.datasets_weights is not None:
                fix = "set data.dataset_type: VideoDataset" if self.app == "lejepa" else "set app: vjepa"
                raise ConfigError(
                    f"data.datasets lists video annotation CSVs, but app {self.app} reads images "
                    f"(dataset_type {d.dataset_type}): {fix} or remove data.datasets"
                )
            if kind in BUILTIN_IMAGES:
                refuse_folder_keys("data.", changed, "dataset_type", d.dataset_type, "train")
            elif d.root_path is None:
                raise ConfigError(f"data.root_path: required for dataset_type {d.dataset_type} (the image folder)")
            reason = f"a video key; app {self.app} trains on single images"
            if self.app == "lejepa":
                reason = f"a video key; dataset_type {d.dataset_type} holds images (app lejepa's clips: VideoDataset)"
            video_keys = ("num_frames", "tubelet_size", "sampling_rate", "fps", "num_clips", "clip_duration",
                          "dataset_fpcs", "filter_short_videos", "decoder")  # fmt: skip
            unused = dict.fromkeys(video_keys, reason)
            for key in sorted(set_fields(self.data_aug)):
                warn_unused(f"data_aug.{key}", f"video augmentation; app {self.app}'s switches are data.use_* keys")
        for key in sorted(changed & set(unused)):
            warn_unused(f"data.{key}", unused[key])
        loss = self.loss
        uses_exp = loss.loss_type == "l1" or loss.loss_type == "auto" and self.is_video
        if "loss_exp" in set_fields(loss) and not uses_exp:
            warn_unused("loss.loss_exp", "only the l1 loss (the default for app vjepa) raises to it")


# I-JEPA files name the model under `meta` and flag bf16 with a boolean.
_IJEPA_META_TO_MODEL = {"model_name": "model_name", "pred_depth": "pred_depth", "pred_emb_dim": "pred_embed_dim"}
# Keys of the official V-JEPA 2 files that are other names of ours (official key path -> ours), in files and in
# --set overrides. V-JEPA 2's run folder is the top-level `folder`; its `meta.save_every_freq` keeps a numbered
# checkpoint every N epochs, as our `meta.checkpoint_freq` does. Both names with different values: an error.
# V-JEPA 2-AC's `meta.resume_checkpoint` is the file a resumed run reads, our `meta.read_checkpoint`.
OFFICIAL_KEY_ALIASES = {"folder": "logging.folder", "meta.save_every_freq": "meta.checkpoint_freq",
                        "meta.resume_checkpoint": "meta.read_checkpoint"}  # fmt: skip


def _move_alias(raw: dict[str, Any], official: str, ours: str) -> None:
    *parents, last = official.split(".")
    node: Any = raw
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node:
        return
    value = node.pop(last)
    if official == "meta.save_every_freq" and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1
    ):
        # The official -1 (no numbered checkpoints) has no counterpart: a run here keeps one every checkpoint_freq.
        raise ConfigError(f"meta.save_every_freq: got {value!r}, expected epochs >= 1 between numbered checkpoints")
    *parents, last = ours.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{part}: expected a mapping of keys, got {node!r}")
    if last in node and node[last] != value:
        raise ConfigError(f"{official}={value!r} contradicts {ours}={node[last]!r}: they name the same setting")
    node[last] = value


def normalize_official(raw: dict[str, Any]) -> dict[str, Any]:
    """Map an official file onto the shared schema: I-JEPA's layout, and the keys of :data:`OFFICIAL_KEY_ALIASES`
    under our names; other files pass through unchanged."""
    raw = copy.deepcopy(raw)
    for official, ours in OFFICIAL_KEY_ALIASES.items():
        _move_alias(raw, official, ours)
    mask = raw.get("mask")
    if "app" not in raw and isinstance(mask, dict):
        raw["app"] = "ijepa"
    meta = raw.get("meta") or {}
    moved = {old: new for old, new in _IJEPA_META_TO_MODEL.items() if old in meta}
    if moved:
        model = raw.setdefault("model", {})
        for old, new in moved.items():
            if new in model and model[new] != meta[old]:
                raise ConfigError(f"meta.{old}={meta[old]!r} contradicts model.{new}={model[new]!r}")
            model[new] = meta.pop(old)
    if "use_bfloat16" in meta:
        flag = meta.pop("use_bfloat16")
        if not isinstance(flag, bool):
            raise ConfigError(f"meta.use_bfloat16: got {flag!r}, expected bool")
        meta.setdefault("dtype", "bfloat16" if flag else "float32")
    if isinstance(mask, dict) and "patch_size" in mask:
        raw.setdefault("data", {}).setdefault("patch_size", mask["patch_size"])
    return raw


def _official_override(item: str) -> str:
    """Let overrides use the official key names too (I-JEPA's ``meta.model_name=...``, ``meta.use_bfloat16=true``;
    V-JEPA 2's ``folder=...``, ``meta.save_every_freq=...``)."""
    key, sep, value = item.partition("=")
    name = key.strip()
    if name in OFFICIAL_KEY_ALIASES:
        return f"{OFFICIAL_KEY_ALIASES[name]}{sep}{value}"
    if name.startswith("meta.") and name[5:] in _IJEPA_META_TO_MODEL:
        return f"model.{_IJEPA_META_TO_MODEL[name[5:]]}{sep}{value}"
    if name == "meta.use_bfloat16" and sep:
        flag = yaml.safe_load(value)
        if not isinstance(flag, bool):
            raise ConfigError(f"--set {item}: meta.use_bfloat16 takes true or false")
        return f"meta.dtype={'bfloat16' if flag else 'float32'}"
    return item


def load_pretrain_config(path: str | Path, overrides: list[str] | None = None) -> PretrainConfig:
    """Read, normalise, override (``["optimization.lr=1e-4", ...]``) and validate a pretraining YAML file."""
    path = Path(path)
    raw = read_yaml_sections(path)
    raw = apply_overrides(normalize_official(raw), [_official_override(o) for o in overrides or []])
    try:
        return from_dict(PretrainConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def dump_config(cfg: "DataclassInstance") -> str:
    """The resolved config as YAML (what a run writes next to its outputs)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
