"""Starting a pretraining run from another run's weights: V-JEPA 2's cooldown (``optimization.is_anneal``) and
continued pretraining from a released or earlier checkpoint (``meta.pretrained_checkpoint``).

Both load the encoder, predictor and target encoder strictly (every key and shape; ``module.`` / ``backbone.``
prefixes are stripped by :func:`jepa.checkpoint.strip_prefixes`) into a run that counts its own steps from 0 in its
own folder. The source file is only read, never written.

Which checkpoint a run starts from (:func:`run_start`):

* **Anneal** (``is_anneal: true``). When the run's own ``latest`` exists and the run is resumed (``--resume`` or
  ``optimization.resume_anneal: true``, the two things the official code reads), it continues from ``latest`` like
  any resumed run and ``anneal_ckpt`` is not read. Otherwise it starts from ``anneal_ckpt`` (a path relative to
  ``logging.folder``, as ``meta.read_checkpoint``): the weights and, as the official ``load_checkpoint`` does, the
  optimizer state (AdamW moments and per-parameter step counts) and the GradScaler state. The file's ``epoch`` is
  not read: the step, and with it the schedules (the anneal LR of :mod:`jepa.training.schedules`, weight decay and
  EMA) and the data order start at 0; the RNG comes from this run's ``meta.seed``. Where this differs from the
  official code:

  - a ``latest`` that exists but is not resumed is not overwritten: the trainer refuses to start unless told
    ``--overwrite`` (the official code silently restarts the cooldown over it);
  - ``anneal_ckpt`` is read whatever ``meta.load_checkpoint`` says (the official code trains from scratch when it
    is false) and ``meta.read_checkpoint`` is refused (the official code ignores it);
  - the optimizer keeps this run's hyper-parameters (``betas``, ``eps``; ``load_state_dict`` alone would take the
    source's), only the state is the source's;
  - a source without optimizer state (a weights-only file) starts with fresh AdamW state, with a warning (the
    official code fails).

* **Pretrained** (``meta.pretrained_checkpoint``, relative to the working directory). A run that resumes by the
  usual rules (``--resume``, ``meta.load_checkpoint`` / ``read_checkpoint``; see
  :meth:`jepa.training.run.RunFolder.resume_path`) continues from its own checkpoint and does not read the
  pretrained file again. Otherwise only the weights are taken: fresh optimizer state, step 0, this run's
  schedules. A file without ``target_encoder`` (some releases keep one encoder) starts the target encoder as a copy
  of its ``encoder`` (logged).

Another input size and clip length. The stored config of the source (our checkpoints keep one under ``config``;
official files have none) must describe the same model as this run except for ``data.crop_size`` and
``data.num_frames`` (and the number of mask tokens, below): width, depth, heads, patch, tubelet, ... that differ are
a :class:`~jepa.checkpoint.CheckpointError` naming both values, and so is an image model starting a video run (or
the reverse). RoPE models have no position table and load as they are. Sine-cosine tables (the encoders'
``pos_embed``, the predictor's ``predictor_pos_embed``) are resampled to the new token grid with
:func:`jepa.models.pos_embed.interpolate_pos_embed` (trilinear for video, bicubic for images, as the evals do); the
source grid is the stored config's, or, for a file without one, inferred from the table's length like the frozen
loaders do. A RoPE run drops the unused tables V-JEPA 2's released files still carry (as :mod:`jepa.hub` does).

Mask tokens. The predictor holds one mask token per mask config and clip length (``len(mask)`` x the number of
clip lengths: what :meth:`jepa.config.PretrainConfig.model_spec` asks for). Equal counts load as they are. A
pretrained source with another count follows ``meta.pretrained_mask_tokens``: ``error`` (the default) refuses,
naming both counts and the key; ``cycle`` gives token ``i`` the source's token ``i % n`` (logged). An anneal source
must have this run's count (its optimizer state holds one entry per token).
"""

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn
from torch.amp import GradScaler
from torch.optim import Optimizer

