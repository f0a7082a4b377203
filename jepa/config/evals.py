"""Frozen-evaluation config: the official V-JEPA eval schema (``eval_name``, ``tag``, ``data``, ``optimization``,
``pretrain``), validated strictly.

Where the official code reads a key other than the one the file sets, or reads it differently, we follow the key:

* ``data.frame_step`` is the eval's frame step (the official video eval reads ``pretrain.frame_step`` instead and
  silently uses 4); a ``pretrain.frame_step`` is still accepted and used when ``data.frame_step`` is absent.
* ``optimization.use_bfloat16`` means bfloat16 autocast (the official evals run float16 with a loss scaler); ``auto``
  (the default) means bfloat16 where the hardware computes it natively, float32 elsewhere.
* ``resolution``: the image evals read it from ``data``, the video evals from ``optimization``; either place is
  accepted for both (two different values are an error).
* ``pretrain.checkpoint: null`` evaluates a randomly initialised encoder (the baseline to compare with).
* ``optimization.cache_val_features`` (an extension): the validation features are encoded once and reused by every
  epoch when they fit in memory, so an N-epoch eval costs one encoder pass over the validation split, not N.

Extensions beyond the official schema: ``optimization.multihead_kwargs`` (V-JEPA 2's name) trains several probes
on the same features, one per entry of hyper-parameters, selected on validation; ``classifier`` sets the probe's
heads and blocks; ``folder`` sets where outputs go (default: ``<pretrain.folder>/<eval_name>/<tag>``, as
officially); the built-in data sets ``moving_digits`` (video) and ``digits`` / ``mnist5k`` (images) run anywhere.
"""

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jepa.config.pretrain import check_betas, check_encoder_size, encoder_size
from jepa.config.spec import ARCHITECTURE_KEYS, EncoderSpec, ModelSpec, spec_differences
from jepa.config.strict import (
    ConfigError,
    apply_overrides,
    check_choice,
    check_range,
    from_dict,
    ignored,
    read_yaml_sections,
    require,
    set_fields,
    warn_unused,
)

EVAL_NAMES = ("video_classification_frozen", "image_classification_frozen")
VIDEO_DATASET_TYPES = ("VideoDataset", "moving_digits")
IMAGE_DATASET_NAMES = ("ImageNet", "iNat21", "Places205", "ImageFolder", "digits", "mnist5k")
BUILTIN_IMAGES = ("digits", "mnist5k")
MOVING_DIGITS_CLASSES = {"digit": 10, "motion": 4}
_VIDEO_DATA_KEYS = ("dataset_type", "dataset_train", "dataset_val", "frames_per_clip", "num_segments",
                    "num_views_per_segment", "frame_step", "label", "decoder")  # fmt: skip


@dataclass(kw_only=True)
class EvalDataConfig:
    """Video: annotation CSVs and clip geometry. Images: an ImageFolder root with ``train/`` and ``val/``."""

    # -- video
    dataset_type: str = "VideoDataset"  # VideoDataset | moving_digits
    dataset_train: str | list[str] | None = None
    dataset_val: str | list[str] | None = None
    frames_per_clip: int = 16
    num_segments: int = 1  # clips per video, spread over its length
    num_views_per_segment: int = 1  # spatial crops per clip at validation
    frame_step: int | None = None  # default 4
    label: Literal["digit", "motion"] = "digit"  # moving_digits: which label to predict
    decoder: Literal["auto", "decord", "pyav"] = "auto"
    # -- images
    dataset_name: str | None = None  # ImageNet | iNat21 | Places205 | ImageFolder | digits | mnist5k
    root_path: str | None = None  # images: root_path / image_folder / {train,val}; moving_digits: where clips go
    image_folder: str | None = None
    # -- both
    num_classes: int | None = None
    resolution: int | None = None
    num_workers: int = 8
    pin_mem: bool = True

    def __post_init__(self) -> None:
        check_choice("dataset_type", self.dataset_type, VIDEO_DATASET_TYPES)
        if self.dataset_name is not None:
            check_choice("dataset_name", self.dataset_name, IMAGE_DATASET_NAMES)
        for name in ("frames_per_clip", "num_segments", "num_views_per_segment"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "an int >= 1")
        require(self.num_workers >= 0, "num_workers", self.num_workers, "an int >= 0 (0: load in the main process)")
        require(self.frame_step is None or self.frame_step >= 1, "frame_step", self.frame_step, "null or an int >= 1")
        require(self.num_classes is None or self.num_classes >= 2, "num_classes", self.num_classes, "an int >= 2")
        require(self.resolution is None or self.resolution >= 1, "resolution", self.resolution, "null or pixels >= 1")

    @property
    def image_dataset(self) -> str:
        """``dataset_name``, which an image evaluation requires (:class:`EvalConfig` checks that it is set)."""
        if self.dataset_name is None:
            raise ConfigError(f"data.dataset_name is required: one of {', '.join(IMAGE_DATASET_NAMES)}")
        return self.dataset_name


