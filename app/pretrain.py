"""The pretraining loop, written once for I-JEPA (images) and V-JEPA (video).

``Pretrainer(cfg, device).train()`` builds the models, data, optimizer and schedules from a validated
:class:`~jepa.config.PretrainConfig`, trains, logs and checkpoints. The training state is the global step:
schedules are pure functions of it, and so is the data position (pass ``step // batches_per_pass``, batch
``step % batches_per_pass`` of a permutation seeded by the pass), so resuming restores weights, optimizer,
scaler and RNG and continues exactly where the interrupted run was.

With several processes (``jepa.distributed``: ``--devices``, torchrun or Slurm), each rank computes on
``data.batch_size`` samples and DDP averages the gradients; the ranks share the single-process run's global batches
of ``world_size * batch_size`` samples, with the same augmentations and masks (see
:class:`~jepa.distributed.RankShardCollator`), so ``N`` processes train like one process with an ``N`` times larger
batch. Only rank 0 writes checkpoints, the config and the CSV log.
"""

import inspect
import logging
import math
import random
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader

from jepa.checkpoint import CheckpointError, atomic_write, read_checkpoint, remove_stale_tmp, save_checkpoint
from jepa.config import PretrainConfig, dump_config, to_dict
from jepa.config.pretrain import ImageMaskConfig
from jepa.data import read_bad_sample_log
from jepa.distributed import (
    RankShardCollator,
    RankShardDataset,
    all_gather_cat,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    get_rank,
    get_world_size,
    main_process_first,
)
from jepa.logging_utils import CSVLogger
from jepa.losses import collapse_stats
from jepa.meta_arch import JEPA, JEPAOutput
from jepa.models import VisionTransformer, VisionTransformerPredictor
from jepa.models.builder import build_models_from_spec
from jepa.optim import make_adamw, set_hyperparams
from jepa.sampling import EpochSampler, SeededDataset, WeightedEpochSampler, mix_seed
from jepa.schedules import Schedules

logger = logging.getLogger(__name__)

CSV_COLUMNS = [
    "epoch", "step", "loss", "loss_pred", "loss_reg", "lr", "wd", "momentum", "ctx_tokens", "tgt_tokens",
    "step_ms", "samples_per_s", "mem_mb", "feat_std", "eff_rank",
]  # fmt: skip
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# DDP's switch for syncing buffers before every forward was renamed in recent torch releases.
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


def build_models(cfg: PretrainConfig) -> tuple[VisionTransformer, VisionTransformerPredictor]:
    """Encoder and predictor as the config describes them (its model spec, through the one builder)."""
    return build_models_from_spec(cfg.model_spec())


MOVING_DIGITS_VIDEOS = 2000  # clips generated for `dataset_type: moving_digits` (about 20 s, once)


def build_dataset_and_collator(cfg: PretrainConfig, seed: int) -> tuple[torch.utils.data.Dataset, Any]:
    """The training set (samples end with their index) and the mask collator of the config's modality."""
    return (_video_data if cfg.is_video else _image_data)(cfg, seed)


def _image_data(cfg: PretrainConfig, seed: int) -> tuple[torch.utils.data.Dataset, Any]:
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


def video_annotation_files(cfg: PretrainConfig, split: str = "train") -> list[str]:
    """The annotation CSVs of a video config; ``moving_digits`` generates its clips (once) under ``root_path``."""
    d = cfg.data
    if d.dataset_type.lower() != "moving_digits":
        if not d.datasets:
            raise ValueError("data.datasets lists no annotation CSV files")
        return list(d.datasets)
    from jepa.video.moving_digits import make_moving_digits

    root = Path(d.root_path or "runs/data/moving_digits") / f"{d.num_frames * d.sampling_rate}f_{d.crop_size}px"
    videos = MOVING_DIGITS_VIDEOS if split == "train" else MOVING_DIGITS_VIDEOS // 4
    csv = make_moving_digits(
        root, num_videos=videos, num_frames=d.num_frames * d.sampling_rate, size=d.crop_size, split=split
    )
    return [str(csv)]


def _video_data(cfg: PretrainConfig, seed: int) -> tuple[torch.utils.data.Dataset, Any]:
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
        video_annotation_files(cfg),
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
    collator = MultiblockMaskCollator3D(
        cfg.mask, crop_size=d.crop_size, num_frames=d.num_frames, patch_size=d.patch_size,
        tubelet_size=d.tubelet_size, seed=seed,
    )  # fmt: skip
    return dataset, collator


