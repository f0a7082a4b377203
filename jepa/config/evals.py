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

V-JEPA 2 files (``experiment`` + ``model_kwargs``) are mapped key by key (:func:`normalize_vjepa2`): their
``wrapper_kwargs`` become ``wrapper`` (``out_layers``: a multi-level probe over several blocks' tokens),
``pretrain_kwargs.predictor`` becomes ``predictor``, ``module_name`` is checked against ``eval_name``, and
``val_only: true`` (the official inference files) evaluates saved probes once without training them. Keys that
nothing reads are listed in one registry (:func:`accepted_unused_keys`) and logged when a file sets them.
"""

import copy
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from jepa.config.pretrain import check_betas, check_encoder_size, encoder_size
from jepa.config.spec import ARCHITECTURE_KEYS, EncoderSpec, ModelSpec, spec_differences
from jepa.config.strict import (
    ConfigError,
    apply_overrides,
    check_choice,
    check_range,
    from_dict,
    ignored,
    ignored_keys,
    read_yaml_sections,
    refuse_folder_keys,
    require,
    set_fields,
    warn_unused,
)

if TYPE_CHECKING:
    from jepa.config.anticipation import AnticipationConfig
    from jepa.config.planning import PlanningConfig

logger = logging.getLogger(__name__)

EVAL_NAMES = ("video_classification_frozen", "image_classification_frozen", "action_anticipation_frozen",
              "video_classification_finetune", "image_classification_finetune", "planning")  # fmt: skip
# What the fine-tuning evals train beyond a probe; errors elsewhere, where the encoder is frozen.
FINETUNE_KEYS = {"layer_decay": 1.0, "drop_path": 0.0, "ema_decay": None}
# The official V-JEPA 2 ``model_kwargs.module_name`` of each eval (the wrapper its code builds around the encoder).
MODULE_NAMES = {
    "video_classification_frozen": (
        "evals.video_classification_frozen.modelcustom.vit_encoder_multiclip",
        "evals.video_classification_frozen.modelcustom.vit_encoder_multiclip_multilevel",
    ),
    "image_classification_frozen": ("evals.image_classification_frozen.modelcustom.vit_encoder",),
    "action_anticipation_frozen": ("evals.action_anticipation_frozen.modelcustom.vit_encoder_predictor_concat_ar",),
}
VIDEO_DATASET_TYPES = ("VideoDataset", "moving_digits")
IMAGE_DATASET_NAMES = ("ImageNet", "iNat21", "Places205", "ImageFolder", "digits", "mnist5k")
BUILTIN_IMAGES = ("digits", "mnist5k")
MOVING_DIGITS_CLASSES = {"digit": 10, "motion": 4}
_VIDEO_DATA_KEYS = ("dataset_type", "dataset_train", "dataset_val", "frames_per_clip", "num_segments",
                    "num_views_per_segment", "frame_step", "label", "decoder")  # fmt: skip


@dataclass(kw_only=True)
class EvalDataBase:
    """What the data section of every eval has: the clip length (video), the decoder, the crop size and the
    loading workers."""

    frames_per_clip: int = 16
    decoder: Literal["auto", "decord", "pyav"] = "auto"
    resolution: int | None = None  # default: optimization.resolution, else 224
    num_workers: int = 8

    def __post_init__(self) -> None:
        require(self.frames_per_clip >= 1, "frames_per_clip", self.frames_per_clip, "an int >= 1")
        require(self.num_workers >= 0, "num_workers", self.num_workers, "an int >= 0 (0: load in the main process)")
        require(self.resolution is None or self.resolution >= 1, "resolution", self.resolution, "null or pixels >= 1")


@dataclass(kw_only=True)
class EvalDataConfig(EvalDataBase):
    """Video: annotation CSVs and clip geometry. Images: an ImageFolder root with ``train/`` and ``val/``."""

    # -- video
    dataset_type: str = "VideoDataset"  # VideoDataset | moving_digits
    dataset_train: str | list[str] | None = None
    dataset_val: str | list[str] | None = None
    num_segments: int = 1  # clips per video, spread over its length
    num_views_per_segment: int = 1  # spatial crops per clip at validation
    frame_step: int | None = None  # default 4
    label: Literal["digit", "motion"] = "digit"  # moving_digits: which label to predict
    # -- images
    dataset_name: str | None = None  # ImageNet | iNat21 | Places205 | ImageFolder | digits | mnist5k
    root_path: str | None = None  # images: root_path / image_folder / {train,val}; moving_digits: where clips go
    image_folder: str | None = None
    # -- both
    num_classes: int | None = None
    pin_mem: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("dataset_type", self.dataset_type, VIDEO_DATASET_TYPES)
        if self.dataset_name is not None:
            check_choice("dataset_name", self.dataset_name, IMAGE_DATASET_NAMES)
        for name in ("num_segments", "num_views_per_segment"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "an int >= 1")
        require(self.frame_step is None or self.frame_step >= 1, "frame_step", self.frame_step, "null or an int >= 1")
        require(self.num_classes is None or self.num_classes >= 2, "num_classes", self.num_classes, "an int >= 2")

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
    # Classification: the loss's label smoothing, and timm's Mixup / CutMix of the training inputs (timm.data.Mixup:
    # alphas of the Beta distributions, the probability to mix a batch, and to pick CutMix when both are on).
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    # Fine-tuning (eval_name *_finetune) only: layer-wise LR decay (of an encoder of depth D, block i = 0 .. D - 1
    # trains at lr * layer_decay ** (D - i), the patch embedding and position table at lr * layer_decay ** (D + 1),
    # the final norm and the head at lr), the encoder's drop-path rate, and the decay of a weight EMA of encoder +
    # head (null: none), whose weights are then the ones evaluated.
    layer_decay: float = 1.0
    drop_path: float = 0.0
    ema_decay: float | None = None

    @property
    def mixes(self) -> bool:
        """Whether training batches are mixed (Mixup or CutMix)."""
        return (self.mixup > 0 or self.cutmix > 0) and self.mixup_prob > 0

    def __post_init__(self) -> None:
        changed = set_fields(self)  # before the defaults of start_lr / final_weight_decay are filled in
        super().__post_init__()
        require(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "in [0, 1)")
        for key in ("mixup", "cutmix"):
            require(getattr(self, key) >= 0, key, getattr(self, key), ">= 0 (0: off)")
        for key in ("mixup_prob", "mixup_switch_prob"):
            require(0 <= getattr(self, key) <= 1, key, getattr(self, key), "a probability in [0, 1]")
        require(not self.mixes or self.batch_size % 2 == 0, "batch_size", self.batch_size,
                "an even number with mixup / cutmix (timm mixes each batch with itself reversed)")  # fmt: skip
        require(0 < self.layer_decay <= 1, "layer_decay", self.layer_decay, "in (0, 1] (1: no decay)")
        require(0 <= self.drop_path < 1, "drop_path", self.drop_path, "in [0, 1)")
        require(self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay", self.ema_decay, "null or in (0, 1)")
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
    # attentive: the cross-attention probe; linear: mean of the tokens -> LayerNorm -> linear (MAE's fine-tuning
    # head), where num_heads, num_probe_blocks and blocks_on_queries mean nothing.
    head: Literal["attentive", "linear"] = "attentive"

    def __post_init__(self) -> None:
        require(self.num_heads is None or self.num_heads >= 1, "num_heads", self.num_heads,
                "null (the encoder's) or an int >= 1")  # fmt: skip
        require(self.num_probe_blocks >= 1, "num_probe_blocks", self.num_probe_blocks, "an int >= 1")


@dataclass(kw_only=True)
class WrapperConfig:
    """How the frozen encoder's tokens are formed (V-JEPA 2's ``model_kwargs.wrapper_kwargs``; defaults are the
    official wrappers').

    ``out_layers``: the blocks whose outputs (each through the encoder's final norm) the probe reads, their tokens
    concatenated (V-JEPA 2's multi-level probe); null: the last block only. ``max_frames``: the frames the temporal
    position table of ``use_pos_embed`` covers (the official wrapper neither splits nor truncates longer clips;
    with ``use_pos_embed`` false, as in every official file, it has no effect). ``img_as_video_nframes``:
    an image becomes a static clip of that many frames for a video encoder. ``no_predictor``, ``num_output_frames``,
    ``num_steps``: the anticipation eval's use of the predictor (skip it; frames it predicts per step; steps).
    """

    out_layers: list[int] | None = None
    max_frames: int = ignored(128, "it only sizes the temporal position table of use_pos_embed, which is false")
    use_pos_embed: bool = False
    img_as_video_nframes: int | None = None
    no_predictor: bool = False
    num_output_frames: int = 2
    num_steps: int = 1

    def __post_init__(self) -> None:
        if self.out_layers is not None:
            require(len(self.out_layers) >= 1 and all(i >= 0 for i in self.out_layers), "out_layers",
                    self.out_layers, "null or a non-empty list of block indices >= 0")  # fmt: skip
            require(len(set(self.out_layers)) == len(self.out_layers), "out_layers", self.out_layers,
                    "distinct block indices")  # fmt: skip
        require(self.max_frames >= 1, "max_frames", self.max_frames, "an int >= 1")
        # The official table is indexed by the frame positions of each clip in its video, which our clip batches
        # do not carry; every official file sets false.
        require(not self.use_pos_embed, "use_pos_embed", self.use_pos_embed,
                "false (a temporal position table across segments is not implemented)")  # fmt: skip
        require(self.img_as_video_nframes is None or self.img_as_video_nframes >= 1, "img_as_video_nframes",
                self.img_as_video_nframes, "null or an int >= 1")  # fmt: skip
        require(self.num_output_frames >= 1, "num_output_frames", self.num_output_frames, "an int >= 1")
        require(self.num_steps >= 1, "num_steps", self.num_steps, "an int >= 1")


@dataclass(kw_only=True)
class EvalPredictorConfig:
    """The pretrained predictor an eval runs after the frozen encoder (V-JEPA 2's
    ``model_kwargs.pretrain_kwargs.predictor``; the action anticipation eval). The defaults are the official
    predictor's; its width, patch and tubelet sizes come from the encoder."""

    model_name: str = "vit_predictor"
    checkpoint_key: str = "predictor"
    num_frames: int = 1
    depth: int = 6
    num_heads: int = 12
    predictor_embed_dim: int = 384
    num_mask_tokens: int = 2
    uniform_power: bool = False
    use_mask_tokens: bool = False
    use_sdpa: bool = True
    use_silu: bool = False
    wide_silu: bool = True
    use_rope: bool = False

    def __post_init__(self) -> None:
        require(self.model_name == "vit_predictor", "model_name", self.model_name, "'vit_predictor'")
        for name in ("num_frames", "depth", "num_heads", "predictor_embed_dim", "num_mask_tokens"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "an int >= 1")
        if self.predictor_embed_dim % self.num_heads:
            raise ConfigError(
                f"num_heads {self.num_heads} does not divide predictor_embed_dim {self.predictor_embed_dim}"
            )


@dataclass(kw_only=True)
class EvalConfigBase:
    """What every eval config has (each eval's config adds its own ``data`` and ``optimization``): where outputs
    go, the jobs, the frozen encoder, the probe, how its tokens are formed, and ``val_only``; the checks that
    concern them together (resolutions, patch size, probe heads)."""

    eval_name: str
    tag: str | None = None
    resume_checkpoint: bool = False
    folder: str | None = None  # outputs; default <pretrain.folder or runs>/<eval_name>/<tag>
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int | None = None
    mem_per_gpu: str | None = None
    data: EvalDataBase
    optimization: EvalOptimConfig
    pretrain: EvalPretrainConfig = field(default_factory=EvalPretrainConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    wrapper: WrapperConfig = field(default_factory=WrapperConfig)
    module_name: str | None = None  # V-JEPA 2's wrapper module (MODULE_NAMES); checked against eval_name
    # Evaluate saved probes once, without training (V-JEPA 2's inference configs): from probe_checkpoint, or from
    # the output folder's latest (ours, <write_tag>-latest.pth.tar, or the official latest.pt).
    val_only: bool = False
    probe_checkpoint: str | None = None  # val_only: the probe file (relative to the output folder unless absolute)

    def __post_init__(self) -> None:
        check_module_name(self.eval_name, self.module_name, self.wrapper.out_layers)
        if self.probe_checkpoint is not None and not self.val_only:
            warn_unused("probe_checkpoint", "read with val_only: true (training resumes from latest)")
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
        if self.resume_checkpoint is None:
            self.resume_checkpoint = False

    @property
    def resolution(self) -> int:
        """The crop size: ``data.resolution`` or ``optimization.resolution`` (224 when neither is set)."""
        return self.data.resolution or self.optimization.resolution or 224

    def encoder_spec(self) -> EncoderSpec:
        """The frozen encoder ``pretrain`` describes, at the eval's resolution, over ``pretrain.frames_per_clip``
        frames. ``num_heads`` may be None (left to the checkpoint's stored config); the schema has no key for a
        custom size's MLP ratio, input channels, qkv bias or norm eps, so they are the factories' (4, 3, True,
        1e-6) unless a stored config gives them."""
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
            drop_path_rate=self.optimization.drop_path,
        )

    def checkpoint_model(self) -> EncoderSpec | ModelSpec:
        """What a pretrained checkpoint must have been trained as for this eval (compared with the config it stores,
        :func:`checkpoint_disagreements`): the encoder of :meth:`encoder_spec`."""
        return self.encoder_spec()

    @property
    def output_folder(self) -> Path:
        base = Path(self.folder) if self.folder else Path(self.pretrain.folder or "runs") / self.eval_name
        return base / self.tag if self.tag else base

    def probe_checkpoint_paths(self) -> list[Path]:
        """Where ``val_only`` reads the probes, in order: ``probe_checkpoint`` (relative to the output folder
        unless absolute) when set; else the output folder's ``<write_tag>-latest.pth.tar`` (ours), then
        ``latest.pt`` (the official V-JEPA 2 name: ``<folder>/<eval_name>/<tag>/latest.pt``)."""
        if self.probe_checkpoint is not None:
            path = Path(self.probe_checkpoint)
            return [path if path.is_absolute() else self.output_folder / path]
        return [self.output_folder / f"{self.pretrain.write_tag}-latest.pth.tar", self.output_folder / "latest.pt"]

    def find_probe_checkpoint(self) -> Path:
        """The probe file ``val_only`` evaluates (:meth:`probe_checkpoint_paths`); FileNotFoundError naming every
        place looked at when there is none (never an evaluation of untrained probes)."""
        paths = self.probe_checkpoint_paths()
        for path in paths:
            if path.is_file():
                return path
        key = "probe_checkpoint" if self.probe_checkpoint is not None else "val_only"
        raise FileNotFoundError(f"{key}: no probe checkpoint to evaluate: {' nor '.join(map(str, paths))} exists")


@dataclass(kw_only=True)
class EvalConfig(EvalConfigBase):
    """A whole classification evaluation (video or images): probes on a frozen encoder, or (``*_finetune``) the
    encoder fine-tuned with its head."""

    eval_name: Literal[
        "video_classification_frozen", "image_classification_frozen", "video_classification_finetune",
        "image_classification_finetune",
    ]  # fmt: skip
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    optimization: EvalOptimConfig = field(default_factory=EvalOptimConfig)
    data_aug: EvalAugConfig = field(default_factory=EvalAugConfig)
    predictor: EvalPredictorConfig | None = None  # read by the action anticipation eval only

    @property
    def is_video(self) -> bool:
        return self.eval_name.startswith("video_")

    @property
    def finetune(self) -> bool:
        """Whether the encoder is trained with the head (``*_finetune``), not frozen."""
        return self.eval_name.endswith("_finetune")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_out_layers(self.wrapper.out_layers, self.pretrain.size["depth"])
        self._check_finetune()
        if self.classifier.head == "linear":
            for key in sorted(set_fields(self.classifier) & {"num_heads", "num_probe_blocks", "blocks_on_queries"}):
                warn_unused(f"classifier.{key}", "the linear head has no attention")
        if self.predictor is not None:
            warn_unused("predictor", f"{self.eval_name} runs the encoder only (a predictor is read by "
                        "action_anticipation_frozen)")  # fmt: skip
        for key in sorted(set_fields(self.wrapper) & {"no_predictor", "num_output_frames", "num_steps"}):
            warn_unused(f"wrapper.{key}", "action_anticipation_frozen only")
        if self.is_video and self.wrapper.img_as_video_nframes is not None:
            warn_unused("wrapper.img_as_video_nframes", "an image key; video clips keep data.frames_per_clip frames")
        d, p = self.data, self.pretrain
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

    def _check_finetune(self) -> None:
        opt = self.optimization
        if not self.finetune:
            for key in sorted(k for k, default in FINETUNE_KEYS.items() if getattr(opt, k) != default):
                raise ConfigError(f"optimization.{key}: fine-tuning only (eval_name *_finetune); {self.eval_name} "
                                  "keeps the encoder frozen")  # fmt: skip
            return
        if len(opt.probes) != 1:
            raise ConfigError(f"optimization.multihead_kwargs: fine-tuning trains one encoder with one head, got "
                              f"{len(opt.probes)} sets of hyper-parameters")  # fmt: skip
        if opt.cache_val_features is True:
            raise ConfigError("optimization.cache_val_features: true, but a fine-tuned encoder's features change "
                              "every epoch")  # fmt: skip

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
                refuse_folder_keys("data.", changed, "dataset_name", d.dataset_name, "evaluate")
            unused = {k: f"a video key; {self.eval_name} reads images" for k in _VIDEO_DATA_KEYS}
        for key in sorted(changed & set(unused)):
            warn_unused(f"data.{key}", unused[key])

    @property
    def frame_step(self) -> int:
        return self.data.frame_step or self.pretrain.frame_step or 4


def check_module_name(eval_name: str, module_name: str | None, out_layers: list[int] | None) -> None:
    """``model_kwargs.module_name`` (V-JEPA 2) must be a wrapper of ``eval_name`` (:data:`MODULE_NAMES`), and the
    multi-level video wrapper goes with ``wrapper.out_layers`` (the official one-level wrapper takes none, the
    multi-level one needs them)."""
    if module_name is None:
        return
    known = MODULE_NAMES.get(eval_name, ())
    if module_name not in known:
        raise ConfigError(f"module_name: got {module_name!r}, expected one of {', '.join(known)} (the official "
                          f"wrappers of eval_name {eval_name})")  # fmt: skip
    if module_name.endswith("_multilevel") and out_layers is None:
        raise ConfigError(f"module_name {module_name} probes several blocks: wrapper.out_layers is required")
    if module_name.endswith(".vit_encoder_multiclip") and out_layers is not None:
        raise ConfigError(f"wrapper.out_layers {out_layers}: module_name {module_name} probes the last block only; "
                          f"use {module_name}_multilevel")  # fmt: skip


def check_out_layers(out_layers: list[int] | None, depth: int | None) -> None:
    """Every block index of ``wrapper.out_layers`` exists in an encoder of ``depth`` blocks (None: unknown yet,
    checked when the encoder is built)."""
    if out_layers is not None and depth is not None:
        require(max(out_layers) < depth, "wrapper.out_layers", out_layers, f"block indices < depth {depth}")


# The architecture keys an eval's ``pretrain`` section can state (see EvalConfig.encoder_spec); the others are
# taken from the checkpoint's stored config. The spec's num_frames is the section's frames_per_clip.
_UNSTATED = ("mlp_ratio", "in_chans", "qkv_bias", "norm_eps")
EVAL_ARCHITECTURE_KEYS = tuple(k for k in ARCHITECTURE_KEYS if k not in _UNSTATED)
_EVAL_KEY_NAMES = {"num_frames": "frames_per_clip"}


def checkpoint_disagreements(cfg: EvalConfigBase, stored: ModelSpec | EncoderSpec, path: str | Path) -> list[str]:
    """Where ``cfg`` describes another model than the one checkpoint ``path`` was trained as (``stored``: the spec
    of its stored config; :meth:`EvalConfigBase.checkpoint_model`), one message per key naming both values; empty
    when they agree."""
    return [
        f"{_eval_key(d.key)}: got {d.config!r}, but the checkpoint {path} was trained with {d.checkpoint!r} (its "
        "stored config)"
        for d in spec_differences(stored, cfg.checkpoint_model(), EVAL_ARCHITECTURE_KEYS)
    ]


def _eval_key(key: str) -> str:
    """The eval config's key of a spec key: ``pretrain.<key>`` for the encoder's, ``predictor.<key>`` as is."""
    return key if key.startswith("predictor.") else f"pretrain.{_EVAL_KEY_NAMES.get(key, key)}"


# How a V-JEPA 2 eval file (``experiment`` + ``model_kwargs``) maps onto this schema. Sections: every key of the
# source section becomes a key of ours, unchanged. Keys: a single key moves (``folder`` also gains ``/<eval_name>``,
# where the official code writes). Unused: keys no part of the toolkit reads, accepted with a warning naming them.
VJEPA2_SECTIONS = {
    "experiment.data": "data",
    "experiment.optimization": "optimization",
    "experiment.classifier": "classifier",
    "model_kwargs.pretrain_kwargs.encoder": "pretrain",
    "model_kwargs.pretrain_kwargs.predictor": "predictor",
    "model_kwargs.wrapper_kwargs": "wrapper",
}
VJEPA2_KEYS = {
    "model_kwargs.checkpoint": "pretrain.checkpoint",
    "model_kwargs.module_name": "module_name",
    "num_workers": "data.num_workers",  # V-JEPA 2 sets data-loading workers at the top, under either name
    "max_workers": "data.num_workers",
    "folder": "folder",
}
VJEPA2_UNUSED = {
    "model_kwargs.pretrain_kwargs.encoder.img_temporal_dim_size": "the official encoder swallows it (**kwargs); "
    "an image becomes a clip of wrapper.img_as_video_nframes frames",
}


def vjepa2_key(source: str) -> str | None:
    """Our key path of the key path ``source`` of a V-JEPA 2 eval file (``experiment.data.frame_step`` ->
    ``data.frame_step``); None for a key of :data:`VJEPA2_UNUSED`; other top-level keys keep their path."""
    if source in VJEPA2_UNUSED:
        return None
    if source in VJEPA2_KEYS:
        return VJEPA2_KEYS[source]
    for section, ours in sorted(VJEPA2_SECTIONS.items(), key=lambda kv: -len(kv[0])):
        if source.startswith(section + "."):
            return ours + source[len(section) :]
    return source


def accepted_unused_keys(cls: type = EvalConfig) -> dict[str, str]:
    """The registry of keys an eval file may set that nothing reads, ``{key path: reason}``: the ``ignored``
    fields of schema ``cls`` (:func:`jepa.config.strict.ignored_keys`, our paths) and :data:`VJEPA2_UNUSED`
    (V-JEPA 2 paths). Each is logged, with its reason, when a file sets it."""
    return {**VJEPA2_UNUSED, **ignored_keys(cls)}


def _pop_path(raw: dict[str, Any], path: str) -> tuple[bool, Any]:
    *parents, last = path.split(".")
    node: Any = raw
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node:
        return False, None
    return True, node.pop(last)


def _put_path(raw: dict[str, Any], path: str, value: Any, source: str, sources: dict[str, str]) -> None:
    """``raw[path] = value``; ``sources`` records which key of the file set each path, so that two keys setting
    one path differently are an error naming both."""
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    if last in node and node[last] != value:
        raise ConfigError(f"{sources[path]}: {node[last]!r} and {source}: {value!r} both set {path}")
    node[last] = value
    sources.setdefault(path, source)


def normalize_vjepa2(raw: dict[str, Any]) -> dict[str, Any]:
    """Map a V-JEPA 2 eval file (``experiment`` + ``model_kwargs``) onto this schema (:data:`VJEPA2_SECTIONS`,
    :data:`VJEPA2_KEYS`); other files pass through. Nothing is dropped silently: a key of :data:`VJEPA2_UNUSED`
    is logged as accepted but unused, and any other key lands in our schema, where an unknown one is an error.

    Where V-JEPA 2's code does something its files do not say, the mapping says it: a video eval always probes
    the segments of a clip together (``optimization.attend_across_segments``), outputs go to
    ``<folder>/<eval_name>/<tag>``, and the encoder's frame count is ``wrapper.img_as_video_nframes`` for images.
    """
    if "experiment" not in raw and "model_kwargs" not in raw:
        return raw
    raw = copy.deepcopy(raw)
    for source in sorted(VJEPA2_UNUSED):
        found, _ = _pop_path(raw, source)
        if found:
            logger.warning("config key '%s' is accepted but not used: %s", source, VJEPA2_UNUSED[source])
    out: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, ours in VJEPA2_KEYS.items():
        found, value = _pop_path(raw, source)
        if found:
            if source == "folder" and value is not None and raw.get("eval_name"):
                value = f"{str(value).rstrip('/')}/{raw['eval_name']}"
            _put_path(out, ours, value, source, sources)
    for source, ours in VJEPA2_SECTIONS.items():
        found, value = _pop_path(raw, source)
        if found and value is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: got {value!r}, expected a mapping of {ours} keys")
            for key, item in value.items():
                _put_path(out, f"{ours}.{key}", item, f"{source}.{key}", sources)
    for parent in ("model_kwargs.pretrain_kwargs", "model_kwargs", "experiment"):
        found, rest = _pop_path(raw, parent)
        if found and rest:
            raise ConfigError(f"{parent}: unknown keys {sorted(rest)}")
    for key, value in raw.items():
        _put_path(out, key, value, key, sources)
    pretrain = out.setdefault("pretrain", {})
    # V-JEPA 2 encoders are video encoders (RoPE, tubelets of 2); images become static clips of that many frames.
    frames = out.get("wrapper", {}).get("img_as_video_nframes") or out.get("data", {}).get("frames_per_clip") or 16
    pretrain.setdefault("frames_per_clip", frames)
    pretrain.setdefault("checkpoint", None)
    if out.get("eval_name") == "video_classification_frozen":
        out.setdefault("optimization", {}).setdefault("attend_across_segments", True)
    return out


def load_eval_config(
    path: str | Path, overrides: list[str] | None = None
) -> "EvalConfig | AnticipationConfig | PlanningConfig":
    """Read, normalise, override (``["optimization.lr=1e-4", ...]``) and validate an eval YAML file: an
    :class:`EvalConfig`, for ``eval_name: action_anticipation_frozen`` a
    :class:`jepa.config.anticipation.AnticipationConfig`, for ``eval_name: planning`` a
    :class:`jepa.config.planning.PlanningConfig` (its own schema: no V-JEPA 2 key mapping)."""
    path = Path(path)
    raw = read_yaml_sections(path)
    if raw.get("eval_name") == "planning":
        from jepa.config.planning import load_planning_config

        return load_planning_config(path, overrides)
    try:
        raw = apply_overrides(normalize_vjepa2(raw), list(overrides or []))
        if "eval_name" not in raw:
            raise ConfigError(f"eval_name is required ({' or '.join(EVAL_NAMES)})")
        if raw["eval_name"] == "action_anticipation_frozen":
            try:
                from jepa.config.anticipation import AnticipationConfig  # its own module; it builds on this one
            except ModuleNotFoundError as e:
                if e.name != "jepa.config.anticipation":
                    raise
                raise ConfigError("eval_name: action_anticipation_frozen needs jepa.config.anticipation, which this "
                                  "installation lacks") from None  # fmt: skip
            return from_dict(AnticipationConfig, raw)
        return from_dict(EvalConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
