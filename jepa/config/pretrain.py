"""Pretraining config: one schema for I-JEPA (images) and V-JEPA (video).

The sections and key names are the official V-JEPA ones; official I-JEPA files (no ``app``, a single ``mask``
mapping, the model named under ``meta``) are recognised and mapped onto the same schema, so both load unchanged.
"""

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from jepa.config.strict import ConfigError, apply_overrides, from_dict, ignored, read_yaml_sections, to_dict

Pair = tuple[float, float]


def _check_range(where: str, pair: Pair, lo: float, hi: float) -> None:
    if not (lo <= pair[0] <= pair[1] <= hi):
        raise ConfigError(f"{where}: expected {lo} <= min <= max <= {hi}, got {list(pair)}")


@dataclass(kw_only=True)
class DataConfig:
    """Where samples come from and how a batch is shaped."""

    dataset_type: str = "ImageFolder"  # ImageFolder | digits | mnist5k | VideoDataset | moving_digits
    root_path: str | None = None  # ImageFolder: root_path / image_folder / train
    image_folder: str | None = None
    datasets: list[str] = field(default_factory=list)  # video annotation CSVs
    datasets_weights: list[float] | None = None
    batch_size: int = 64  # per device
    crop_size: int = 224
    crop_scale: Pair = (0.3, 1.0)
    patch_size: int = 16
    num_frames: int = 16
    tubelet_size: int = 2
    sampling_rate: int = 4  # frame step within a clip
    num_clips: int = 1
    clip_duration: float | None = None
    filter_short_videos: bool = False
    decoder: Literal["auto", "decord", "pyav"] = "auto"
    decode_one_clip: bool = ignored(True, "clips are always decoded one at a time")
    num_workers: int = 4
    pin_mem: bool = True
    use_horizontal_flip: bool = False
    use_color_distortion: bool = False
    color_jitter_strength: float = 0.0
    use_gaussian_blur: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size: expected >= 1, got {self.batch_size}")
        if self.crop_size % self.patch_size:
            raise ConfigError(f"data.crop_size {self.crop_size} is not a multiple of patch_size {self.patch_size}")
        _check_range("data.crop_scale", self.crop_scale, 0.0, 1.0)
        if self.datasets_weights is not None and len(self.datasets_weights) != len(self.datasets):
            raise ConfigError(
                f"data.datasets_weights has {len(self.datasets_weights)} entries for {len(self.datasets)} datasets"
            )


@dataclass(kw_only=True)
class DataAugConfig:
    """Video augmentation (V-JEPA); image augmentation switches live in ``data`` as in I-JEPA's files."""

    auto_augment: bool = False
    motion_shift: bool = False
    random_resize_aspect_ratio: Pair = (0.75, 1.35)
    random_resize_scale: Pair = (0.3, 1.0)
    reprob: float = 0.0


@dataclass(kw_only=True)
class ImageMaskConfig:
    """I-JEPA multiblock masks: ``num_pred_masks`` target blocks and ``num_enc_masks`` context blocks per image."""

    allow_overlap: bool = False
    aspect_ratio: Pair = (0.75, 1.5)
    enc_mask_scale: Pair = (0.85, 1.0)
    pred_mask_scale: Pair = (0.15, 0.2)
    min_keep: int = 10
    num_enc_masks: int = 1
    num_pred_masks: int = 4
    patch_size: int | None = None  # I-JEPA keeps the patch size here; it must agree with data.patch_size

    def __post_init__(self) -> None:
        _check_range("mask.enc_mask_scale", self.enc_mask_scale, 0.0, 1.0)
        _check_range("mask.pred_mask_scale", self.pred_mask_scale, 0.0, 1.0)
        if not 0 < self.aspect_ratio[0] <= self.aspect_ratio[1]:
            raise ConfigError(f"mask.aspect_ratio: expected 0 < min <= max, got {list(self.aspect_ratio)}")
        if self.num_enc_masks < 1 or self.num_pred_masks < 1:
            raise ConfigError("mask.num_enc_masks and mask.num_pred_masks must be >= 1")


@dataclass(kw_only=True)
class VideoMaskConfig:
    """One V-JEPA multiblock 3D mask config (a batch uses several, each with its own predictor mask token)."""

    aspect_ratio: Pair = (0.75, 1.5)
    num_blocks: int = 8
    spatial_scale: Pair = (0.15, 0.15)
    temporal_scale: Pair = (1.0, 1.0)
    max_temporal_keep: float = 1.0
    max_keep: int | None = None

    def __post_init__(self) -> None:
        _check_range("mask[].spatial_scale", self.spatial_scale, 0.0, 1.0)
        _check_range("mask[].temporal_scale", self.temporal_scale, 0.0, 1.0)
        if self.num_blocks < 1:
            raise ConfigError(f"mask[].num_blocks: expected >= 1, got {self.num_blocks}")


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

    def __post_init__(self) -> None:
        from jepa.models import VIT_SIZES

        custom = (self.embed_dim, self.depth, self.num_heads)
        if self.model_name is None:
            if None in custom:
                raise ConfigError("model: with model_name null, embed_dim, depth and num_heads are required")
        elif self.model_name not in VIT_SIZES:
            raise ConfigError(f"model.model_name: unknown size {self.model_name!r}; known: {', '.join(VIT_SIZES)}")
        elif any(v is not None for v in custom):
            raise ConfigError(
                "model: embed_dim/depth/num_heads are set by model_name; set model_name: null to use them"
            )