def mask_sets(cfg: PretrainConfig, masks_enc: list, masks_pred: list) -> list:
    """Pair a batch's masks as the JEPA module takes them: I-JEPA has one set (its context masks with all its
    target masks); V-JEPA has one (context, target) pair per mask config, set ``i`` using mask token ``i``."""
    if cfg.is_video:
        return [([e], [p]) for e, p in zip(masks_enc, masks_pred, strict=True)]
    return [(masks_enc, masks_pred)]


def loss_type_for(cfg: PretrainConfig) -> str:
    if cfg.loss.loss_type != "auto":
        return cfg.loss.loss_type
    return "l1" if cfg.is_video else "smooth_l1"


class RunFolderError(RuntimeError):
    """A new run would overwrite another run's checkpoints."""


def check_run_folder(cfg: PretrainConfig, *, resume: bool, overwrite: bool) -> None:
    """Refuse a fresh run in a folder that holds another run's ``latest``: it would overwrite that run's
    checkpoints and log. Resuming (``--resume``, ``meta.load_checkpoint``) and ``--overwrite`` are fine."""
    latest = Path(cfg.logging.folder) / f"{cfg.logging.write_tag}-latest.pth.tar"
    if resume or overwrite or cfg.meta.load_checkpoint or not latest.is_file():
        return
    raise RunFolderError(
        f"{latest} exists: logging.folder holds another run. Continue it with --resume (or meta.load_checkpoint: "
        "true), start afresh over it with --overwrite, or choose another logging.folder / logging.write_tag"
    )


# What a checkpoint's weights depend on; the other keys (lr, epochs, data paths, drop path, ...) may change on resume.
_ARCHITECTURE_KEYS = ("app", "data.crop_size", "data.patch_size", "data.num_frames", "data.tubelet_size")
_FREE_MODEL_KEYS = ("drop_path_rate", "use_activation_checkpointing")


