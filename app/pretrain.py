"""The pretraining loop, written once for I-JEPA (images) and V-JEPA (video).

``Pretrainer(cfg, device).train()`` builds the models, data, optimizer and schedules from a validated
:class:`~jepa.config.PretrainConfig`, trains, logs and checkpoints. The training state is the global step:
schedules are pure functions of it, and so is the data position (pass ``step // batches_per_pass``, batch
``step % batches_per_pass`` of a permutation seeded by the pass), so resuming restores weights, optimizer,
scaler and RNG and continues exactly where the interrupted run was.
"""

import logging
import math
import random
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from jepa.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from jepa.config import PretrainConfig, dump_config, to_dict
from jepa.config.pretrain import ImageMaskConfig
from jepa.logging_utils import CSVLogger
from jepa.meta_arch import JEPA, JEPAOutput
from jepa.models import VisionTransformer, VisionTransformerPredictor, build_encoder, vit_predictor
from jepa.optim import make_adamw, set_hyperparams
from jepa.sampling import EpochSampler, SeededDataset, WeightedEpochSampler
from jepa.schedules import Schedules

logger = logging.getLogger(__name__)

CSV_COLUMNS = [
    "epoch", "step", "loss", "loss_pred", "loss_reg", "lr", "wd", "momentum", "ctx_tokens", "tgt_tokens",
    "step_ms", "samples_per_s", "mem_mb", "feat_std", "eff_rank",
]  # fmt: skip
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_models(cfg: PretrainConfig) -> tuple[VisionTransformer, VisionTransformerPredictor]:
    """Encoder and predictor as the config describes them."""
    d, m = cfg.data, cfg.model
    num_frames = d.num_frames if cfg.is_video else 1
    custom = (
        {} if m.model_name else dict(embed_dim=m.embed_dim, depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio)
    )
    encoder = build_encoder(
        m.model_name,
        img_size=d.crop_size,
        patch_size=d.patch_size,
        num_frames=num_frames,
        tubelet_size=d.tubelet_size,
        uniform_power=m.uniform_power,
        use_sdpa=cfg.meta.use_sdpa,
        use_rope=m.use_rope,
        use_silu=m.use_silu,
        wide_silu=m.wide_silu,
        drop_path_rate=m.drop_path_rate,
        use_activation_checkpointing=m.use_activation_checkpointing,
        **custom,
    )
    predictor = vit_predictor(
        img_size=d.crop_size,
        patch_size=d.patch_size,
        num_frames=num_frames,
        tubelet_size=d.tubelet_size,
        embed_dim=encoder.embed_dim,
        predictor_embed_dim=m.pred_embed_dim,
        depth=m.pred_depth,
        num_heads=m.pred_num_heads or encoder.num_heads,
        uniform_power=m.uniform_power,
        use_mask_tokens=m.use_mask_tokens,
        num_mask_tokens=len(cfg.mask) if isinstance(cfg.mask, list) else 1,
        zero_init_mask_tokens=m.zero_init_mask_tokens,
        use_rope=m.use_rope,
        square_rope_grid=False,
        use_silu=m.use_silu,
        wide_silu=m.wide_silu,
        use_sdpa=cfg.meta.use_sdpa,
        use_activation_checkpointing=m.use_activation_checkpointing,
    )
    return encoder, predictor


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
    )
    mask: ImageMaskConfig = cfg.mask
    collator = MultiblockMaskCollator2D(
        input_size=d.crop_size,
        patch_size=d.patch_size,
        enc_mask_scale=mask.enc_mask_scale,
        pred_mask_scale=mask.pred_mask_scale,
        aspect_ratio=mask.aspect_ratio,
        nenc=mask.num_enc_masks,
        npred=mask.num_pred_masks,
        min_keep=mask.min_keep,
        allow_overlap=mask.allow_overlap,
        seed=seed,
    )
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


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Pretrainer:
    """Owns one run: model, optimizer, data, schedules, logging and checkpoints in ``cfg.logging.folder``."""

    def __init__(self, cfg: PretrainConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.folder = Path(cfg.logging.folder)
        self.tag = cfg.logging.write_tag
        seed = cfg.meta.seed
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)

        encoder, predictor = build_models(cfg)
        loss = cfg.loss
        self.model = JEPA(
            encoder, predictor, loss_type_for(cfg), loss.loss_exp, loss.reg_coeff, loss.center_targets
        ).to(self.device)
        self.optimizer = make_adamw([self.model.encoder, self.model.predictor], betas=cfg.optimization.betas)
        self.dtype = DTYPES[cfg.meta.dtype]
        self.autocast = self.dtype != torch.float32
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None

        dataset, collator = build_dataset_and_collator(cfg, seed)
        batch = cfg.data.batch_size
        weights = getattr(dataset, "sample_weights", None)
        if cfg.data.datasets_weights is not None and weights is not None:
            self.sampler = WeightedEpochSampler(weights, seed)
        else:
            self.sampler = EpochSampler(len(dataset), seed)
        self.batches_per_pass = len(self.sampler) // batch
        if self.batches_per_pass == 0:
            raise ValueError(f"data set of {len(dataset)} samples is smaller than one batch of {batch}")
        self.loader = DataLoader(
            SeededDataset(dataset),
            batch_size=batch,
            sampler=self.sampler,
            collate_fn=collator,
            num_workers=cfg.data.num_workers,
            pin_memory=cfg.data.pin_mem and self.device.type == "cuda",
            drop_last=True,
            persistent_workers=False,
            # Its own generator: creating an iterator must not consume the global RNG that drop path uses,
            # or a run resumed mid-pass would diverge from the uninterrupted one.
            generator=torch.Generator().manual_seed(seed),
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

    # -- checkpoints -------------------------------------------------------------------------------------------
    @property
    def latest_path(self) -> Path:
        return self.folder / f"{self.tag}-latest.pth.tar"

    def state_dict(self, loss: float) -> dict[str, Any]:
        """The official checkpoint layout, plus what exact resume needs (step, RNG states, config)."""
        return {
            "encoder": self.model.encoder.state_dict(),
            "predictor": self.model.predictor.state_dict(),
            "target_encoder": self.model.target_encoder.state_dict(),
            "opt": self.optimizer.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "epoch": self.step // self.ipe,
            "loss": loss,
            "batch_size": self.cfg.data.batch_size,
            "world_size": 1,
            "lr": self.schedules.lr_at(max(self.step - 1, 0)),
            "step": self.step,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": random.getstate(),
                "numpy": _numpy_state(),
            },
            "config": to_dict(self.cfg),
        }

    def save(self, loss: float) -> Path:
        state = self.state_dict(loss)
        path = save_checkpoint(state, self.latest_path)
        epoch = state["epoch"]
        if self.step % self.ipe == 0 and (epoch % self.cfg.meta.checkpoint_freq == 0 or self.step >= self.total_steps):
            save_checkpoint(state, self.folder / f"{self.tag}-ep{epoch}.pth.tar")
        return path

    def load(self, path: str | Path) -> None:
        """Restore everything from a checkpoint this trainer (or the official code) wrote."""
        ckpt = read_checkpoint(path)
        from jepa.checkpoint import load_strict, strip_prefixes

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
        rng = ckpt.get("rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            random.setstate(_as_random_state(rng["python"]))
            np.random.set_state(_numpy_state(rng["numpy"]))
        logger.info("resumed from %s at step %d (epoch %d)", path, self.step, self.step // self.ipe)

    def maybe_resume(self) -> None:
        meta = self.cfg.meta
        if not meta.load_checkpoint:
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
            out = self.model(x, mask_sets)
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
            self.sampler.set_epoch(pass_index, offset * self.cfg.data.batch_size)
            for batch in self.loader:
                yield batch
                if self.step >= max_steps:
                    return

    def train(self, max_steps: int | None = None) -> dict[str, Any]:
        """Train to the end of the configured epochs (or to ``max_steps`` global steps); returns a summary."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"params-{self.tag}.yaml").write_text(dump_config(self.cfg))
        self.maybe_resume()
        csv = CSVLogger(self.folder / f"{self.tag}_r0.csv", CSV_COLUMNS, append=self.step > 0)
        csv.drop_rows_after("step", self.step)
        end = self.total_steps if max_steps is None else min(max_steps, self.total_steps)
        self.model.train()
        log_freq = self.cfg.meta.log_freq
        t_start = t_last = time.perf_counter()
        steps_since, last_loss, first_step = 0, math.nan, self.step
        logger.info(
            "training %s: %d steps (%d epochs x %d), batch %d, %d samples, on %s (%s)",
            self.cfg.app, end, self.cfg.optimization.epochs, self.ipe, self.cfg.data.batch_size,
            len(self.loader.dataset), self.device, self.cfg.meta.dtype,
        )  # fmt: skip
        for (x, _labels, _seeds), masks_enc, masks_pred in self._batches(end):
            x = x.to(self.device, non_blocking=True)
            masks_enc = [m.to(self.device, non_blocking=True) for m in masks_enc]
            masks_pred = [m.to(self.device, non_blocking=True) for m in masks_pred]
            result = self.train_step(x, mask_sets(self.cfg, masks_enc, masks_pred))
            steps_since += 1
            at_epoch_end = self.step % self.ipe == 0
            if self.step % log_freq == 0 or at_epoch_end or self.step == end:
                self._check_finite()
                now = time.perf_counter()
                step_ms = 1000 * (now - t_last) / steps_since
                last_loss = result.loss.item()
                stats = JEPA.collapse_stats(result)
                s, i = self.schedules, self.step - 1
                row = dict(
                    epoch=i // self.ipe + 1, step=self.step, loss=last_loss, loss_pred=result.loss_pred.item(),
                    loss_reg=result.loss_reg.item(), lr=s.lr_at(i), wd=s.wd_at(i), momentum=s.momentum_at(i),
                    ctx_tokens=masks_enc[0].shape[1], tgt_tokens=masks_pred[0].shape[1], step_ms=step_ms,
                    samples_per_s=1000 * x.shape[0] / step_ms, mem_mb=_memory_mb(self.device), **stats,
                )  # fmt: skip
                csv.log(**row)
                logger.info(
                    "ep %d step %d/%d loss %.4f lr %.2e wd %.3f m %.4f ctx %d tgt %dx%d std %.3f rank %.1f "
                    "%.0f ms/step %.1f samples/s",
                    row["epoch"], self.step, end, last_loss, row["lr"], row["wd"], row["momentum"], row["ctx_tokens"],
                    row["tgt_tokens"], len(masks_pred), stats["feat_std"], stats["eff_rank"], step_ms,
                    row["samples_per_s"],
                )  # fmt: skip
                t_last, steps_since = now, 0
            if at_epoch_end or self.step == end:
                self._check_finite()
                self.save(result.loss.item())
        elapsed = time.perf_counter() - t_start
        summary = {
            "steps": self.step,
            "epochs": self.step / self.ipe,
            "final_loss": last_loss,
            "seconds": elapsed,
            "steps_per_s": (self.step - first_step) / max(elapsed, 1e-9),
            "checkpoint": str(self.latest_path),
        }
        return summary

    def _check_finite(self) -> None:
        if bool(self.nonfinite):
            raise FloatingPointError(
                f"non-finite loss before step {self.step}; stopping without overwriting {self.latest_path} "
                "(lower the learning rate, enable clip_grad, or use bfloat16 instead of float16)"
            )


def _numpy_state(saved: dict | None = None) -> Any:
    # Stored as plain lists and numbers so that checkpoints load with torch.load(weights_only=True).
    if saved is None:
        _, keys, pos, has_gauss, cached = np.random.get_state()
        return {"keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}
    return ("MT19937", np.array(saved["keys"], dtype=np.uint32), saved["pos"], saved["has_gauss"], saved["cached"])


def _as_random_state(state: Any) -> tuple:
    version, internal, gauss = state
    return int(version), tuple(int(v) for v in internal), gauss
