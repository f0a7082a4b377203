"""Action-anticipation eval config (``eval_name: action_anticipation_frozen``), validated strictly.

The schema is V-JEPA 2's EK100 eval (``../configs/eval/*/ek100.yaml`` once :func:`jepa.config.evals.normalize_vjepa2`
has mapped ``experiment.*`` and ``model_kwargs.*`` onto sections): ``data`` (EK100 CSVs, video layout, clip sampling,
anticipation times), ``optimization`` (the classification evals' plus ``use_focal_loss``), ``classifier``,
``pretrain`` (the frozen encoder), ``predictor`` (the frozen predictor that predicts the future frames' tokens)
and ``wrapper`` (how the predictor is used).

Where this schema says what the official code leaves implicit:

* ``data.anticipation_anchor`` names the frame the anticipation time counts back from (see
  :class:`AnticipationDataConfig`); ``official`` is the official code's rule (validation clips end ``t_a`` before
  the action *ends*), ``action_start`` the standard EK100 protocol.
* ``data.val_anticipation_point`` (read by the official code, absent from its files) is a key here too.
* ``optimization.clip_grad`` defaults to null: the official anticipation eval does not clip gradients.
* ``val_only`` evaluates saved probes (the official ``inference/`` files); a missing probe file is an error, not an
  evaluation of untrained probes.
"""

import csv
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jepa.config.evals import EvalConfigBase, EvalDataBase, EvalOptimConfig, EvalPredictorConfig
from jepa.config.spec import EncoderSpec, ModelSpec, PredictorSpec
from jepa.config.strict import ConfigError, check_choice, check_range, require, set_fields, warn_unused

ANTICIPATION_DATASETS = ("EK100", "anticipation_digits")
BUILTIN_ANTICIPATION = "anticipation_digits"
# Wrapper keys of the classification evals, which the official anticipation wrapper does not take.
_CLASSIFICATION_WRAPPER_KEYS = ("out_layers", "max_frames", "use_pos_embed", "img_as_video_nframes")
_CLASSIFICATION_OPTIM_KEYS = ("label_smoothing", "mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "layer_decay",
                              "drop_path", "ema_decay")  # fmt: skip


@dataclass(kw_only=True)
class AnticipationDataConfig(EvalDataBase):
    """Which actions, which clip before each, and the probe's training augmentation.

    The observed clip: ``frames_per_clip`` frames at ``frames_per_second`` (a step of ``int(video fps /
    frames_per_second)`` frames) ending ``t_a`` seconds before an anchor frame (its last frame is one step before
    ``anchor - t_a``), with ``t_a`` drawn from ``train_anticipation_time_sec`` for training and from
    ``anticipation_time_sec`` for validation.

    ``anticipation_anchor`` picks the anchor:

    * ``official`` (the default, what the official code does): ``anchor = p * start_frame + (1 - p) * stop_frame``
      with ``p`` drawn from ``train_anticipation_point`` for training and ``val_anticipation_point`` (default
      ``[0, 0]``) for validation, so validation clips end ``t_a`` before the action's *end* and may show the start
      of the action (upstream vjepa2 issue #173). Numbers comparable with the V-JEPA 2 paper's use this rule.
    * ``action_start``: the EPIC-KITCHENS-100 anticipation protocol: the anchor is the action's start frame
      (``p = 1``) for training and validation, so the observed clip ends ``t_a`` seconds before the action starts
      and never shows it; ``*_anticipation_point`` are not read.

    ``dataset``: ``EK100`` (``base_path`` holds the videos in layout ``file_format`` 0 (``<participant>/videos/
    <video_id>.MP4``) or 1 (``<participant>/<video_id>.MP4``); ``dataset_train`` / ``dataset_val`` are the EK100
    annotation CSVs) or the built-in ``anticipation_digits`` (:mod:`jepa.video.anticipation_digits`, generated
    under ``root_path`` on first use).
    """

    dataset: str = "EK100"
    base_path: str | None = None
    dataset_train: str | None = None
    dataset_val: str | None = None
    file_format: int = 1
    root_path: str | None = None  # anticipation_digits: where the videos are generated
    frames_per_second: float = 5.0
    anticipation_time_sec: tuple[float, float] = (1.0, 1.0)
    train_anticipation_time_sec: tuple[float, float] | None = None  # default: anticipation_time_sec
    train_anticipation_point: tuple[float, float] = (0.0, 0.25)  # both official files' value
    val_anticipation_point: tuple[float, float] = (0.0, 0.0)  # the official code's default
    anticipation_anchor: Literal["official", "action_start"] = "official"
    auto_augment: bool = False
    motion_shift: bool = False
    random_resize_scale: tuple[float, float] = (0.9, 1.0)  # the official data loader's default
    reprob: float = 0.0
    pin_memory: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("dataset", self.dataset, ANTICIPATION_DATASETS)
        layouts = "0 (<participant>/videos/<video_id>.MP4) or 1 (<participant>/<video_id>.MP4)"
        require(self.file_format in (0, 1) and not isinstance(self.file_format, bool), "file_format",
                self.file_format, layouts)  # fmt: skip
        require(self.frames_per_second > 0, "frames_per_second", self.frames_per_second, "> 0")
        if self.train_anticipation_time_sec is None:
            self.train_anticipation_time_sec = self.anticipation_time_sec
        for key in ("anticipation_time_sec", "train_anticipation_time_sec"):
            check_range(key, getattr(self, key), 0.0, math.inf)
        for key in ("train_anticipation_point", "val_anticipation_point"):
            check_range(key, getattr(self, key), 0.0, 1.0)
        check_range("random_resize_scale", self.random_resize_scale, 0.0, 1.0, lo_open=True)
        require(0 <= self.reprob <= 1, "reprob", self.reprob, "a probability in [0, 1]")
        changed = set_fields(self)
        if self.is_builtin:
            for key in ("base_path", "dataset_train", "dataset_val"):
                if key in changed:
                    raise ConfigError(f"{key} is set, but dataset {self.dataset} generates its own videos: set "
                                      f"dataset: EK100 to read the CSVs, or remove {key}")  # fmt: skip
        else:
            for key in ("base_path", "dataset_train", "dataset_val"):
                if getattr(self, key) is None:
                    raise ConfigError(f"{key} is required for dataset {self.dataset}")
            if "root_path" in changed:
                warn_unused("data.root_path", f"{BUILTIN_ANTICIPATION} only; EK100 reads base_path")
        if self.anticipation_anchor == "action_start":
            for key in sorted(changed & {"train_anticipation_point", "val_anticipation_point"}):
                warn_unused(f"data.{key}", "anticipation_anchor action_start anchors every clip at the action start")

    @property
    def is_builtin(self) -> bool:
        return self.dataset.lower() == BUILTIN_ANTICIPATION

    def anticipation_points(self, split: Literal["train", "val"]) -> tuple[float, float]:
        """The range ``p`` is drawn from in ``split`` (``anchor = p * start + (1 - p) * stop``)."""
        if self.anticipation_anchor == "action_start":
            return (1.0, 1.0)
        return self.train_anticipation_point if split == "train" else self.val_anticipation_point

    def anticipation_times(self, split: Literal["train", "val"]) -> tuple[float, float]:
        """The range ``t_a`` (seconds) is drawn from in ``split``."""
        if split == "val" or self.train_anticipation_time_sec is None:
            return self.anticipation_time_sec
        return self.train_anticipation_time_sec