from jepa.checkpoint import CheckpointError, _source_grid, read_checkpoint, strip_prefixes
from jepa.config import ConfigError, PretrainConfig
from jepa.config.pretrain import model_spec_from_config_dict
from jepa.config.spec import ARCHITECTURE_KEYS, Difference, EncoderSpec, spec_differences
from jepa.hub import _drop_unused_rope_tables
from jepa.models.pos_embed import Grid, interpolate_pos_embed
from jepa.models.predictor import VisionTransformerPredictor
from jepa.models.vision_transformer import VisionTransformer, to_hw, token_grid
from jepa.training.ddp import load_optimizer
from jepa.training.run import RunFolder, load_modules

logger = logging.getLogger(__name__)

StartKind = Literal["resume", "anneal", "pretrained"]
NETWORKS = ("encoder", "predictor", "target_encoder")
# The config key that names each kind of source, for messages.
SOURCE_KEYS = {"anneal": "optimization.anneal_ckpt", "pretrained": "meta.pretrained_checkpoint"}
# What a warm start compares with the source's stored config: the architecture, but not the input grid (position
# tables are resampled) and not the number of mask tokens (fit_mask_tokens decides).
WARM_START_KEYS = tuple(k for k in ARCHITECTURE_KEYS if k != "num_frames")
_TABLES = (("encoder", "pos_embed"), ("target_encoder", "pos_embed"), ("predictor", "predictor_pos_embed"))


@dataclass(frozen=True)
class Start:
    """The checkpoint a run starts from. ``kind``: ``resume`` (continue the run that wrote it: weights, optimizer,
    step, RNG), ``anneal`` or ``pretrained`` (start from its weights, see the module docstring); ``key``: the setting
    that names it (for messages)."""

    path: Path
    kind: StartKind
    key: str


def source_path(cfg: PretrainConfig, files: RunFolder, kind: Literal["anneal", "pretrained"]) -> Path:
    """The file ``optimization.anneal_ckpt`` (relative to the run folder) or ``meta.pretrained_checkpoint`` (relative
    to the working directory) names."""
    if kind == "anneal":
        if not cfg.optimization.anneal_ckpt:
            raise ConfigError("optimization.anneal_ckpt: required when optimization.is_anneal is true")
        return files.resolve(cfg.optimization.anneal_ckpt)
    if cfg.meta.pretrained_checkpoint is None:
        raise ConfigError("meta.pretrained_checkpoint: not set")
    return Path(cfg.meta.pretrained_checkpoint)


def run_start(cfg: PretrainConfig, files: RunFolder, *, latest_first: bool, log: logging.Logger = logger
              ) -> Start | None:  # fmt: skip
    """Where the run's state comes from (the rules of the module docstring), or None to start from scratch.

    ``latest_first``: a requeued job or ``--resume`` (continue from ``latest`` whenever it exists). A warm start
    (``anneal`` / ``pretrained``) is returned even when ``latest`` exists; the caller decides whether it may start
    over it.
    """
    opt, meta = cfg.optimization, cfg.meta
    if opt.is_anneal:
        if meta.read_checkpoint:
            raise ConfigError(
                f"meta.read_checkpoint is {meta.read_checkpoint!r} but optimization.is_anneal is true: an anneal run "
                "starts from optimization.anneal_ckpt and resumes from its own latest checkpoint (--resume or "
                "optimization.resume_anneal: true); remove meta.read_checkpoint"
            )
        source = source_path(cfg, files, "anneal")
        if files.latest.is_file() and (latest_first or opt.resume_anneal):
            log.info("anneal run: continuing from its own %s (not from anneal_ckpt %s)", files.latest, source)
            return Start(files.latest, "resume", "--resume" if latest_first else "optimization.resume_anneal")
        return Start(source, "anneal", SOURCE_KEYS["anneal"])
    path = files.resume_path(
        latest_first=latest_first, requested=meta.load_checkpoint, requested_by="meta.load_checkpoint",
        read_path=meta.read_checkpoint, read_key="meta.read_checkpoint", log=log,
    )  # fmt: skip
    if path is not None:
        if meta.pretrained_checkpoint is not None:
            log.info("resuming from %s: meta.pretrained_checkpoint is not read again", path)
        return Start(path, "resume", "meta.read_checkpoint" if meta.read_checkpoint else "meta.load_checkpoint")
    if meta.pretrained_checkpoint is not None:
        return Start(source_path(cfg, files, "pretrained"), "pretrained", SOURCE_KEYS["pretrained"])
    return None


