"""The pretraining loop, written once for I-JEPA (images) and V-JEPA (video).

``Pretrainer(cfg, device).train()`` builds the models, data, optimizer and schedules from a validated
:class:`~jepa.config.PretrainConfig`, trains, logs and checkpoints. The training state is the global step:
schedules are pure functions of it, and so is the data position (pass ``step // batches_per_pass``, batch
``step % batches_per_pass`` of a permutation seeded by the pass), so resuming restores weights, optimizer,
scaler and RNG and continues exactly where the interrupted run was.

With several processes (``jepa.runtime.distributed``: ``--devices``, torchrun or Slurm), each rank computes on
``data.batch_size`` samples and DDP averages the gradients; the ranks share the single-process run's global batches
of ``world_size * batch_size`` samples, with the same augmentations and masks (see
:class:`~jepa.runtime.distributed.RankShardCollator`), so ``N`` processes train like one process with an ``N``
times larger batch. Only rank 0 writes checkpoints, the config and the CSV log.

V-JEPA 2's clips of several lengths (``data.dataset_fpcs``) arrive as one group per length, each with its own masks
(:class:`~jepa.video.masks.MultiLengthMaskCollator`); the step runs every group and averages the losses of every
(group, mask config) pair, as the official step does. With several processes the ranks group each global batch
by length as one process does and take their rows of every group, and each rank's loss weights a group by the
rank's share of it (:class:`~jepa.training.ddp.GlobalGroupMean`), so that they still train like one process.
"""

import logging
import math
import resource
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader

from jepa.checkpoint import CheckpointError, atomic_write, read_checkpoint
from jepa.config import ConfigError, PretrainConfig, dump_config, to_dict
from jepa.config.pretrain import image_steps_before, is_image_step, model_spec_from_config_dict
from jepa.config.spec import ARCHITECTURE_KEYS, Difference, spec_differences
from jepa.data import read_bad_sample_log
from jepa.data.sampling import EpochSampler, MapDataset, SeededDataset, WeightedEpochSampler, mix_seed
from jepa.masks.collate import MaskCollator
from jepa.models.vision_transformer import Modality
from jepa.runtime.distributed import (
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
from jepa.runtime.logging_utils import CSVLogger
from jepa.runtime.precision import resolve_dtype
from jepa.training import builders
from jepa.training.builders import build_models, clip_groups, loss_type_for, mask_token_indices, pretrain_schedules
from jepa.training.builders import mask_sets as mask_sets  # re-exported: tests and scripts pair masks through it
from jepa.training.ddp import (
    GlobalGroupMean,
    full_optimizer_state_dict,
    full_state_dict,
    load_optimizer,
    shard_fsdp,
    wrap_ddp,
)
from jepa.training.lejepa import LeJEPA
from jepa.training.losses import collapse_stats
from jepa.training.meta_arch import JEPA, ClipGroup, JEPAOutput, MaskSet
from jepa.training.online_probe import OnlineProbe, make_online_probe, probe_log_path
from jepa.training.optim import clip_per_module, make_adamw, set_hyperparams_at
from jepa.training.rng import restore_rng, rng_state, seed_all
from jepa.training.run import RunFolder, load_modules
from jepa.training.warm_start import Start, load_optimizer_state, load_weights, read_source, run_start
from jepa.worldmodel.model import WorldModel

logger = logging.getLogger(__name__)

CSV_COLUMNS = [
    "epoch", "step", "loss", "loss_pred", "loss_reg", "lr", "wd", "momentum", "ctx_tokens", "tgt_tokens",
    "step_ms", "samples_per_s", "mem_mb", "feat_std", "eff_rank", "eff_rank_rel", "sigreg", "pos_share",
    "loss_sigreg",
]  # fmt: skip
# app vjepa_droid logs its two terms: loss_pred is teacher forcing, loss_rollout the rollout.
CSV_COLUMNS_WORLD_MODEL = [*CSV_COLUMNS, "loss_rollout"]
# app vjepa_2_1 logs its dense term (unweighted; 0 without loss.predict_all) and what the logged step trained on
# (image | video; "ranks" when some ranks train on images and the others on video).
CSV_COLUMNS_VJEPA21 = [*CSV_COLUMNS, "loss_context", "modality"]
# The clips a `dataset_type: moving_digits` run generates, read at every build (so that tests can make it smaller).
MOVING_DIGITS_VIDEOS = builders.MOVING_DIGITS_VIDEOS


def build_dataset_and_collator(cfg: PretrainConfig, seed: int) -> tuple[MapDataset, builders.Collator]:
    """:func:`jepa.training.builders.build_dataset_and_collator`, ``moving_digits`` making
    :data:`MOVING_DIGITS_VIDEOS` clips."""
    return builders.build_dataset_and_collator(cfg, seed, moving_digits_videos=MOVING_DIGITS_VIDEOS)


def run_folder(cfg: PretrainConfig, writer: bool = True) -> RunFolder:
    """The run's files: ``logging.folder``, named after ``logging.write_tag``."""
    return RunFolder(Path(cfg.logging.folder), cfg.logging.write_tag, writer)


class RunFolderError(RuntimeError):
    """A new run would overwrite another run's checkpoints."""


def check_run_folder(cfg: PretrainConfig, *, resume: bool, overwrite: bool) -> None:
    """Refuse a fresh run in a folder that holds another run's ``latest``: it would overwrite that run's
    checkpoints and log. Resuming (``--resume``, ``meta.load_checkpoint``) and ``--overwrite`` are fine."""
    latest = run_folder(cfg).latest
    if resume or overwrite or cfg.meta.load_checkpoint or not latest.is_file():
        return
    raise RunFolderError(
        f"{latest} exists: logging.folder holds another run. Continue it with --resume (or meta.load_checkpoint: "
        "true), start afresh over it with --overwrite, or choose another logging.folder / logging.write_tag"
    )


# A resumed run loads the weights as they are (an eval resamples position tables; resuming does not), so the input
# size is compared too; the other keys (lr, epochs, data paths, drop path, ...) may change on resume.
_RESUME_KEYS = (*ARCHITECTURE_KEYS, "img_size")
# The config keys the spec fields come from, so that a refusal names what to set back (others: model.<field>).
_CONFIG_KEYS = {
    "img_size": "data.crop_size", "patch_size": "data.patch_size", "num_frames": "data.num_frames",
    "tubelet_size": "data.tubelet_size", "predictor.predictor_embed_dim": "model.pred_embed_dim",
    "predictor.depth": "model.pred_depth", "predictor.num_mask_tokens": "mask (number of configs) x data.dataset_fpcs",
}  # fmt: skip


def _config_key(d: Difference) -> str:
    return _CONFIG_KEYS.get(d.key, d.key if d.key.startswith("predictor.") else f"model.{d.key}")


def _check_same_architecture(stored: dict[str, Any], cfg: PretrainConfig, path: str | Path) -> None:
    """Raise :class:`CheckpointError` when the config stored in checkpoint ``path`` describes another model (the
    model specs compared by :func:`jepa.config.spec.spec_differences`)."""
    try:
        theirs = model_spec_from_config_dict(stored)
    except (ConfigError, ValueError) as e:
        raise CheckpointError(f"{path}: the config it stores describes no model this version builds: {e}") from e
    differences = spec_differences(theirs, cfg.model_spec(), keys=_RESUME_KEYS)
    if differences:
        raise CheckpointError(
            f"{path} was written by a run of another model: "
            + "; ".join(f"{_config_key(d)}: checkpoint {d.checkpoint!r} vs this run {d.config!r}" for d in differences)
        )


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


@dataclass
class DataStream:
    """One data set's loader on this rank, and where a step reads from it: batch ``k`` (counted over passes) is
    batch ``k % batches_per_pass`` of pass ``k // batches_per_pass`` of the sampler's permutation."""

    loader: DataLoader
    sampler: EpochSampler | WeightedEpochSampler
    global_batch: int  # samples per batch over all the ranks that share this stream
    batches_per_pass: int
    dataset: MapDataset

    def batches(self, position: int) -> Iterator[Any]:
        """The batches from batch ``position`` on, without end (each pass re-seeded from its index)."""
        while True:
            pass_index, offset = divmod(position, self.batches_per_pass)
            self.sampler.set_epoch(pass_index, offset * self.global_batch)
            for batch in self.loader:
                yield batch
                position += 1


class Pretrainer:
    """Owns one run: model, optimizer, data, schedules, logging and checkpoints in ``cfg.logging.folder``.

    Runs on this process's rank of the initialised process group, if any
    (``jepa.runtime.distributed.init_distributed``).
    """

    def __init__(self, cfg: PretrainConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.rank, self.world_size = get_rank(), get_world_size()
        self.is_main = self.rank == 0
        self.image_mix = cfg.image_mix(self.world_size)  # app vjepa_2_1 with img_data: ranks | accumulate | interleave
        if self.image_mix == "ranks":
            builders.rank_split(cfg, self.world_size)  # the batches divide over the ranks (before any building)
        self.files = run_folder(cfg, writer=self.is_main)
        self.folder, self.tag = self.files.folder, self.files.tag
        seed = cfg.meta.seed
        seed_all(seed)

        loss = cfg.loss
        if cfg.is_world_model:  # a frozen encoder and an action-conditioned predictor (jepa.worldmodel.model)
            self.model: JEPA | LeJEPA | WorldModel = builders.build_world_model(cfg).to(self.device)
        elif cfg.app == "lejepa":  # the same encoder, a projector head in the predictor's place (jepa.training.lejepa)
            encoder, _ = build_models(cfg)
            self.model = builders.build_lejepa(cfg, encoder).to(self.device)
        else:
            teacher = builders.build_teacher(cfg)  # first: it sets the width the student's predictor outputs
            encoder, predictor = build_models(cfg)
            self.model = JEPA(
                encoder, predictor, loss_type_for(cfg), loss.loss_exp, loss.reg_coeff, loss.center_targets,
                sigreg_weight=loss.sigreg_weight, sigreg_on=loss.sigreg_on, sigreg_directions=loss.sigreg_directions,
                target=loss.target, seed=cfg.meta.seed, teacher=teacher, **builders.jepa_objective_kwargs(cfg),
            ).to(self.device)  # fmt: skip
        self._warned_rank = self._warned_drop = False
        self._first_rank: tuple[int, float] | None = None  # (step, effective rank) of the first logged step
        # meta.eval_freq: the online k-NN probe, on rank 0 (None: off, or no labelled held-out split).
        # Sharded, the target encoder's forward is a collective: every rank scores (rank 0 logs).
        probing = (self.rank == 0 or cfg.meta.sharding == "fsdp") and not cfg.is_world_model
        self.online_probe = make_online_probe(cfg, self.device) if probing else None
        # DDP averages the gradients of encoder and predictor (the target encoder has none); the target encoder
        # then moves identically on every rank, since every rank applies the same update to the same weights.
        # No buffer changes during training (no batch norm), so nothing to broadcast before each forward.
        # Clips of several lengths on several ranks: a rank's losses weigh each length by its share of the global
        # batch's clips of it, and a rank without clips of one length leaves that length's mask tokens unused.
        by_length = self.world_size > 1 and cfg.app != "lejepa" and len(cfg.data.clip_lengths) > 1
        self.sharded = cfg.meta.sharding == "fsdp"
        if self.sharded:
            self._check_fsdp(by_length)
            # FSDP2 shards the modules in place (same classes and names); every rank runs every forward.
            self.forward_model: torch.nn.Module = shard_fsdp(self.model)
        else:
            self.forward_model = wrap_ddp(
                GlobalGroupMean(self.model, cfg.data.clip_lengths) if by_length else self.model, self.device,
                self.world_size, sync_buffers=False,
                # The AC predictor's extrinsics encoder gets no gradient without extrinsics (as officially).
                # Images and video: each step leaves the other modality's tokenizer and embeddings unused.
                find_unused_parameters=cfg.is_world_model or builders.spare_mask_tokens(cfg) > 0 or by_length
                or cfg.img_data is not None,
            )  # fmt: skip
        self.optimizer = make_adamw([self.model.encoder, self.model.predictor], betas=cfg.optimization.betas)
        self.dtype = resolve_dtype(cfg.meta.dtype, self.device)
        self.autocast = self.dtype != torch.float32
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None

        with main_process_first():  # rank 0 generates files (moving-digit clips) before the others read them
            dataset, collator = build_dataset_and_collator(cfg, seed)
        self.dataset = dataset
        self.streams, video_passes = self._make_streams(dataset, collator, seed)
        # The stream this rank trains on (the video one when interleaved), under the names of one-modality runs.
        main = self.streams[self.rank_modality]
        self.loader, self.sampler, self.global_batch = main.loader, main.sampler, main.global_batch
        self.batches_per_pass = main.batches_per_pass
        # An epoch is a pass over the video data (in video batches, whatever the mix), unless optimization.ipe.
        self.ipe = cfg.optimization.ipe or video_passes
        self.schedules = pretrain_schedules(cfg.optimization, self.ipe, world_model=cfg.is_world_model)
        self.total_steps = cfg.optimization.epochs * self.ipe
        self.step = 0
        self.started_from: Start | None = None  # the checkpoint maybe_resume loaded, if any
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        if self.world_size > 1:
            # Same initial weights everywhere (seeded above), but each rank its own drop-path draws.
            seed_all(mix_seed(seed, self.rank))

    def _check_fsdp(self, by_length: bool) -> None:
        """``meta.sharding: fsdp`` needs a process group and one of the JEPA objectives it is tested with."""
        cfg = self.cfg
        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError(
                "meta.sharding: fsdp shards the model over the ranks of a process group: run under torchrun, Slurm "
                "or with several devices (app.main --devices), or set meta.sharding: ddp"
            )
        unsupported = (
            "app vjepa_droid (a frozen encoder: nothing to shard but the predictor)" if cfg.is_world_model
            else "app lejepa (its target encoder is the encoder itself)" if cfg.app == "lejepa"
            else f"data.dataset_fpcs {cfg.data.dataset_fpcs} (clips of several lengths on several ranks)" if by_length
            else None
        )  # fmt: skip
        if unsupported is not None:
            raise ConfigError(f"meta.sharding: fsdp is not supported with {unsupported}; set meta.sharding: ddp")
        if cfg.meta.dtype == "float16":
            raise ConfigError("meta.sharding: fsdp with meta.dtype float16 (GradScaler) is not supported: use bfloat16")

    @property
    def rank_modality(self) -> Modality:
        """What this rank trains on when it does not interleave: images on the first image ranks of a ``ranks`` mix
        (app vjepa_2_1), else video (the label of every other app's batches, which ignore it)."""
        if self.image_mix == "ranks" and self.rank < self._image_ranks:
            return "image"
        return "video"

    @property
    def _image_ranks(self) -> int:
        assert self.cfg.img_data is not None
        return int(self.world_size * self.cfg.img_data.rank_ratio)

    def _make_streams(
        self, dataset: MapDataset, collator: builders.Collator, seed: int
    ) -> tuple[dict[Modality, "DataStream"], int]:
        """This rank's data streams (``video``, the app's data; with app vjepa_2_1's images also ``image``) and the
        video stream's batches per pass (what an epoch is).

        ``ranks`` (official): the first ``int(world_size * rank_ratio)`` ranks load images, each
        ``img_data.batch_size``, sharded over the image ranks only; the others video, the per-rank batch scaled to
        ``data.batch_size * world_size // video ranks`` so that the global video batch is kept, sharded over the video
        ranks only. ``accumulate`` and ``interleave``: every rank has both streams, each sharded over all ranks."""
        cfg, d = self.cfg, self.cfg.data
        img = cfg.img_data
        if self.image_mix is None or img is None:
            video = self._make_stream(dataset, collator, seed)
            return {"video": video}, video.batches_per_pass
        if self.world_size > 1 and len(d.clip_lengths) > 1:
            raise ConfigError(
                f"data.dataset_fpcs {d.dataset_fpcs} with img_data on {self.world_size} processes: clips of several "
                "lengths next to images on several ranks are not supported; train in one process or give every entry "
                "of data.dataset_fpcs the same length"
            )
        image_seed = mix_seed(seed, 1)  # the images' own order and masks, not the clips' twins
        workers = d.num_workers if img.num_workers is None else img.num_workers
        with main_process_first():
            images, image_collator = builders.build_image_data(cfg, seed, image_seed)
        if self.image_mix in ("accumulate", "interleave"):
            video = self._make_stream(dataset, collator, seed)
            image = self._make_stream(images, image_collator, image_seed, batch=img.batch_size, num_workers=workers)
            return {"video": video, "image": image}, video.batches_per_pass
        split = builders.rank_split(cfg, self.world_size)
        image_ranks, video_ranks, video_batch = split.image_ranks, split.video_ranks, split.video_batch
        # Every rank knows the video passes (the epoch length), image ranks too.
        video_passes = len(self._sampler(dataset, seed)) // (video_batch * video_ranks)
        logger.info("images and video on separate ranks: ranks 0-%d images (batch %d each), ranks %d-%d video "
                    "(batch %d each)", image_ranks - 1, img.batch_size, image_ranks, self.world_size - 1,
                    video_batch)  # fmt: skip
        if self.rank < image_ranks:
            stream = self._make_stream(images, image_collator, image_seed, batch=img.batch_size, rank=self.rank,
                                       world=image_ranks, num_workers=workers)  # fmt: skip
            return {"image": stream}, video_passes
        stream = self._make_stream(dataset, collator, seed, batch=video_batch, rank=self.rank - image_ranks,
                                   world=video_ranks)  # fmt: skip
        return {"video": stream}, video_passes

    def _sampler(self, dataset: MapDataset, seed: int) -> EpochSampler | WeightedEpochSampler:
        weights = getattr(dataset, "sample_weights", None)
        if self.cfg.data.datasets_weights is not None and weights is not None:
            return WeightedEpochSampler(weights, seed)
        return EpochSampler(len(dataset), seed)

    def _make_loader(self, dataset: MapDataset, collator: builders.Collator, seed: int) -> DataLoader:
        """The loader of this rank's rows of the global batches of ``data``."""
        return self._make_stream(dataset, collator, seed).loader

    def _make_stream(
        self, dataset: MapDataset, collator: builders.Collator, seed: int, *, batch: int | None = None,
        rank: int | None = None, world: int | None = None, num_workers: int | None = None,
    ) -> "DataStream":  # fmt: skip
        """The stream of data rank ``rank`` of ``world`` (default: this process's rank of all): its rows of the
        global batches of ``batch`` x ``world`` samples (default ``data.batch_size``)."""
        batch = self.cfg.data.batch_size if batch is None else batch
        rank = self.rank if rank is None else rank
        world = self.world_size if world is None else world
        workers = self.cfg.data.num_workers if num_workers is None else num_workers
        sampler = self._sampler(dataset, seed)
        global_batch = batch * world
        batches_per_pass = len(sampler) // global_batch
        if batches_per_pass == 0:
            raise ValueError(f"data set of {len(dataset)} samples is smaller than one batch of {batch} x {world} ranks")
        batching: dict[str, Any]
        if world == 1:
            batching = dict(dataset=SeededDataset(dataset), batch_size=batch, sampler=sampler, drop_last=True)
            batching["collate_fn"] = collator
        else:
            # Every rank walks the single-process sampler's global batches and loads its rows of each.
            batching = dict(
                dataset=self._rank_shards(dataset, collator, rank, world),
                # The samplers yield (index, seed) pairs, not the ints torch's stub expects.
                batch_sampler=BatchSampler(sampler, global_batch, drop_last=True),  # type: ignore[arg-type]
                collate_fn=RankShardCollator(collator, rank, world),
            )
        loader = DataLoader(
            **batching,
            num_workers=workers,
            pin_memory=self.cfg.data.pin_mem and self.device.type == "cuda",
            persistent_workers=self.cfg.data.persistent_workers and workers > 0,
            # Its own generator: creating an iterator must not consume the global RNG that drop path uses,
            # or a run resumed mid-pass would diverge from the uninterrupted one.
            generator=torch.Generator().manual_seed(seed),
            worker_init_fn=_ignore_interrupts,
        )
        return DataStream(loader, sampler, global_batch, batches_per_pass, dataset)

    def _rank_shards(self, dataset: MapDataset, collator: builders.Collator, rank: int, world: int
                     ) -> RankShardDataset:  # fmt: skip
        """The loader's data set on data rank ``rank`` of ``world``: its rows of each global batch, or with clips of
        several lengths its rows of each length group of it (grouped by the lengths the data set gives its indices,
        before loading)."""
        seeded = SeededDataset(dataset)
        if isinstance(collator, MaskCollator):
            return RankShardDataset(seeded, rank, world)
        fpcs, weight = self.cfg.data.dataset_fpcs, self.cfg.loss.sigreg_weight
        if weight > 0:
            raise ConfigError(
                f"data.dataset_fpcs {fpcs} with loss.sigreg_weight {weight} on {self.world_size} processes: SIGReg "
                "sums its statistics over the ranks once per clip length, and a rank without clips of one length in "
                "a batch would skip that exchange; train in one process, set loss.sigreg_weight: 0, or give every "
                "entry of data.dataset_fpcs the same length"
            )
        clip_lengths = getattr(dataset, "clip_lengths", None)
        if clip_lengths is None:
            raise TypeError(
                f"data.dataset_fpcs {fpcs} on {self.world_size} processes: the {type(dataset).__name__} data set "
                "does not give the clip length of each index (clip_lengths), which the ranks group batches by"
            )
        return RankShardDataset(
            seeded, rank, world, clip_lengths=clip_lengths, group_positions=collator.group_positions
        )

    # -- checkpoints -------------------------------------------------------------------------------------------
    @property
    def latest_path(self) -> Path:
        return self.files.latest

    def state_dict(self, loss: float) -> dict[str, Any]:
        """The official checkpoint layout, plus what exact resume needs (step, RNG states, config). With several
        ranks, ``rng`` is rank 0's state and ``rng_per_rank`` lists every rank's (a collective: all ranks call it)."""
        rng_per_rank = all_gather_objects(rng_state())
        # Sharded (FSDP2), each entry is gathered into its full tensor: the same layout as unsharded (collectives).
        networks = (self.model.encoder, self.model.predictor, self.model.target_encoder)
        encoder, predictor, target = (full_state_dict(m) if self.sharded else m.state_dict() for m in networks)
        state = {
            "encoder": encoder,
            "predictor": predictor,
            "target_encoder": target,
            "opt": full_optimizer_state_dict(self.optimizer) if self.sharded else self.optimizer.state_dict(),
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
        epoch = state["epoch"]
        due = epoch % self.cfg.meta.checkpoint_freq == 0 or self.step >= self.total_steps
        self.files.save(state, epoch=epoch if self.step % self.ipe == 0 and due else None)
        return self.latest_path

    def load(self, path: str | Path, *, start: Start | None = None) -> None:
        """Restore everything from a checkpoint this trainer (or the official code) wrote. Given a ``start`` of kind
        ``anneal`` or ``pretrained`` (for ``path``), start this run at step 0 from that file's weights instead, and
        for an anneal from its optimizer state too (:mod:`jepa.training.warm_start`)."""
        if start is not None and start.kind != "resume":
            source = read_source(start)
            modules = {name: getattr(self.model, name) for name in ("encoder", "predictor", "target_encoder")}
            load_weights(source, modules, self.cfg, start, config_key=_config_key)
            if start.kind == "anneal":
                load_optimizer_state(self.optimizer, self.scaler, source, start)
            return
        ckpt = read_checkpoint(path)
        if isinstance(ckpt.get("config"), dict):
            _check_same_architecture(ckpt["config"], self.cfg, path)
        load_modules(ckpt, {name: getattr(self.model, name) for name in ("encoder", "predictor", "target_encoder")},
                     path)  # fmt: skip
        if ckpt.get("opt") is not None:
            load_optimizer(self.optimizer, ckpt["opt"])
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
        restore_rng(ckpt, self.rank, self.world_size, reseed=mix_seed(self.cfg.meta.seed, self.rank, self.step))
        logger.info("resumed from %s at step %d (epoch %d)", path, self.step, self.step // self.ipe)

    def maybe_resume(self, latest_first: bool = False, *, overwrite: bool = False) -> None:
        """Resume as ``meta`` says (``load_checkpoint``: from ``read_checkpoint``, else from ``latest``); with
        ``latest_first`` (a requeued job, ``--resume``) from ``latest`` whenever it exists, whatever ``meta`` says.

        An anneal run (``optimization.is_anneal``) or one from ``meta.pretrained_checkpoint`` that does not resume
        starts from that file's weights (:func:`jepa.training.warm_start.run_start`), once per trainer; over an
        existing ``latest`` only with ``overwrite``.
        """
        start = run_start(self.cfg, self.files, latest_first=latest_first, log=logger)
        if start is None:
            return
        if start.kind != "resume":
            if self.step > 0 or self.started_from is not None:
                return  # this trainer already holds the run's state
            if self.latest_path.is_file() and not overwrite:
                resume = "optimization.resume_anneal: true" if start.kind == "anneal" else "meta.load_checkpoint: true"
                raise RunFolderError(
                    f"{self.latest_path} exists: logging.folder holds this run's checkpoints already. Continue it "
                    f"with --resume (or {resume}), start again from {start.key} over it with --overwrite, or choose "
                    "another logging.folder / logging.write_tag"
                )
        self.load(start.path, start=start)
        self.started_from = start

    # -- training ----------------------------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor | list[ClipGroup], mask_sets: list[MaskSet] | None = None) -> JEPAOutput:
        """One update: schedules -> autocast forward -> backward -> clip -> AdamW -> EMA.

        ``x`` with its ``mask_sets`` (the masks of one clip length), or the batch's :class:`ClipGroup` list
        (:func:`jepa.training.builders.clip_groups`)."""
        s, i = self.schedules, self.step
        set_hyperparams_at(self.optimizer, s, i)
        if isinstance(x, torch.Tensor):
            if mask_sets is None:
                raise TypeError("train_step(x, mask_sets): a batch tensor needs its mask sets")
            x = [ClipGroup(x, mask_sets, mask_token_indices(self.cfg, 0, len(mask_sets)))]
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            out = self.forward_model(x, step=i)
        loss = out.loss
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        # As in the official V-JEPA code: clipping starts after the warmup epochs, per network.
        if i >= s.warmup_steps:
            clip_per_module([self.model.encoder, self.model.predictor], self.cfg.optimization.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.update_target(s.momentum_at(i))
        self.nonfinite |= ~torch.isfinite(loss.detach())
        self.step += 1
        sigreg = None if out.loss_sigreg is None else out.loss_sigreg.detach()
        rollout = None if out.loss_rollout is None else out.loss_rollout.detach()
        context = None if out.loss_context is None else out.loss_context.detach()
        return JEPAOutput(loss.detach(), out.loss_pred.detach(), out.loss_reg.detach(), out.target_pooled, sigreg,
                          out.position_share, rollout, loss_context=context)  # fmt: skip

    def _batches(self, max_steps: int) -> Iterator[Any]:
        """The batches of the steps from :attr:`step` to ``max_steps`` (the caller advances the step; one per
        step: not for an ``accumulate`` mix's two)."""
        for parts in self._steps(max_steps):
            yield parts[0][0]

    def modality_at(self, step: int) -> Modality:
        """What global step ``step`` trains on here: with an interleaved image + video run, images iff
        :func:`jepa.config.pretrain.is_image_step`; else this rank's modality (:attr:`rank_modality`)."""
        if self.image_mix == "interleave":
            assert self.cfg.img_data is not None
            return "image" if is_image_step(step, self.cfg.img_data.rank_ratio) else "video"
        return self.rank_modality

    def _step_modalities(self, step: int) -> dict[Modality, float | None]:
        """The modalities global step ``step`` reads here, with their loss weights: an ``accumulate`` mix's
        (:meth:`PretrainConfig.modality_weights`), else one modality, unweighted."""
        if self.image_mix == "accumulate":
            return cast(dict[Modality, float | None], self.cfg.modality_weights())
        return {self.modality_at(step): None}

    def _step_groups(self, parts: list[tuple[Any, Modality, float | None]]) -> list[ClipGroup]:
        """A step's batches as the JEPA module takes them; a weighted part's share is split evenly over its clip
        lengths (within a modality every (length, mask set) pair counts the same, as in a one-modality run)."""
        groups: list[ClipGroup] = []
        for batch, modality, weight in parts:
            part = clip_groups(self.cfg, batch, self.device, modality)
            groups += part if weight is None else [replace(g, weight=weight / len(part)) for g in part]
        return groups

    def _steps(self, max_steps: int) -> Iterator[list[tuple[Any, Modality, float | None]]]:
        """The ``(batch, modality, loss weight)`` parts of each step from :attr:`step` to ``max_steps`` (one, or an
        ``accumulate`` mix's image and video batches). Each stream starts at the batch the steps before
        :attr:`step` used of it (interleaved: ``floor(step * rank_ratio)`` image batches, the rest video;
        accumulated: ``step`` of each stream read), so a resumed run reads what the uninterrupted one does."""
        if self.image_mix == "interleave":
            assert self.cfg.img_data is not None
            images = image_steps_before(self.step, self.cfg.img_data.rank_ratio)
            position: dict[Modality, int] = {"image": images, "video": self.step - images}
        else:
            position = {m: self.step for m in self._step_modalities(self.step)}
        streams = {m: self.streams[m].batches(k) for m, k in position.items()}
        while self.step < max_steps:
            yield [(next(streams[m]), m, w) for m, w in self._step_modalities(self.step).items()]

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
        csv = self._open_run(resume, overwrite)
        probe_csv = self._open_probe_log()
        if self.step == 0:
            self._online_probe(0, probe_csv)
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
            len(self.dataset), self.device, str(self.dtype).removeprefix("torch."),
        )  # fmt: skip
        for parts in self._steps(end):
            groups = self._step_groups(parts)
            result = self.train_step(groups)
            steps_since += 1
            at_epoch_end = self.step % self.ipe == 0
            stopped = stop_flag.poll() and self.step < end
            if not (self.step % log_freq == 0 or at_epoch_end or self.step == end or stopped):
                continue
            last_loss, t_last = self._log_step(result, groups, end, t_last, steps_since, csv)
            steps_since = 0
            if at_epoch_end or self.step == end or stopped:
                self.save(last_loss)
                self._report_bad_samples(bad_log)
            if at_epoch_end:
                self._online_probe(self.step // self.ipe, probe_csv)
            if stopped:
                logger.warning("stop requested: saved %s at step %d of %d", self.latest_path, self.step, end)
                break
        stop_flag.close()
        barrier()  # no rank leaves before rank 0 has written the last checkpoint
        elapsed = time.perf_counter() - t_start
        return {
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

    def _open_run(self, resume: bool, overwrite: bool) -> CSVLogger | None:
        """Prepare the folder, resume when asked, refuse to start over another run, write the config; the CSV log
        (rank 0) continues at the resumed step."""
        fresh = self.step == 0
        self.files.prepare()  # removes temporary files left by a run killed while writing a checkpoint (logged)
        self.maybe_resume(latest_first=resume, overwrite=overwrite)
        if fresh and self.step == 0 and not overwrite:
            check_run_folder(self.cfg, resume=False, overwrite=False)
        if self.is_main:
            self._write_params(resumed=self.step > 0 and fresh)
        columns = CSV_COLUMNS_WORLD_MODEL if self.cfg.is_world_model else CSV_COLUMNS_VJEPA21 if \
            self.cfg.is_vjepa21 else CSV_COLUMNS  # fmt: skip
        return self.files.csv_log(f"{self.tag}_r0.csv", columns, column="step", value=self.step)

    def _log_step(
        self, result: JEPAOutput, groups: list[ClipGroup], end: int, since: float, steps: int, csv: CSVLogger | None
    ) -> tuple[float, float]:
        """Log the last ``steps`` steps (timed from ``since``) to the CSV and the console, after checking that no
        rank's loss went non-finite; returns the loss and the time now. Token counts are those of the first mask
        set of the batch's first clip length."""
        batch = sum(g.x.shape[0] for g in groups)
        if groups[0].mask_sets:
            masks_enc, masks_pred = groups[0].mask_sets[0]
            ctx_tokens, tgt_tokens = masks_enc[0].shape[1], masks_pred[0].shape[1]
        else:  # app vjepa_droid: whole frames, no masks
            ctx_tokens = tgt_tokens = 0

        metrics = self._synced_metrics(result)
        self._check_finite(metrics["nonfinite"])
        now = time.perf_counter()
        step_ms = 1000 * (now - since) / steps
        stats = collapse_stats(metrics["pooled"])
        s, i = self.schedules, self.step - 1
        row = dict(
            epoch=i // self.ipe + 1, step=self.step, loss=metrics["loss"], loss_pred=metrics["loss_pred"],
            loss_reg=metrics["loss_reg"], lr=s.lr_at(i), wd=s.wd_at(i), momentum=s.momentum_at(i),
            ctx_tokens=ctx_tokens, tgt_tokens=tgt_tokens, step_ms=step_ms,
            samples_per_s=1000 * batch * self.world_size / step_ms, mem_mb=_memory_mb(self.device), **stats,
            pos_share=metrics["pos_share"], loss_sigreg=metrics["loss_sigreg"],
        )  # fmt: skip
        if self.cfg.is_world_model:
            row["loss_rollout"] = metrics["loss_rollout"]
        if self.cfg.is_vjepa21:
            row["loss_context"] = metrics["loss_context"]
            row["modality"] = "+".join(self._step_modalities(self.step - 1)) if self.image_mix != "ranks" else "ranks"
        if csv is not None:
            csv.log(**row)
        if self.cfg.is_world_model:
            logger.info("ep %d step %d/%d loss %.4f (teacher forcing %.4f, rollout %.4f) lr %.2e wd %.3f "
                        "%.0f ms/step %.1f samples/s", row["epoch"], self.step, end, row["loss"], row["loss_pred"],
                        row["loss_rollout"], row["lr"], row["wd"], step_ms, row["samples_per_s"])  # fmt: skip
            return metrics["loss"], now
        self._warn_dimensional_collapse(stats)
        logger.info(
            "ep %d step %d/%d loss %.4f lr %.2e wd %.3f m %.4f ctx %d tgt %dx%d std %.3f rank %.1f (%.0f%%) "
            "sigreg %.1f pos %.2f %.0f ms/step %.1f samples/s",
            row["epoch"], self.step, end, row["loss"], row["lr"], row["wd"], row["momentum"], row["ctx_tokens"],
            row["tgt_tokens"], sum(len(p) for g in groups for _, p in g.mask_sets), stats["feat_std"],
            stats["eff_rank"], 100 * stats["eff_rank_rel"], stats["sigreg"], row["pos_share"], step_ms,
            row["samples_per_s"],
        )  # fmt: skip
        video = [g for g in groups if g.modality == "video"]  # (an accumulated step's images are not a length)
        if len(video) > 1 and self.cfg.is_video:  # (app lejepa's groups are its view kinds, not clip lengths)
            logger.info("clips of the last batch per length: %s",
                        ", ".join(f"{g.x.shape[2]} frames: {g.x.shape[0]}" for g in video))  # fmt: skip
        return metrics["loss"], now

    def _open_probe_log(self) -> CSVLogger | None:
        if self.online_probe is None:
            return None
        return self.files.csv_log(probe_log_path(self.folder, self.tag).name, OnlineProbe.COLUMNS, column="epoch",
                                  value=self.step // self.ipe)  # fmt: skip

    def _online_probe(self, epoch: int, csv: CSVLogger | None) -> None:
        """``meta.eval_freq``: the k-NN accuracy of the target encoder on the held-out split (rank 0; sharded, every
        rank computes it, since the encoder's forward gathers the shards)."""
        probe = self.online_probe
        if probe is None or not probe.due(epoch, self.cfg.optimization.epochs):
            return
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            scores = probe.score(self.model.target_encoder)
        logger.info("online probe, epoch %d (step %d): k-NN accuracy %.4f on %d held-out samples (%d train)",
                    epoch, self.step, scores["knn_acc"], scores["val_samples"], scores["train_samples"])  # fmt: skip
        if csv is not None:
            csv.log(epoch=epoch, step=self.step, **scores)

    def _warn_dimensional_collapse(self, stats: dict[str, float]) -> None:
        """Once per run each: the pooled target features span less than ``meta.collapse_warn_rank`` of the width (what
        a healthy ``feat_std`` hides; the issue-14 runs sat at 4% while their probes learnt nothing), and their
        effective rank fell below ``meta.collapse_warn_drop`` of its first logged value (a collapse training causes,
        which the first warning cannot tell from features that were low-rank at random init)."""
        meta = self.cfg.meta
        advice = ("a larger loss.lejepa_lambda" if self.cfg.app == "lejepa"
                  else "loss.sigreg_weight > 0 (SIGReg) or a longer warmup / smaller lr")  # fmt: skip
        fraction = meta.collapse_warn_rank
        if not self._warned_rank and fraction > 0 and stats["eff_rank_rel"] < fraction:
            self._warned_rank = True
            logger.warning(
                "step %d: dimensional collapse: the effective rank of the pooled target features is %.1f, %.1f%% of "
                "the width (below meta.collapse_warn_rank = %.0f%%; batch of %d); feat_std %.3f. Consider %s",
                self.step, stats["eff_rank"], 100 * stats["eff_rank_rel"], 100 * fraction,
                self.global_batch, stats["feat_std"], advice,
            )  # fmt: skip
        if self._first_rank is None:
            self._first_rank = (self.step, stats["eff_rank"])
            return
        first_step, first = self._first_rank
        drop = meta.collapse_warn_drop
        if self._warned_drop or drop <= 0 or stats["eff_rank"] >= drop * first:
            return
        self._warned_drop = True
        logger.warning(
            "step %d: dimensional collapse during training: the effective rank of the pooled target features fell "
            "to %.1f from %.1f at step %d (below meta.collapse_warn_drop = %.0f%% of it); feat_std %.3f. Consider %s",
            self.step, stats["eff_rank"], first, first_step, 100 * drop, stats["feat_std"], advice,
        )  # fmt: skip

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
        logged = [s.dataset for s in self.streams.values() if hasattr(s.dataset, "bad_sample_log")]
        if not logged:
            return None
        path = self.folder / f"{self.tag}_bad_samples_r{rank}.tsv"
        for dataset in logged:  # images and video of app vjepa_2_1 in one record
            dataset.bad_sample_log = path
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
        zero = result.loss.new_zeros(())
        sigreg = zero if result.loss_sigreg is None else result.loss_sigreg
        share = zero if result.position_share is None else result.position_share
        rollout = zero if result.loss_rollout is None else result.loss_rollout
        context = zero if result.loss_context is None else result.loss_context
        scalars = (result.loss, result.loss_pred, result.loss_reg, sigreg, share, rollout, context)
        names = ("loss", "loss_pred", "loss_reg", "loss_sigreg", "pos_share", "loss_rollout", "loss_context")
        losses = torch.stack([t.double() for t in scalars])
        if self.world_size == 1:
            # One host sync for the scalars, not one each.
            return dict(zip(names, losses.tolist(), strict=True), nonfinite=bool(self.nonfinite),
                        pooled=result.target_pooled)  # fmt: skip
        packed = torch.cat([losses, self.nonfinite.double().reshape(1)])
        *sums, nonfinite = all_reduce_sum(packed).tolist()
        n = self.world_size
        return dict({k: v / n for k, v in zip(names, sums, strict=True)}, nonfinite=nonfinite > 0,
                    pooled=all_gather_cat(result.target_pooled))  # fmt: skip

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