@dataclass(kw_only=True)
class LossConfig:
    """Prediction loss. ``auto`` is smooth-L1 for I-JEPA and ``|z - h| ** loss_exp / loss_exp`` for V-JEPA."""

    loss_type: Literal["auto", "smooth_l1", "l1", "l2"] = "auto"
    loss_exp: float = 1.0
    reg_coeff: float = 0.0  # V-JEPA's hinge on the predictions' spread across tokens
    center_targets: bool = False  # subtract the batch mean at each grid position from the targets


@dataclass(kw_only=True)
class MetaConfig:
    """Run-level switches."""

    seed: int = 0
    load_checkpoint: bool = False  # resume: from read_checkpoint, else from <folder>/<write_tag>-latest.pth.tar
    read_checkpoint: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    use_sdpa: bool = True
    log_freq: int = 10  # steps between log lines / CSV rows
    checkpoint_freq: int = 1  # epochs between checkpoints (the last epoch is always saved)
    eval_freq: int = ignored(100, "the official code never reads it either")
    copy_data: bool = ignored(False, "data is read in place")


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

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"optimization.epochs: expected >= 1, got {self.epochs}")
        if not 0 <= self.warmup <= self.epochs:
            raise ConfigError(f"optimization.warmup ({self.warmup}) must lie in [0, epochs={self.epochs}]")
        if self.ipe_scale < 1.0:
            raise ConfigError(f"optimization.ipe_scale: expected >= 1, got {self.ipe_scale}")
        _check_range("optimization.ema", self.ema, 0.0, 1.0)


@dataclass(kw_only=True)
class LoggingConfig:
    folder: str = "runs/default"
    write_tag: str = "jepa"


@dataclass(kw_only=True)
class PretrainConfig:
    """A whole pretraining run. ``app`` picks the modality: ``ijepa`` (images) or ``vjepa`` (video)."""

    app: Literal["ijepa", "vjepa"] = "vjepa"
    nodes: int = 1
    tasks_per_node: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    data_aug: DataAugConfig = field(default_factory=DataAugConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mask: ImageMaskConfig | list[VideoMaskConfig] = field(default_factory=ImageMaskConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)

    @property
    def is_video(self) -> bool:
        return self.app == "vjepa"

    def __post_init__(self) -> None:
        if self.is_video and not isinstance(self.mask, list):
            raise ConfigError("mask: a V-JEPA config needs a list of mask configs")
        if not self.is_video and isinstance(self.mask, list):
            raise ConfigError("mask: an I-JEPA config needs one mask mapping (num_pred_masks, ...), not a list")
        if isinstance(self.mask, ImageMaskConfig) and self.mask.patch_size not in (None, self.data.patch_size):
            raise ConfigError(
                f"mask.patch_size {self.mask.patch_size} differs from data.patch_size {self.data.patch_size}"
            )
        if self.is_video and self.data.num_frames % self.data.tubelet_size:
            raise ConfigError(f"data.num_frames {self.data.num_frames} is not a multiple of tubelet_size")


# I-JEPA files name the model under `meta` and flag bf16 with a boolean.
_IJEPA_META_TO_MODEL = {"model_name": "model_name", "pred_depth": "pred_depth", "pred_emb_dim": "pred_embed_dim"}


def normalize_official(raw: dict[str, Any]) -> dict[str, Any]:
    """Map an official I-JEPA file onto the shared schema; other files pass through unchanged."""
    raw = copy.deepcopy(raw)
    mask = raw.get("mask")
    if "app" not in raw and isinstance(mask, dict):
        raw["app"] = "ijepa"
    meta = raw.get("meta") or {}
    model = raw.setdefault("model", {}) if any(k in meta for k in _IJEPA_META_TO_MODEL) else raw.get("model")
    for old, new in _IJEPA_META_TO_MODEL.items():
        if old in meta:
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
    """Let overrides use I-JEPA's key names too (``meta.model_name=...``, ``meta.use_bfloat16=true``)."""
    key, sep, value = item.partition("=")
    name = key.strip()
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


def dump_config(cfg: Any) -> str:
    """The resolved config as YAML (what a run writes next to its outputs)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