def read_source(start: Start) -> dict[str, Any]:
    """The source checkpoint of a warm start, safely read (:func:`jepa.checkpoint.read_checkpoint`); a missing or
    damaged file is a :class:`CheckpointError` that names the file and the setting."""
    if not start.path.is_file():
        raise CheckpointError(f"{start.key} {start.path} does not exist")
    try:
        ckpt = read_checkpoint(start.path)
    except CheckpointError as e:
        raise CheckpointError(f"{start.key}: {e}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{start.key}: {start.path} holds a {type(ckpt).__name__}, expected a checkpoint dict")
    return ckpt


def check_architecture(
    stored: Mapping[str, Any], cfg: PretrainConfig, path: str | Path, config_key: Callable[[Difference], str] = str
) -> EncoderSpec:
    """The source's encoder spec, from the config it stores, after checking that it describes this run's model up
    to the input grid and the number of mask tokens; :class:`CheckpointError` naming both values (as
    ``config_key(difference)``: the config key to change) otherwise."""
    try:
        theirs = model_spec_from_config_dict(stored)
    except (ConfigError, ValueError) as e:
        raise CheckpointError(f"{path}: the config it stores describes no model this version builds: {e}") from e
    ours = cfg.model_spec()
    differences = [
        d for d in spec_differences(theirs, ours, keys=WARM_START_KEYS) if d.key != "predictor.num_mask_tokens"
    ]
    if theirs.encoder.is_video != ours.encoder.is_video:
        differences.append(Difference("num_frames", theirs.encoder.num_frames, ours.encoder.num_frames))
    if differences:
        raise CheckpointError(
            f"{path} holds another model than this run's (only data.crop_size and data.num_frames may change): "
            + "; ".join(f"{config_key(d)}: checkpoint {d.checkpoint!r} vs this run {d.config!r}" for d in differences)
        )
    return theirs.encoder


def _grid_of(spec: EncoderSpec) -> Grid:
    return token_grid(to_hw(spec.img_size), spec.patch_size, spec.num_frames, spec.tubelet_size)


def fit_position_table(weights: dict[str, Tensor], key: str, module: nn.Module, source_grid: Grid | None,
                       where: str) -> None:  # fmt: skip
    """Resample ``weights[key]`` (a ``[1, N, D]`` sine-cosine table) in place to the token grid of ``module`` when
    the sizes differ. ``source_grid``: the grid the table was made for (from the source's stored config), or None
    to infer it from ``N`` and the target grid."""
    table = getattr(module, key, None)
    if key not in weights or table is None or weights[key].shape == table.shape:
        return
    assert isinstance(module, (VisionTransformer, VisionTransformerPredictor))  # the modules with position tables
    n = weights[key].shape[1]
    src = source_grid if source_grid is not None else _source_grid(n, module.grid)
    if src[0] * src[1] * src[2] != n:
        raise CheckpointError(f"{where}: {key} has {n} tokens, but the stored config's token grid {src} has "
                              f"{src[0] * src[1] * src[2]}")  # fmt: skip
    logger.info("%s: resampling %s from token grid %s to %s", where, key, src, module.grid)
    weights[key] = interpolate_pos_embed(weights[key], src, module.grid, module.is_video)