@dataclass(kw_only=True)
class AnticipationOptimConfig(EvalOptimConfig):
    """The probes' training (see :class:`jepa.config.evals.EvalOptimConfig`). ``use_focal_loss``: each head's loss
    is the sigmoid focal loss (alpha 0.25, gamma 2, summed over the batch and the classes, as officially), else
    cross-entropy (averaged over the batch); a probe's loss is the sum of its verb, noun and action losses."""

    use_focal_loss: bool = False
    clip_grad: float | None = None  # the official anticipation eval does not clip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attend_across_segments:
            raise ConfigError("attend_across_segments: the anticipation eval probes one clip per action")
        for key in sorted(set_fields(self) & set(_CLASSIFICATION_OPTIM_KEYS)):
            raise ConfigError(f"{key}: a classification-eval key; the anticipation probes train on the frozen "
                              "model's features with their own losses (use_focal_loss)")  # fmt: skip


@dataclass(kw_only=True)
class AnticipationConfig(EvalConfigBase):
    """A whole frozen action-anticipation eval (the fields and checks every eval shares:
    :class:`jepa.config.evals.EvalConfigBase`). ``pretrain.frames_per_clip`` defaults to ``data.frames_per_clip``:
    the encoder embeds the observed clip."""

    eval_name: Literal["action_anticipation_frozen"]
    data: AnticipationDataConfig = field(default_factory=AnticipationDataConfig)
    optimization: AnticipationOptimConfig = field(default_factory=AnticipationOptimConfig)
    predictor: EvalPredictorConfig = field(default_factory=EvalPredictorConfig)

    def __post_init__(self) -> None:
        require(self.classifier.head == "attentive", "classifier.head", self.classifier.head,
                "'attentive' (the anticipation probe pools with one query per head)")  # fmt: skip
        wrong = sorted(set_fields(self.wrapper) & set(_CLASSIFICATION_WRAPPER_KEYS))
        if wrong:
            raise ConfigError(f"wrapper.{wrong[0]}: a classification-eval key; the anticipation wrapper takes "
                              "no_predictor, num_output_frames and num_steps")  # fmt: skip
        d, p = self.data, self.pretrain
        if "frames_per_clip" in set_fields(p) and p.frames_per_clip != d.frames_per_clip:
            raise ConfigError(f"pretrain.frames_per_clip ({p.frames_per_clip}) and data.frames_per_clip "
                              f"({d.frames_per_clip}) disagree: the encoder embeds the observed clip")  # fmt: skip
        if d.frames_per_clip < 2 or d.frames_per_clip % p.tubelet_size:
            raise ConfigError(f"data.frames_per_clip {d.frames_per_clip} is not a multiple >= 2 of "
                              f"pretrain.tubelet_size {p.tubelet_size} (a video encoder's tubelets)")  # fmt: skip
        p.frames_per_clip = d.frames_per_clip
        super().__post_init__()
        for key in sorted(set_fields(p) & {"clip_duration", "frame_step"}):
            warn_unused(f"pretrain.{key}", "clips are sampled at data.frames_per_second")
        if self.wrapper.no_predictor:
            if set_fields(self.predictor):
                warn_unused("predictor", "wrapper.no_predictor: true probes the encoder's tokens only")
        else:
            self._check_predictor()

    def _check_predictor(self) -> None:
        """The predictor must use mask tokens and its token grid must reach the furthest frames it predicts."""
        pr, tub = self.predictor, self.pretrain.tubelet_size
        require(pr.use_mask_tokens, "predictor.use_mask_tokens", pr.use_mask_tokens,
                "true (the future frames' tokens are predicted from mask tokens)")  # fmt: skip
        longest = max(self.data.anticipation_times("train")[1], self.data.anticipation_times("val")[1])
        slots = self.data.frames_per_clip // tub + self.future_offset(longest) + self.output_frames // tub
        if pr.num_frames // tub < slots:
            raise ConfigError(
                f"predictor.num_frames: got {pr.num_frames}, but the furthest predicted frames lie {slots * tub} "
                f"frames from the clip's start ({self.data.frames_per_clip} observed, {longest:g} s ahead at "
                f"{self.data.frames_per_second:g} fps, {self.output_frames} predicted): set it >= {slots * tub}"
            )

    @property
    def output_frames(self) -> int:
        """Frames predicted per step: ``wrapper.num_output_frames``, at least one tubelet (as officially)."""
        return max(self.wrapper.num_output_frames, self.pretrain.tubelet_size)

    def future_offset(self, anticipation_time: float) -> int:
        """Time slots (tubelets) between the observed clip and the first predicted one: ``int(t_a * fps /
        tubelet_size)``, as the official wrapper truncates it."""
        return int(anticipation_time * self.data.frames_per_second / self.pretrain.tubelet_size)

    def predictor_spec(self, encoder: EncoderSpec) -> ModelSpec:
        """The frozen predictor over ``encoder`` (built), as the official code builds it: the encoder's width,
        patches and tubelets at the eval's resolution; its own frame count (its token grid: the observed clip and
        the future) and switches."""
        pr = self.predictor
        grid = dataclasses.replace(
            encoder, num_frames=pr.num_frames, uniform_power=pr.uniform_power, use_rope=pr.use_rope,
            use_silu=pr.use_silu, wide_silu=pr.wide_silu, use_sdpa=pr.use_sdpa,
        )  # fmt: skip
        spec = PredictorSpec(predictor_embed_dim=pr.predictor_embed_dim, depth=pr.depth, num_heads=pr.num_heads,
                             num_mask_tokens=pr.num_mask_tokens, use_mask_tokens=pr.use_mask_tokens)  # fmt: skip
        return ModelSpec(encoder=grid, predictor=spec)

    def checkpoint_model(self) -> EncoderSpec | ModelSpec:
        """The encoder and, unless ``wrapper.no_predictor``, the predictor: a checkpoint's stored config must
        describe both as this config does."""
        spec = self.encoder_spec()
        if self.wrapper.no_predictor:
            return spec
        return ModelSpec(encoder=spec, predictor=self.predictor_spec(spec).predictor)

    def path_problems(self) -> list[tuple[str, Path, str]]:
        """``(key, path, message)`` for every input path a run here would fail on (what
        :func:`jepa.config.checks.check_paths` reports, with the output folder it checks itself): EK100's annotation
        CSVs (present, with the columns the reader needs) and video folder, and ``pretrain.checkpoint``."""
        from jepa.video.epickitchens import REQUIRED_COLUMNS

        out = []
        d = self.data
        if not d.is_builtin:
            for key in ("dataset_train", "dataset_val"):
                path = Path(getattr(d, key))
                if not path.is_file():
                    out.append((f"data.{key}", path, f"EK100 annotation file {path} does not exist"))
                    continue
                with path.open(newline="") as f:
                    header = next(csv.reader(f), [])
                missing = [c for c in REQUIRED_COLUMNS if c not in header]
                if missing:
                    out.append((f"data.{key}", path, f"{path}: missing columns {missing}; the header has {header}"))
            base = Path(str(d.base_path))
            if not base.is_dir():
                out.append(("data.base_path", base, f"EK100 video folder {base} does not exist"))
        checkpoint = self.pretrain.checkpoint_path
        if checkpoint is not None and not checkpoint.is_file():
            out.append(("pretrain.checkpoint", checkpoint,
                        f"{checkpoint} does not exist (pretrain.folder / pretrain.checkpoint)"))  # fmt: skip
        if self.val_only:
            try:
                self.find_probe_checkpoint()
            except FileNotFoundError as e:
                key = "probe_checkpoint" if self.probe_checkpoint else "val_only"
                out.append((key, self.probe_checkpoint_paths()[0], str(e).partition(": ")[2]))
        return out