def _check_same_architecture(stored: dict[str, Any], current: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`CheckpointError` when the config stored in checkpoint ``path`` describes another model."""

    def flat(cfg: dict[str, Any]) -> dict[str, Any]:
        keys = [*_ARCHITECTURE_KEYS, *(f"model.{k}" for k in cfg.get("model", {}) if k not in _FREE_MODEL_KEYS)]
        out = {}
        for key in keys:
            section, _, name = key.rpartition(".")
            value = cfg.get(section, {}).get(name) if section else cfg.get(name)
            out[key] = value
        if cfg.get("app") == "ijepa":
            out.pop("data.num_frames")
            out.pop("data.tubelet_size")
        out["mask (number of configs)"] = len(cfg["mask"]) if isinstance(cfg.get("mask"), list) else 1
        return out

    a, b = flat(stored), flat(current)
    differences = [f"{k}: checkpoint {a.get(k)!r} vs this run {b.get(k)!r}" for k in sorted(a.keys() | b.keys())
                   if a.get(k) != b.get(k)]  # fmt: skip
    if differences:
        raise CheckpointError(f"{path} was written by a run of another model: " + "; ".join(differences))


class _StopAgreement:
    """Whether the run stops at this step boundary. One process: ``stop()`` itself. Several ranks: every rank's
    answer is summed with an asynchronous all-reduce (on the CPU, through gloo, so no GPU sync) started at one
    boundary and read at the next, so that all ranks stop at the same step without waiting for each other."""

    def __init__(self, stop: Callable[[], bool] | None, world_size: int) -> None:
        self.stop = stop
        self.world_size = world_size
        self.group: Any = None
        self.pending: tuple[Any, torch.Tensor] | None = None
        if stop is not None and world_size > 1:
            self.group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD

    def poll(self) -> bool:
        if self.stop is None:
            return False
        if self.world_size == 1:
            return bool(self.stop())
        agreed = self.close()
        flag = torch.tensor([float(bool(self.stop()))])
        self.pending = (dist.all_reduce(flag, group=self.group, async_op=True), flag)
        return agreed

    def close(self) -> bool:
        """Wait for the exchange in flight; whether any rank asked to stop in it."""
        if self.pending is None:
            return False
        work, flag = self.pending
        self.pending = None
        work.wait()
        return flag.item() > 0


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Pretrainer:
    """Owns one run: model, optimizer, data, schedules, logging and checkpoints in ``cfg.logging.folder``.

    Runs on this process's rank of the initialised process group, if any (``jepa.distributed.init_distributed``).
    """

    def __init__(self, cfg: PretrainConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.rank, self.world_size = get_rank(), get_world_size()
        self.is_main = self.rank == 0
        self.folder = Path(cfg.logging.folder)
        self.tag = cfg.logging.write_tag
        seed = cfg.meta.seed
        _seed_all(seed)

        encoder, predictor = build_models(cfg)
        loss = cfg.loss
        self.model = JEPA(
            encoder, predictor, loss_type_for(cfg), loss.loss_exp, loss.reg_coeff, loss.center_targets
        ).to(self.device)
        # DDP averages the gradients of encoder and predictor (the target encoder has none); the target encoder
        # then moves identically on every rank, since every rank applies the same update to the same weights.
        self.forward_model: nn.Module = self.model
        if self.world_size > 1:
            # No buffer changes during training (no batch norm), so nothing to broadcast before each forward.
            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None, **_NO_BUFFER_SYNC
            )
        self.optimizer = make_adamw([self.model.encoder, self.model.predictor], betas=cfg.optimization.betas)
        self.dtype = DTYPES[cfg.meta.dtype]
        self.autocast = self.dtype != torch.float32
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None

        with main_process_first():  # rank 0 generates files (moving-digit clips) before the others read them
            dataset, collator = build_dataset_and_collator(cfg, seed)
        self.dataset = dataset
        batch = cfg.data.batch_size
        self.global_batch = batch * self.world_size
        weights = getattr(dataset, "sample_weights", None)
        if cfg.data.datasets_weights is not None and weights is not None:
            self.sampler = WeightedEpochSampler(weights, seed)
        else:
            self.sampler = EpochSampler(len(dataset), seed)
        self.batches_per_pass = len(self.sampler) // self.global_batch
        if self.batches_per_pass == 0:
            raise ValueError(
                f"data set of {len(dataset)} samples is smaller than one batch of {batch} x {self.world_size} ranks"
            )
        if self.world_size == 1:
            batching = dict(dataset=SeededDataset(dataset), batch_size=batch, sampler=self.sampler, drop_last=True)
            batching["collate_fn"] = collator
        else:
            # Every rank walks the single-process sampler's global batches and loads its rows of each.
            batching = dict(
                dataset=RankShardDataset(SeededDataset(dataset), self.rank, self.world_size),
                batch_sampler=BatchSampler(self.sampler, self.global_batch, drop_last=True),
                collate_fn=RankShardCollator(collator, self.rank, self.world_size),
            )
        self.loader = DataLoader(
            **batching,
            num_workers=cfg.data.num_workers,
            pin_memory=cfg.data.pin_mem and self.device.type == "cuda",
            persistent_workers=False,
            # Its own generator: creating an iterator must not consume the global RNG that drop path uses,
            # or a run resumed mid-pass would diverge from the uninterrupted one.
            generator=torch.Generator().manual_seed(seed),
            worker_init_fn=_ignore_interrupts,
        )
        opt = cfg.optimization
        self.ipe = opt.ipe or self.batches_per_pass
        self.schedules = Schedules(
            ipe=self.ipe,
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
        self.total_steps = opt.epochs * self.ipe
        self.step = 0
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        if self.world_size > 1:
            # Same initial weights everywhere (seeded above), but each rank its own drop-path draws.
            _seed_all(mix_seed(seed, self.rank))

    # -- checkpoints -------------------------------------------------------------------------------------------
    @property
    def latest_path(self) -> Path:
        return self.folder / f"{self.tag}-latest.pth.tar"

    def state_dict(self, loss: float) -> dict[str, Any]:
        """The official checkpoint layout, plus what exact resume needs (step, RNG states, config). With several
        ranks, ``rng`` is rank 0's state and ``rng_per_rank`` lists every rank's (a collective: all ranks call it)."""
        rng_per_rank = all_gather_objects(_rng_state())
        state = {
            "encoder": self.model.encoder.state_dict(),
            "predictor": self.model.predictor.state_dict(),
            "target_encoder": self.model.target_encoder.state_dict(),
            "opt": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "epoch": self.step // self.ipe,
            "loss": loss,
            "batch_size": self.cfg.data.batch_size,
            "world_size": self.world_size,
            "lr": self.schedules.lr_at(max(self.step - 1, 0)),
            "step": self.step,
            "rng": rng_per_rank[0],
            "config": to_dict(self.cfg),
        }
        if self.world_size > 1:
            state["rng_per_rank"] = rng_per_rank
        return state

    def save(self, loss: float) -> Path:
        """Write ``latest`` (and the epoch's file when due) from rank 0; every rank must call it (it gathers the
        ranks' RNG states)."""
        state = self.state_dict(loss)
        if self.is_main:
            save_checkpoint(state, self.latest_path)
            epoch = state["epoch"]
            due = epoch % self.cfg.meta.checkpoint_freq == 0 or self.step >= self.total_steps
            if self.step % self.ipe == 0 and due:
                save_checkpoint(state, self.folder / f"{self.tag}-ep{epoch}.pth.tar")
        return self.latest_path

    def load(self, path: str | Path) -> None:
        """Restore everything from a checkpoint this trainer (or the official code) wrote."""
        ckpt = read_checkpoint(path)
        from jepa.checkpoint import load_strict, strip_prefixes

        if isinstance(ckpt.get("config"), dict):
            _check_same_architecture(ckpt["config"], to_dict(self.cfg), path)

        for name in ("encoder", "predictor", "target_encoder"):
            if name not in ckpt:
                raise CheckpointError(f"{path} has no '{name}'; its keys are {sorted(ckpt)}")
            load_strict(getattr(self.model, name), strip_prefixes(ckpt[name]), f"{path} [{name}]")
        if ckpt.get("opt") is not None:
            self.optimizer.load_state_dict(ckpt["opt"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        # Official files count epochs only; ours also store the exact step.
        self.step = int(ckpt.get("step", int(ckpt.get("epoch", 0)) * self.ipe))
        saved_world = int(ckpt.get("world_size", 1))
        if saved_world != self.world_size:
            logger.warning(
                "%s was written by %d process(es), this run has %d: the global batch, and so the data order from "
                "here on, differ from the interrupted run's", path, saved_world, self.world_size,
            )  # fmt: skip
        per_rank = ckpt.get("rng_per_rank")
        if per_rank is not None and len(per_rank) == self.world_size:
            _set_rng_state(per_rank[self.rank])
        elif self.world_size == 1:
            if ckpt.get("rng") is not None:
                _set_rng_state(ckpt["rng"])
        else:
            _seed_all(mix_seed(self.cfg.meta.seed, self.rank, self.step))
        logger.info("resumed from %s at step %d (epoch %d)", path, self.step, self.step // self.ipe)

    def maybe_resume(self, latest_first: bool = False) -> None:
        """Resume as ``meta`` says (``load_checkpoint``: from ``read_checkpoint``, else from ``latest``); with
        ``latest_first`` (a requeued job, ``--resume``) from ``latest`` whenever it exists, whatever ``meta`` says."""
        meta = self.cfg.meta
        if latest_first and self.latest_path.is_file():
            self.load(self.latest_path)
            return
        if not meta.load_checkpoint:
            if latest_first:
                logger.info("--resume: %s does not exist yet: starting from scratch", self.latest_path)
            return
        if meta.read_checkpoint:
            path = Path(meta.read_checkpoint)
            path = path if path.is_absolute() else self.folder / path
            if not path.is_file():
                raise CheckpointError(f"meta.read_checkpoint {path} does not exist")
            self.load(path)
        elif self.latest_path.is_file():
            self.load(self.latest_path)
        else:
            logger.info(
                "meta.load_checkpoint is set but %s does not exist yet: starting from scratch", self.latest_path
            )

    # -- training ----------------------------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, mask_sets: list) -> JEPAOutput:
        """One update: schedules -> autocast forward -> backward -> clip -> AdamW -> EMA."""
        s, i = self.schedules, self.step
        set_hyperparams(self.optimizer, s.lr_at(i), s.wd_at(i))
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            out = self.forward_model(x, mask_sets)
        loss = out.loss
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        clip = self.cfg.optimization.clip_grad
        # As in the official V-JEPA code: clipping starts after the warmup epochs, per network.
        if clip is not None and i >= s.warmup_steps:
            nn.utils.clip_grad_norm_(self.model.encoder.parameters(), clip)
            nn.utils.clip_grad_norm_(self.model.predictor.parameters(), clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.update_target(s.momentum_at(i))
        self.nonfinite |= ~torch.isfinite(loss.detach())
        self.step += 1
        return JEPAOutput(loss.detach(), out.loss_pred.detach(), out.loss_reg.detach(), out.target_pooled)

    def _batches(self, max_steps: int):
        while self.step < max_steps:
            pass_index, offset = divmod(self.step, self.batches_per_pass)
            self.sampler.set_epoch(pass_index, offset * self.global_batch)
            for batch in self.loader:
                yield batch
                if self.step >= max_steps:
                    return

    def train(
        self,
        max_steps: int | None = None,
        *,
        resume: bool = False,
        stop: Callable[[], bool] | None = None,
        overwrite: bool = False,
    ) -> dict[str, Any]:
        """Train to the end of the configured epochs (or to ``max_steps`` global steps); returns a summary.

        Args:
            resume: continue from ``latest`` when it exists, whatever ``meta.load_checkpoint`` says (a requeued job).
            stop: polled at every step boundary (with several ranks, one rank saying yes is enough; the ranks agree
                one step later, without a host sync in between): when true, the ranks save ``latest`` at the current
                step and return early with ``summary["stopped"]``. Signals and preemption use it.
            overwrite: start afresh even though the folder holds another run's ``latest`` (an error otherwise).
        """
        fresh = self.step == 0
        if self.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_stale_tmp(self.folder)  # left by a run killed while writing a checkpoint (logged)
        self.maybe_resume(latest_first=resume)
        if fresh and self.step == 0 and not overwrite:
            check_run_folder(self.cfg, resume=False, overwrite=False)
        csv = None
        if self.is_main:
            self._write_params(resumed=self.step > 0 and fresh)
            csv = CSVLogger(self.folder / f"{self.tag}_r0.csv", CSV_COLUMNS, append=self.step > 0)
            csv.drop_rows_after("step", self.step)  # rows logged after the checkpoint are logged again
        bad_log = self._bad_sample_log(self.rank)
        end = self.total_steps if max_steps is None else min(max_steps, self.total_steps)
        self.model.train()
        log_freq = self.cfg.meta.log_freq
        t_start = t_last = time.perf_counter()
        steps_since, last_loss, first_step, stopped = 0, math.nan, self.step, False
        stop_flag = _StopAgreement(stop, self.world_size)
        logger.info(
            "training %s: %d steps (%d epochs x %d), batch %d x %d rank(s), %d samples, on %s (%s)",
            self.cfg.app, end, self.cfg.optimization.epochs, self.ipe, self.cfg.data.batch_size, self.world_size,
            len(self.loader.dataset), self.device, self.cfg.meta.dtype,
        )  # fmt: skip
        for (x, _labels, _seeds), masks_enc, masks_pred in self._batches(end):
            x = x.to(self.device, non_blocking=True)
            masks_enc = [m.to(self.device, non_blocking=True) for m in masks_enc]
            masks_pred = [m.to(self.device, non_blocking=True) for m in masks_pred]
            result = self.train_step(x, mask_sets(self.cfg, masks_enc, masks_pred))
            steps_since += 1
            at_epoch_end = self.step % self.ipe == 0
            stopped = stop_flag.poll() and self.step < end
            if not (self.step % log_freq == 0 or at_epoch_end or self.step == end or stopped):
                continue
            metrics = self._synced_metrics(result)
            self._check_finite(metrics["nonfinite"])
            now = time.perf_counter()
            step_ms = 1000 * (now - t_last) / steps_since
            last_loss = metrics["loss"]
            stats = collapse_stats(metrics["pooled"])
            s, i = self.schedules, self.step - 1
            row = dict(
                epoch=i // self.ipe + 1, step=self.step, loss=last_loss, loss_pred=metrics["loss_pred"],
                loss_reg=metrics["loss_reg"], lr=s.lr_at(i), wd=s.wd_at(i), momentum=s.momentum_at(i),
                ctx_tokens=masks_enc[0].shape[1], tgt_tokens=masks_pred[0].shape[1], step_ms=step_ms,
                samples_per_s=1000 * x.shape[0] * self.world_size / step_ms, mem_mb=_memory_mb(self.device), **stats,
            )  # fmt: skip
            if csv is not None:
                csv.log(**row)
            logger.info(
                "ep %d step %d/%d loss %.4f lr %.2e wd %.3f m %.4f ctx %d tgt %dx%d std %.3f rank %.1f "
                "%.0f ms/step %.1f samples/s",
                row["epoch"], self.step, end, last_loss, row["lr"], row["wd"], row["momentum"], row["ctx_tokens"],
                row["tgt_tokens"], len(masks_pred), stats["feat_std"], stats["eff_rank"], step_ms,
                row["samples_per_s"],
            )  # fmt: skip
            t_last, steps_since = now, 0
            if at_epoch_end or self.step == end or stopped:
                self.save(last_loss)
                self._report_bad_samples(bad_log)
            if stopped:
                logger.warning("stop requested: saved %s at step %d of %d", self.latest_path, self.step, end)
                break
        stop_flag.close()
        barrier()  # no rank leaves before rank 0 has written the last checkpoint
        elapsed = time.perf_counter() - t_start
        summary = {
            "steps": self.step,
            "epochs": self.step / self.ipe,
            "final_loss": last_loss,
            "seconds": elapsed,
            "steps_per_s": (self.step - first_step) / max(elapsed, 1e-9),
            "checkpoint": str(self.latest_path),
            "world_size": self.world_size,
            "stopped": stopped,
            "bad_samples": len(self._bad_samples()),
        }
        return summary

    def _write_params(self, resumed: bool) -> None:
        """The resolved config next to the run; a resumed run whose config changed keeps the first one and writes
        its own beside it."""
        text = dump_config(self.cfg)
        path = self.folder / f"params-{self.tag}.yaml"
        if resumed and path.is_file() and path.read_text() != text:
            path = self.folder / f"params-{self.tag}-step{self.step}.yaml"
            logger.warning("the config differs from the one the run started with: writing it to %s", path)
        atomic_write(path, lambda f: f.write(text), mode="w")

    def _bad_sample_log(self, rank: int) -> Path | None:
        """Point the data set's record of unreadable files (one per rank, appended by every worker) at the run
        folder; None when the data set keeps no such record."""
        if not hasattr(self.dataset, "bad_sample_log"):
            return None
        path = self.folder / f"{self.tag}_bad_samples_r{rank}.tsv"
        self.dataset.bad_sample_log = path
        return path

    def _bad_samples(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for path in sorted(self.folder.glob(f"{self.tag}_bad_samples_r*.tsv")):
            for name, reason in read_bad_sample_log(path).items():
                found.setdefault(name, reason)
        return found

    def _report_bad_samples(self, bad_log: Path | None) -> None:
        if bad_log is None or not self.is_main:
            return
        bad = self._bad_samples()
        if bad:
            logger.warning(
                "%d distinct unreadable file(s) so far, each replaced by a random readable sample (listed in %s)",
                len(bad), self.folder / f"{self.tag}_bad_samples_r*.tsv",
            )  # fmt: skip

    def _synced_metrics(self, result: JEPAOutput) -> dict[str, Any]:
        """Losses averaged over ranks, target features of the whole global batch, and whether any rank saw a
        non-finite loss (one collective; a host sync, done on logging steps only)."""
        if self.world_size == 1:
            return dict(
                loss=result.loss.item(), loss_pred=result.loss_pred.item(), loss_reg=result.loss_reg.item(),
                nonfinite=bool(self.nonfinite), pooled=result.target_pooled,
            )  # fmt: skip
        losses = torch.stack([t.double() for t in (result.loss, result.loss_pred, result.loss_reg)])
        packed = torch.cat([losses, self.nonfinite.double().reshape(1)])
        loss, loss_pred, loss_reg, nonfinite = all_reduce_sum(packed).tolist()
        n = self.world_size
        return dict(
            loss=loss / n, loss_pred=loss_pred / n, loss_reg=loss_reg / n, nonfinite=nonfinite > 0,
            pooled=all_gather_cat(result.target_pooled),
        )  # fmt: skip

    def _check_finite(self, nonfinite: bool) -> None:
        if nonfinite:
            raise FloatingPointError(
                f"non-finite loss before step {self.step}; stopping without overwriting {self.latest_path} "
                "(lower the learning rate, enable clip_grad, or use bfloat16 instead of float16)"
            )


def _ignore_interrupts(worker_id: int) -> None:
    # A Ctrl-C reaches the DataLoader workers too; the main process decides (save at the step boundary, then stop),
    # and a worker that died of it would fail the batches the main process still loads before stopping.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": _numpy_state(),
    }


def _set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate(_as_random_state(rng["python"]))
    np.random.set_state(_numpy_state(rng["numpy"]))


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _numpy_state(saved: dict | None = None) -> Any:
    # Stored as plain lists and numbers so that checkpoints load with torch.load(weights_only=True).
    if saved is None:
        _, keys, pos, has_gauss, cached = np.random.get_state()
        return {"keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}
    return ("MT19937", np.array(saved["keys"], dtype=np.uint32), saved["pos"], saved["has_gauss"], saved["cached"])


def _as_random_state(state: Any) -> tuple:
    version, internal, gauss = state
    return int(version), tuple(int(v) for v in internal), gauss