def fit_mask_tokens(weights: dict[str, Tensor], needed: int, *, kind: Literal["anneal", "pretrained"],
                    rule: Literal["error", "cycle"], where: str) -> dict[str, Tensor]:  # fmt: skip
    """Predictor ``weights`` with ``needed`` mask tokens (``mask_tokens.{i}``; I-JEPA's single ``mask_token``
    counts as one), by the rules of the module docstring."""
    indices = sorted(int(k.split(".")[1]) for k in weights if k.startswith("mask_tokens.") and k.count(".") == 1)
    tokens = [weights[f"mask_tokens.{i}"] for i in indices] if indices else []
    if not tokens and "mask_token" in weights:
        tokens = [weights["mask_token"]]
    n = len(tokens)
    if n == needed or n == 0:  # none at all: the strict load reports the missing keys
        return weights
    counts = f"its predictor has {n} mask token(s), this config needs {needed} (one per mask config and clip length)"
    if kind == "anneal":
        raise CheckpointError(
            f"optimization.anneal_ckpt {where}: {counts}; an anneal run keeps the source's mask configs and clip "
            "lengths (its optimizer state holds one entry per token)"
        )
    if rule == "error":
        raise CheckpointError(
            f"meta.pretrained_checkpoint {where}: {counts}; set meta.pretrained_mask_tokens: cycle to give token i "
            f"the checkpoint's token i % {n}, or use a mask list (x clip lengths) that needs {n}"
        )
    logger.info("%s: %s; meta.pretrained_mask_tokens: cycle gives token i the checkpoint's token i %% %d", where,
                counts, n)  # fmt: skip
    out = {k: v for k, v in weights.items() if not (k.startswith("mask_tokens.") or k == "mask_token")}
    out.update({f"mask_tokens.{i}": tokens[i % n] for i in range(needed)})
    return out


def load_weights(
    ckpt: Mapping[str, Any],
    modules: Mapping[str, nn.Module],
    cfg: PretrainConfig,
    start: Start,
    config_key: Callable[[Difference], str] = str,
) -> None:
    """Load a warm start's source weights into ``modules`` (``encoder``, ``predictor``, ``target_encoder``), fitted
    to this run as the module docstring says, strictly."""
    if start.kind == "resume":
        raise ValueError("load_weights starts a run from another one's weights; a resume restores the whole run")
    where = str(start.path)
    source_grid = None
    stored = ckpt.get("config")
    if isinstance(stored, Mapping):
        source_grid = _grid_of(check_architecture(stored, cfg, start.path, config_key))
    parts: dict[str, Any] = {}
    for name in NETWORKS:
        if ckpt.get(name) is not None:
            parts[name] = strip_prefixes(ckpt[name])
        elif name == "target_encoder" and start.kind == "pretrained" and ckpt.get("encoder") is not None:
            logger.info("%s has no target_encoder: the target encoder starts as a copy of its encoder", where)
            parts[name] = strip_prefixes(ckpt["encoder"])
        else:
            raise CheckpointError(f"{start.key} {where} has no '{name}'; its keys are {sorted(ckpt)}")
    if cfg.model.use_rope:
        parts = _drop_unused_rope_tables(parts, where)
    for name, key in _TABLES:
        fit_position_table(parts[name], key, modules[name], source_grid, f"{where} [{name}]")
    parts["predictor"] = fit_mask_tokens(
        parts["predictor"], _mask_tokens_needed(cfg), kind=start.kind, rule=cfg.meta.pretrained_mask_tokens,
        where=where,
    )  # fmt: skip
    load_modules(parts, modules, start.path)
    logger.info("started from the weights of %s (%s), at step 0", where, start.key)


def _mask_tokens_needed(cfg: PretrainConfig) -> int:
    predictor = cfg.model_spec().predictor
    assert predictor is not None  # a pretraining spec always has its predictor
    return predictor.num_mask_tokens


def load_optimizer_state(optimizer: Optimizer, scaler: GradScaler | None, ckpt: Mapping[str, Any], start: Start
                         ) -> None:  # fmt: skip
    """The anneal source's optimizer (and GradScaler) state, keeping this run's hyper-parameters (see the module
    docstring). A source without optimizer state leaves the fresh one, with a warning."""
    state = ckpt.get("opt")
    if state is None:
        logger.warning("%s %s holds no optimizer state: the anneal starts with fresh AdamW moments", start.key,
                       start.path)  # fmt: skip
        return
    ours = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        load_optimizer(optimizer, state)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{start.key} {start.path} [opt] does not fit this run's optimizer: {e}") from e
    for group, hyper in zip(optimizer.param_groups, ours, strict=True):
        group.update(hyper)
    if scaler is not None and ckpt.get("scaler") is not None:
        scaler.load_state_dict(ckpt["scaler"])