@dataclass(kw_only=True)
class ProbeOptimConfig:
    """One probe's optimisation: linear warmup ``start_lr -> lr`` over ``warmup`` epochs, cosine to ``final_lr``;
    weight decay cosine from ``weight_decay`` to ``final_weight_decay``."""

    lr: float = 1e-3
    start_lr: float | None = None  # default: lr
    final_lr: float = 0.0
    warmup: float = 0.0  # epochs
    weight_decay: float = 0.01
    final_weight_decay: float | None = None  # default: 1e-6, the official V-JEPA 1 schedule's hidden end value

    def __post_init__(self) -> None:
        if self.start_lr is None:
            self.start_lr = self.lr
        if self.final_weight_decay is None:
            self.final_weight_decay = 1e-6
        for name in ("lr", "start_lr", "final_lr", "warmup", "weight_decay", "final_weight_decay"):
            require(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")


@dataclass(kw_only=True)
class EvalOptimConfig(ProbeOptimConfig):
    """Training of the probe(s). ``multihead_kwargs`` lists the hyper-parameters of each probe trained at once;
    without it one probe uses the section's ``lr``, ``start_lr``, ``final_lr``, ``warmup``, ``weight_decay``."""

    num_epochs: int = 20
    batch_size: int = 4  # per device
    attend_across_segments: bool = False
    resolution: int | None = None
    # true: bfloat16 autocast; auto: where it is native (GPUs, CPUs with AVX-512 BF16 / AMX; jepa.runtime.precision)
    use_bfloat16: bool | Literal["auto"] = "auto"
    # The frozen encoder's features of the validation clips / views (the same every epoch) are computed once and
    # reused: auto = when they fit in a quarter of the free memory (logged), true = always, false = never.
    cache_val_features: bool | Literal["auto"] = "auto"
    multihead_kwargs: list[ProbeOptimConfig] | None = None
    clip_grad: float | None = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    use_pos_embed: bool = ignored(False, "no temporal position table is added across segments (the official default)")

    def __post_init__(self) -> None:
        changed = set_fields(self)  # before the defaults of start_lr / final_weight_decay are filled in
        super().__post_init__()
        require(self.num_epochs >= 1, "num_epochs", self.num_epochs, "an int >= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "an int >= 1")
        require(self.resolution is None or self.resolution >= 1, "resolution", self.resolution, "null or pixels >= 1")
        require(self.clip_grad is None or self.clip_grad > 0, "clip_grad", self.clip_grad, "null (no clipping) or > 0")
        check_betas(self.betas)
        if self.multihead_kwargs is not None and not self.multihead_kwargs:
            raise ConfigError("multihead_kwargs: the list is empty")
        for i, probe in enumerate(self.probes):
            if probe.warmup > self.num_epochs:
                raise ConfigError(f"warmup {probe.warmup} of probe {i} exceeds num_epochs {self.num_epochs}")
        if self.multihead_kwargs:
            for key in sorted(changed & {"lr", "start_lr", "final_lr", "warmup", "weight_decay", "final_weight_decay"}):
                warn_unused(f"optimization.{key}", "each probe takes its values from optimization.multihead_kwargs")

    @property
    def probes(self) -> list[ProbeOptimConfig]:
        """The hyper-parameters of every probe (one without ``multihead_kwargs``)."""
        if self.multihead_kwargs:
            return list(self.multihead_kwargs)
        return [
            ProbeOptimConfig(
                lr=self.lr,
                start_lr=self.start_lr,
                final_lr=self.final_lr,
                warmup=self.warmup,
                weight_decay=self.weight_decay,
                final_weight_decay=self.final_weight_decay,
            )
        ]


@dataclass(kw_only=True)
class EvalPretrainConfig:
    """The frozen encoder: architecture, and the checkpoint it comes from (``folder / checkpoint``)."""

    model_name: str | None = "vit_large"  # a released size; null: give embed_dim / depth / num_heads
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    checkpoint_key: Literal["target_encoder", "encoder"] = "target_encoder"
    folder: str | None = None
    checkpoint: str | None = None  # null: a randomly initialised encoder
    patch_size: int = 16
    frames_per_clip: int = 1  # 1: an image encoder (2D patches); > 1: a video encoder of tubelets
    tubelet_size: int = 2
    uniform_power: bool = False
    use_rope: bool = False
    use_sdpa: bool = True
    use_silu: bool = False
    wide_silu: bool = True
    tight_silu: bool = ignored(False, "the V-JEPA 1 encoder never reads it; the SiLU MLP width follows wide_silu")
    clip_duration: float | None = None  # seconds per eval clip: a per-video frame step from its frame rate
    frame_step: int | None = None  # read only when data.frame_step is absent (where the official code looks)
    write_tag: str = "jepa"
    seed: int = 0  # random initialisation (checkpoint: null) and data order

    def __post_init__(self) -> None:
        # num_heads may come from the checkpoint's stored config (see evals.encoder).
        check_encoder_size(self.model_name, self.embed_dim, self.depth, self.num_heads, heads_required=False)
        for name in ("patch_size", "frames_per_clip", "tubelet_size"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "an int >= 1")
        if self.frames_per_clip > 1 and self.frames_per_clip % self.tubelet_size:
            raise ConfigError(
                f"frames_per_clip {self.frames_per_clip} is not a multiple of tubelet_size {self.tubelet_size}"
            )
        require(self.clip_duration is None or self.clip_duration > 0, "clip_duration", self.clip_duration,
                "null or seconds > 0")  # fmt: skip
        require(self.frame_step is None or self.frame_step >= 1, "frame_step", self.frame_step, "null or an int >= 1")
        require(0 <= self.seed < 2**32, "seed", self.seed, "an int in [0, 2**32)")

    @property
    def is_video(self) -> bool:
        return self.frames_per_clip > 1

    @property
    def size(self) -> dict[str, int | None]:
        """The encoder's ``embed_dim``, ``depth`` and ``num_heads`` (None: to be read from the checkpoint)."""
        return encoder_size(self.model_name, self.embed_dim, self.depth, self.num_heads)

    @property
    def checkpoint_path(self) -> Path | None:
        if self.checkpoint is None:
            return None
        path = Path(self.checkpoint)
        return path if path.is_absolute() or self.folder is None else Path(self.folder) / path


@dataclass(kw_only=True)
class EvalAugConfig:
    """Training augmentation of the probe's inputs; the defaults are the official evals' (video: RandAugment,
    random resized crop of 8-100% of the area, erasing 0.25, no flip; images: timm's ``original`` AutoAugment,
    random resized crop, flip, erasing 0.25)."""

    random_resize_scale: tuple[float, float] = (0.08, 1.0)
    random_resize_aspect_ratio: tuple[float, float] = (0.75, 4 / 3)
    auto_augment: bool = True
    reprob: float = 0.25
    horizontal_flip: bool | None = None  # default: False for video (the official eval), True for images (timm)

    def __post_init__(self) -> None:
        check_range("random_resize_scale", self.random_resize_scale, 0.0, 1.0, lo_open=True)
        check_range("random_resize_aspect_ratio", self.random_resize_aspect_ratio, 0.0, math.inf, lo_open=True)
        require(0 <= self.reprob <= 1, "reprob", self.reprob, "a probability in [0, 1]")


@dataclass(kw_only=True)
class ClassifierConfig:
    """The attentive probe: one query, ``num_probe_blocks`` blocks (the first a cross-attention block)."""

    num_heads: int | None = None  # default: the encoder's
    num_probe_blocks: int = 1
    blocks_on_queries: bool = False  # V-JEPA 1's order for blocks after the first (it only matters for depth > 1)

    def __post_init__(self) -> None:
        require(self.num_heads is None or self.num_heads >= 1, "num_heads", self.num_heads,
                "null (the encoder's) or an int >= 1")  # fmt: skip
        require(self.num_probe_blocks >= 1, "num_probe_blocks", self.num_probe_blocks, "an int >= 1")


@dataclass(kw_only=True)
class EvalConfig:
    """A whole frozen evaluation."""

    eval_name: Literal["video_classification_frozen", "image_classification_frozen"]
    tag: str | None = None
    resume_checkpoint: bool = False
    folder: str | None = None  # outputs; default <pretrain.folder or runs>/<eval_name>/<tag>
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int | None = None
    mem_per_gpu: str | None = None
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    optimization: EvalOptimConfig = field(default_factory=EvalOptimConfig)
    pretrain: EvalPretrainConfig = field(default_factory=EvalPretrainConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    data_aug: EvalAugConfig = field(default_factory=EvalAugConfig)

    @property
    def is_video(self) -> bool:
        return self.eval_name == "video_classification_frozen"

    def __post_init__(self) -> None:
        require(self.nodes >= 1, "nodes", self.nodes, "an int >= 1")
        require(self.tasks_per_node >= 1, "tasks_per_node", self.tasks_per_node, "an int >= 1")
        d, opt, p = self.data, self.optimization, self.pretrain
        if d.resolution is not None and opt.resolution is not None and d.resolution != opt.resolution:
            raise ConfigError(
                f"data.resolution ({d.resolution}) and optimization.resolution ({opt.resolution}) disagree"
            )
        if self.resolution % p.patch_size:
            raise ConfigError(f"resolution {self.resolution} is not a multiple of patch_size {p.patch_size}")
        width, heads = p.size["embed_dim"], self.classifier.num_heads or p.size["num_heads"]
        if width is not None and heads is not None and width % heads:
            which = "classifier.num_heads" if self.classifier.num_heads else "pretrain.num_heads"
            raise ConfigError(f"{which} {heads} does not divide the encoder width {width} (the probe's width)")
        if self.is_video:
            if d.dataset_type.lower() == "videodataset":
                for key in ("dataset_train", "dataset_val", "num_classes"):
                    if getattr(d, key) is None:
                        raise ConfigError(f"data.{key} is required for a VideoDataset evaluation")
            if p.is_video and d.frames_per_clip % p.tubelet_size:
                raise ConfigError(
                    f"data.frames_per_clip {d.frames_per_clip} is not a multiple of tubelet_size {p.tubelet_size}"
                )
        else:
            if d.dataset_name is None:
                raise ConfigError(f"data.dataset_name is required: one of {', '.join(IMAGE_DATASET_NAMES)}")
            if d.dataset_name.lower() not in BUILTIN_IMAGES:
                for key in ("root_path", "num_classes"):
                    if getattr(d, key) is None:
                        raise ConfigError(f"data.{key} is required for an {d.dataset_name} evaluation")
        self._check_unused_keys()
        if self.resume_checkpoint is None:
            self.resume_checkpoint = False

    def _check_unused_keys(self) -> None:
        """Data keys of the other modality or data set: an error where they contradict the chosen data (CSVs
        given for a built-in data set), a warning where they would simply be ignored."""
        d, changed = self.data, set_fields(self.data)
        if self.is_video:
            if d.dataset_type.lower() == "moving_digits":
                for key in ("dataset_train", "dataset_val"):
                    if key in changed:
                        raise ConfigError(
                            f"data.{key} is set, but dataset_type moving_digits generates its own clips: set "
                            f"data.dataset_type: VideoDataset to evaluate on the CSVs, or remove data.{key}"
                        )
                classes = MOVING_DIGITS_CLASSES[d.label]
                if d.num_classes not in (None, classes):
                    raise ConfigError(
                        f"data.num_classes: got {d.num_classes}, but moving_digits with label {d.label} has {classes}"
                    )
                unused = {"image_folder": "an image key", "dataset_name": "an image key"}
            else:
                unused = {"label": "moving_digits only", "image_folder": "an image key", "dataset_name": "an image key",
                          "root_path": "VideoDataset reads the CSVs' paths"}  # fmt: skip
        else:
            for key in ("dataset_train", "dataset_val"):
                if key in changed:
                    raise ConfigError(
                        f"data.{key} lists video annotation CSVs, but {self.eval_name} reads an image folder "
                        "(data.root_path / data.image_folder)"
                    )
            if d.image_dataset.lower() in BUILTIN_IMAGES:
                for key in ("root_path", "image_folder"):
                    if key in changed:
                        raise ConfigError(
                            f"data.{key} is set, but dataset_name {d.dataset_name} is built in and reads no folder: "
                            "set data.dataset_name: ImageFolder to evaluate on it, or remove the key"
                        )
            unused = {k: f"a video key; {self.eval_name} reads images" for k in _VIDEO_DATA_KEYS}
        for key in sorted(changed & set(unused)):
            warn_unused(f"data.{key}", unused[key])

    @property
    def resolution(self) -> int:
        """The crop size: ``data.resolution`` or ``optimization.resolution`` (224 when neither is set)."""
        return self.data.resolution or self.optimization.resolution or 224

    @property
    def frame_step(self) -> int:
        return self.data.frame_step or self.pretrain.frame_step or 4

    def encoder_spec(self) -> EncoderSpec:
        """The frozen encoder ``pretrain`` describes, at the eval's resolution. ``num_heads`` may be None (left to
        the checkpoint's stored config); the schema has no key for a custom size's MLP ratio, input channels, qkv
        bias or norm eps, so they are the factories' (4, 3, True, 1e-6) unless a stored config gives them."""
        p = self.pretrain
        size = {} if p.model_name else dict(embed_dim=p.embed_dim, depth=p.depth, num_heads=p.num_heads)
        return EncoderSpec.of(
            p.model_name,
            **size,
            img_size=self.resolution,
            patch_size=p.patch_size,
            num_frames=p.frames_per_clip,
            tubelet_size=p.tubelet_size,
            uniform_power=p.uniform_power,
            use_rope=p.use_rope,
            use_sdpa=p.use_sdpa,
            use_silu=p.use_silu,
            wide_silu=p.wide_silu,
        )

    @property
    def output_folder(self) -> Path:
        base = Path(self.folder) if self.folder else Path(self.pretrain.folder or "runs") / self.eval_name
        return base / self.tag if self.tag else base


# The architecture keys an eval's ``pretrain`` section can state (see EvalConfig.encoder_spec); the others are
# taken from the checkpoint's stored config. The spec's num_frames is the section's frames_per_clip.
_UNSTATED = ("mlp_ratio", "in_chans", "qkv_bias", "norm_eps")
EVAL_ARCHITECTURE_KEYS = tuple(k for k in ARCHITECTURE_KEYS if k not in _UNSTATED)
_EVAL_KEY_NAMES = {"num_frames": "frames_per_clip"}


def checkpoint_disagreements(cfg: EvalConfig, stored: ModelSpec | EncoderSpec, path: str | Path) -> list[str]:
    """Where ``cfg.pretrain`` describes another encoder than the one checkpoint ``path`` was trained as
    (``stored``: the spec of its stored config), one message per key naming both values; empty when they agree."""
    return [
        f"pretrain.{_EVAL_KEY_NAMES.get(d.key, d.key)}: got {d.config!r}, but the checkpoint {path} was trained with "
        f"{d.checkpoint!r} (its stored config)"
        for d in spec_differences(stored, cfg.encoder_spec(), EVAL_ARCHITECTURE_KEYS)
    ]


def normalize_vjepa2(raw: dict[str, Any]) -> dict[str, Any]:
    """Map a V-JEPA 2 eval file (``experiment`` + ``model_kwargs``) onto the V-JEPA 1 schema; others pass through.

    Only what the classification evals use is mapped: ``experiment.{data, optimization, classifier}`` and the
    encoder of ``model_kwargs.pretrain_kwargs``; ``wrapper_kwargs`` (frame counts for images, position tables) are
    read where they change the result.
    """
    if "experiment" not in raw and "model_kwargs" not in raw:
        return raw
    raw = copy.deepcopy(raw)
    experiment = raw.pop("experiment", None) or {}
    model_kwargs = raw.pop("model_kwargs", None) or {}
    for section in ("data", "optimization", "classifier"):
        if section in experiment:
            raw[section] = experiment.pop(section)
    if experiment:
        raise ConfigError(f"experiment: unknown keys {sorted(experiment)}")
    for key in ("num_workers", "max_workers"):  # V-JEPA 2 sets data-loading workers at the top (under either name)
        if key in raw:
            raw.setdefault("data", {}).setdefault("num_workers", raw.pop(key))
    encoder = dict((model_kwargs.get("pretrain_kwargs") or {}).get("encoder") or {})
    wrapper = model_kwargs.get("wrapper_kwargs") or {}
    pretrain: dict[str, Any] = {"checkpoint": model_kwargs.get("checkpoint")}
    for key in ("model_name", "checkpoint_key", "patch_size", "tubelet_size", "uniform_power", "use_rope",
                "use_sdpa", "use_silu", "wide_silu"):  # fmt: skip
        if key in encoder:
            pretrain[key] = encoder.pop(key)
    frames = encoder.pop("img_temporal_dim_size", None) or wrapper.get("img_as_video_nframes")
    # V-JEPA 2 encoders are video encoders (RoPE, tubelets of 2); images become static clips of that many frames.
    pretrain["frames_per_clip"] = frames or raw.get("data", {}).get("frames_per_clip") or 16
    raw["pretrain"] = pretrain
    return raw


def load_eval_config(path: str | Path, overrides: list[str] | None = None) -> EvalConfig:
    """Read, normalise, override (``["optimization.lr=1e-4", ...]``) and validate an eval YAML file."""
    path = Path(path)
    raw = read_yaml_sections(path)
    try:
        raw = apply_overrides(normalize_vjepa2(raw), list(overrides or []))
        if "eval_name" not in raw:
            raise ConfigError(f"eval_name is required ({' or '.join(EVAL_NAMES)})")
        return from_dict(EvalConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
