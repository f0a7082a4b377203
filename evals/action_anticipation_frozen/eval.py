"""Frozen action anticipation (EPIC-KITCHENS-100, the built-in anticipation digits): attentive probes with three
heads (verb, noun, action) on the tokens of a frozen encoder and the frozen predictor's future frames.

Per training step (as the official eval): the observed clips and their anticipation times go through the frozen
:class:`evals.action_anticipation_frozen.model.AnticipativeWrapper` (no gradients); every probe (one per entry of
``optimization.multihead_kwargs``) predicts verb, noun and action; its loss is the sum of the three heads' losses
(sigmoid focal loss or cross-entropy, :mod:`evals.action_anticipation_frozen.probe`); AdamW with one parameter group
(weight decay on every parameter, as the official anticipation optimiser) under the warmup-cosine LR and cosine
weight-decay schedules of :class:`jepa.training.schedules.Schedules`; no gradient clipping unless
``optimization.clip_grad`` asks for it.

Validation: class-mean recall@5 of each head over the classes present in the validation split
(:mod:`evals.action_anticipation_frozen.metrics`), from counts summed over the whole split and all ranks; the best
probe is the one with the highest action recall@5. (The official logs report, per metric, the maximum over probes,
which may mix probes; ``results.json`` gives that too, under ``max_over_probes``.)

Outputs in the eval's folder: ``<write_tag>-latest.pth.tar`` (every probe under ``classifiers``, their optimizers,
the epoch, the class lists; loadable with ``torch.load(weights_only=True)``), ``results.csv`` (one row per probe per
epoch) and ``results.json``. The probe file and results record the encoder and the classes; a run of another
encoder, or of other classes, into the same folder is refused.
"""

import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from evals.action_anticipation_frozen.data import make_datasets, make_loaders
from evals.action_anticipation_frozen.metrics import ClassMeanRecall
from evals.action_anticipation_frozen.model import AnticipativeWrapper, build_anticipation_model
from evals.action_anticipation_frozen.probe import HEADS, AnticipationClassifier, ProbeSet, head_loss
from evals.probing import (
    RANDOM_INIT,
    Batches,
    ValFeatureCache,
    describe_val_samples,
    encoder_of_results,
    same_encoder,
)
from jepa.checkpoint import CheckpointError, atomic_write, read_checkpoint
from jepa.config.anticipation import AnticipationConfig
from jepa.config.strict import ConfigError, to_dict
from jepa.data import SampleLoadError, SkippedSample, split_skipped
from jepa.runtime.distributed import all_gather_objects, all_reduce_sum
from jepa.runtime.precision import resolve_dtype
from jepa.training.ddp import wrap_ddp
from jepa.training.optim import clip_per_module, set_hyperparams_at
from jepa.training.run import RunFolder, load_modules
from jepa.training.schedules import Schedules
from jepa.video.epickitchens import ActionClasses

logger = logging.getLogger(__name__)

K = 5  # recall@5
METRICS = tuple(f"{h}_recall{K}" for h in HEADS)  # verb_recall5, noun_recall5, action_recall5
CSV_COLUMNS = ["epoch", "probe", "lr", "weight_decay", "train_loss", "train_action_recall5", "val_loss",
               "val_verb_recall5", "val_noun_recall5", "val_action_recall5"]  # fmt: skip


class SplitScores:
    """Top-5 and top-1 counts of each head and the loss sum, per probe, over a split."""

    def __init__(self, num_probes: int, sizes: tuple[int, int, int], device: torch.device) -> None:
        self.recalls = [ClassMeanRecall(num_probes, n, device, k=K) for n in sizes]
        self.top1 = [ClassMeanRecall(num_probes, n, device, k=1) for n in sizes]
        self.loss = torch.zeros(num_probes, dtype=torch.float64, device=device)
        self.batches = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, logits: tuple[Tensor, ...], labels: Tensor, losses: Tensor) -> None:
        """``logits``: per head ``[K, B, C]``; ``labels`` ``[B, 3]``; ``losses`` ``[K]`` (this batch's)."""
        for h, (recall, top1) in enumerate(zip(self.recalls, self.top1, strict=True)):
            recall.update(logits[h].detach(), labels[:, h])
            top1.update(logits[h].detach(), labels[:, h])
        self.loss += losses.detach().double()
        self.batches += 1

    def reduce(self) -> "SplitScores":
        for counts in (*self.recalls, *self.top1):
            counts.reduce()
        all_reduce_sum(self.loss)
        all_reduce_sum(self.batches)
        return self

    def results(self) -> list[dict[str, float]]:
        """Per probe: class-mean recall@5, top-5 and top-1 accuracy of each head (percent; with fewer than 5
        classes recall@5 is 100), the mean loss per batch, the samples scored."""
        recall = [r.recall() for r in self.recalls]
        top5 = [r.accuracy() for r in self.recalls]
        top1 = [r.accuracy() for r in self.top1]
        loss = self.loss / self.batches.clamp(min=1)
        out = []
        for k in range(len(loss)):
            row = {f"{h}_recall{K}": float(recall[i][k]) for i, h in enumerate(HEADS)}
            row.update({f"{h}_top{K}": float(top5[i][k]) for i, h in enumerate(HEADS)})
            row.update({f"{h}_top1": float(top1[i][k]) for i, h in enumerate(HEADS)})
            out.append({**row, "loss": float(loss[k]), "samples": self.recalls[0].samples})
        return out


class AnticipationTrainer:
    """Trains the anticipation probes on a frozen :class:`AnticipativeWrapper`, with checkpoints, CSV/JSON results,
    resume and ``val_only``.

    Args:
        cfg: the eval config.
        model: the frozen encoder + predictor (on ``device``).
        train_loader, val_loader: batches ``(clips, labels [B, 3], anticipation times [B], ...)``; ``train_loader``
            may be None with ``val_only``.
        classes: the class indices the labels use (recorded in the checkpoint and checked on load).
        device, rank, world_size: this process (probes are wrapped in DDP when ``world_size > 1``).
        encoder_source: the checkpoint of the encoder and predictor (None: random init).
    """

    def __init__(
        self,
        cfg: AnticipationConfig,
        model: AnticipativeWrapper,
        train_loader: Batches | None,
        val_loader: Batches,
        classes: ActionClasses,
        *,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        encoder_source: str | None = None,
        log_freq: int = 10,
    ) -> None:
        if train_loader is None and not cfg.val_only:
            raise ValueError("a training loader is required unless val_only")
        self.cfg, self.model, self.classes = cfg, model, classes
        self.train_loader, self.val_loader = train_loader, val_loader
        self.device, self.rank, self.world_size = device, rank, world_size
        self.encoder_source, self.log_freq = encoder_source, log_freq
        self.files = RunFolder(cfg.output_folder, cfg.pretrain.write_tag, writer=rank == 0)
        self.folder = self.files.folder
        opt = cfg.optimization
        self.hparams = opt.probes
        self.ipe = 1 if train_loader is None else len(train_loader)  # val_only: nominal, the schedules stay defined
        if self.ipe == 0:
            raise ValueError("the training split yields no batch on this rank")
        num_verbs, num_nouns, num_actions = classes.sizes
        self.bank = ProbeSet(
            AnticipationClassifier(
                embed_dim=model.embed_dim, num_heads=cfg.classifier.num_heads or model.num_heads,
                depth=cfg.classifier.num_probe_blocks, num_verbs=num_verbs, num_nouns=num_nouns,
                num_actions=num_actions, use_sdpa=cfg.pretrain.use_sdpa,
                blocks_on_queries=cfg.classifier.blocks_on_queries,
            )
            for _ in self.hparams
        ).to(device)  # fmt: skip
        self.optimizers = [torch.optim.AdamW(p.parameters(), betas=opt.betas) for p in self.bank.probes]
        self.schedules = [
            Schedules(
                ipe=self.ipe, epochs=opt.num_epochs, ipe_scale=1.0, warmup_epochs=h.warmup,
                start_lr=h.lr if h.start_lr is None else h.start_lr, lr=h.lr, final_lr=h.final_lr,
                weight_decay=h.weight_decay,
                final_weight_decay=h.weight_decay if h.final_weight_decay is None else h.final_weight_decay,
                ema=(1.0, 1.0),
            )
            for h in self.hparams
        ]  # fmt: skip
        self.probes = wrap_ddp(self.bank, device, world_size, static_graph=True)
        requested = "auto" if opt.use_bfloat16 == "auto" else ("bfloat16" if opt.use_bfloat16 else "float32")
        self.dtype = resolve_dtype(requested, device, "optimization.use_bfloat16")
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.skipped_files: dict[str, str] = {}
        self.val_cache = ValFeatureCache(opt.cache_val_features, device)

    @property
    def encoder_id(self) -> str:
        return self.encoder_source or RANDOM_INIT

    # -- checkpoints -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The official layout (``classifiers``, ``opt``, ``scaler``, ``epoch``, ``batch_size``, ``world_size``)
        plus the best probe, the history, the config, the encoder and the classes; only tensors and plain data."""
        return {
            "classifiers": [p.state_dict() for p in self.bank.probes],
            "opt": [o.state_dict() for o in self.optimizers],
            "scaler": None,
            "epoch": self.epoch,
            "batch_size": self.cfg.optimization.batch_size,
            "world_size": self.world_size,
            "best_probe": self.best_probe(),
            "history": self.history,
            "probe_hparams": [to_dict(h) for h in self.hparams],
            "config": to_dict(self.cfg),
            "encoder_checkpoint": self.encoder_id,
            "classes": self.classes.to_dict(),
            "skipped_files": self._skipped_list(),
        }

    def _skipped_list(self) -> list[dict[str, str]]:
        return [{"path": path, "reason": reason} for path, reason in sorted(self.skipped_files.items())]

    def _refuse_other_run(self, file: Path, recorded: dict[str, Any], action: str) -> None:
        """Refuse probes or results of another encoder or of other classes (a file without these records, e.g.
        an official probe file, is taken as it is)."""
        theirs = recorded.get("encoder_checkpoint")
        if theirs is not None and not same_encoder(theirs or RANDOM_INIT, self.encoder_id):
            raise ConfigError(
                f"{file} was produced with encoder {theirs}, but this run evaluates encoder {self.encoder_id}: "
                f"refusing to {action}. Give this eval its own tag, or another folder (here {self.folder})."
            )
        classes = recorded.get("classes")
        if classes is not None and classes != self.classes.to_dict():
            raise ConfigError(f"{file} holds probes of other verb/noun/action classes than this run's training CSV: "
                              f"refusing to {action}")  # fmt: skip

    def check_output_folder(self, resume: bool) -> None:
        if self.files.latest.is_file():
            self._refuse_other_run(self.files.latest, read_checkpoint(self.files.latest),
                                   "resume from it" if resume else "overwrite it")  # fmt: skip
        results = self.folder / "results.json"
        if results.is_file():
            encoder = encoder_of_results(results)
            self._refuse_other_run(results, {} if encoder is None else {"encoder_checkpoint": encoder}, "overwrite it")

    def _probe_states(self, ckpt: dict[str, Any], path: Path) -> list[dict[str, Tensor]]:
        if "classifiers" not in ckpt:
            raise CheckpointError(f"{path}: no 'classifiers' in an anticipation probe checkpoint; keys {sorted(ckpt)}")
        states = list(ckpt["classifiers"])
        if len(states) != len(self.bank.probes):
            raise CheckpointError(f"{path} holds {len(states)} probe(s) but the config has {len(self.bank.probes)} "
                                  "(optimization.multihead_kwargs)")  # fmt: skip
        if "classes" not in ckpt:
            logger.warning("%s records no class lists (an official file): its heads are taken to follow the official "
                           "class order of this run's training CSV", path)  # fmt: skip
        names = [f"classifier {i}" for i in range(len(states))]
        load_modules(dict(zip(names, states, strict=True)), dict(zip(names, self.bank.probes, strict=True)), path)
        return states

    def load(self, path: Path, *, weights_only: bool = False) -> dict[str, Any]:
        """Load the probes of ``path`` (ours or an official ``classifiers`` file), strictly; unless
        ``weights_only``, also their optimizers, the epoch and the history (a resume)."""
        ckpt = read_checkpoint(path)
        self._refuse_other_run(path, ckpt, "evaluate it" if weights_only else "resume from it")
        self._probe_states(ckpt, path)
        if weights_only:
            return ckpt
        opts = ckpt.get("opt") or []
        for i, optimizer in enumerate(self.optimizers):
            if i < len(opts) and opts[i] is not None:
                optimizer.load_state_dict(opts[i])
            else:
                logger.warning("%s: no optimizer state for probe %d; its AdamW moments start from zero", path, i)
        self.epoch = int(ckpt.get("epoch", 0))
        self.history = list(ckpt.get("history", []))
        self.skipped_files = {s["path"]: s["reason"] for s in ckpt.get("skipped_files", [])}
        logger.info("resumed probes from %s after epoch %d", path, self.epoch)
        return ckpt

    # -- steps -------------------------------------------------------------------------------------------------
    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def _encode(self, batch: Any) -> tuple[Tensor, Tensor]:
        """The frozen model's tokens ``[B, N, D]`` and the labels ``[B, 3]`` of a batch."""
        clips, labels, times = batch[0], batch[1], batch[2]
        with torch.no_grad(), self._autocast():
            tokens = self.model(clips.to(self.device, non_blocking=True), times.to(self.device))
        return tokens, labels.to(self.device)

    def _losses(self, logits: tuple[Tensor, ...], labels: Tensor) -> Tensor:
        """Per probe, the sum of its three heads' losses: ``[K]``."""
        focal = self.cfg.optimization.use_focal_loss
        return torch.stack([head_loss(logits[h], labels[:, h], focal) for h in range(len(HEADS))]).sum(dim=0)

    def train_step(self, batch: Any) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        """One update of every probe at global step :attr:`step`; returns the logits (detached), labels, losses."""
        for optimizer, schedules in zip(self.optimizers, self.schedules, strict=True):
            set_hyperparams_at(optimizer, schedules, self.step)
        tokens, labels = self._encode(batch)
        with self._autocast():
            logits = self.probes(tokens)
        losses = self._losses(logits, labels)
        losses.sum().backward()
        clip_per_module(self.bank.probes, self.cfg.optimization.clip_grad)
        for optimizer in self.optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return tuple(t.detach().float() for t in logits), labels, losses.detach()

    def train_epoch(self) -> list[dict[str, float]]:
        assert self.train_loader is not None
        self.probes.train()
        set_epoch = getattr(getattr(self.train_loader, "sampler", None), "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.epoch)
        scores = SplitScores(len(self.optimizers), self.classes.sizes, self.device)
        start, self.step = time.perf_counter(), self.epoch * self.ipe
        for itr, batch in enumerate(self.train_loader):
            logits, labels, losses = self.train_step(batch)
            scores.update(logits, labels, losses)
            self._progress("train", itr + 1, self.ipe, start, scores)
        return scores.reduce().results()

    def _val_features(self, loader: Batches, cache: ValFeatureCache | None
                      ) -> Iterator[tuple[tuple[Tensor, Tensor] | None, list[SkippedSample]]]:  # fmt: skip
        if cache is not None and cache.complete:
            yield from cache.batches
            return
        for batch in loader:
            batch, bad = split_skipped(batch)
            features = None if batch is None else self._encode(batch)
            if cache is not None:
                cache.add(features, bad, len(loader))
            yield features, bad
        if cache is not None:
            cache.finish()

    @torch.no_grad()
    def evaluate(self) -> list[dict[str, float]]:
        """Recall@5 / top-5 / loss of every probe over the readable validation clips (all ranks together); each
        result also gives ``samples`` (scored) and ``unreadable`` (skipped clips over all ranks, added to
        :attr:`skipped_files`). :class:`SampleLoadError` when no clip could be scored."""
        self.probes.eval()
        scores = SplitScores(len(self.optimizers), self.classes.sizes, self.device)
        skipped: dict[str, str] = {}
        start, total = time.perf_counter(), len(self.val_loader)
        for itr, (features, bad) in enumerate(self._val_features(self.val_loader, self.val_cache)):
            for sample in bad:
                skipped.setdefault(sample.path, sample.reason)
            if features is not None:
                tokens, labels = features
                with self._autocast():
                    logits = self.bank(tokens)
                logits = tuple(t.float() for t in logits)
                scores.update(logits, labels, self._losses(logits, labels))
            self._progress("val", itr + 1, total, start, scores)
        scores.reduce()
        unreadable: dict[str, str] = {}
        for part in all_gather_objects(skipped):  # on every rank before anyone raises
            for path, reason in part.items():
                unreadable.setdefault(path, reason)
        if scores.recalls[0].samples == 0:
            first = "; ".join(f"{p}: {r}" for p, r in list(unreadable.items())[:5])
            raise SampleLoadError(f"no validation clip could be scored: {len(unreadable)} are unreadable"
                                  + (f" (first: {first})" if first else ""))  # fmt: skip
        for path, reason in unreadable.items():
            self.skipped_files.setdefault(path, reason)
        if unreadable and self.rank == 0:
            first = "; ".join(f"{p}: {r}" for p, r in list(unreadable.items())[:3])
            logger.warning("validation: %s; first: %s", describe_val_samples(scores.recalls[0].samples,
                           len(unreadable)), first)  # fmt: skip
        return [{**r, "unreadable": len(unreadable)} for r in scores.results()]

    def _progress(self, split: str, done: int, total: int, start: float, scores: SplitScores) -> None:
        if self.rank != 0 or (done % self.log_freq and done != total):
            return
        rate = done / max(time.perf_counter() - start, 1e-9)
        eta = (total - done) / rate if total else math.nan
        logger.info("epoch %d/%d %s [%d/%d] %.2f it/s, eta %.0f s, loss (probe 0) %.4f",
                    self.epoch + 1, self.cfg.optimization.num_epochs, split, done, total, rate, eta,
                    float(scores.loss[0] / scores.batches.clamp(min=1)))  # fmt: skip

    # -- runs --------------------------------------------------------------------------------------------------
    def best_probe(self) -> int:
        """The probe with the highest validation action recall@5 at the last evaluated epoch (0 before any)."""
        if not self.history:
            return 0
        val = self.history[-1]["val"]
        return max(range(len(val)), key=lambda k: val[k]["action_recall5"])

    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train (resuming when asked), evaluate after every epoch, write CSV/JSON; returns the summary. With
        ``val_only``: evaluate the saved probes once (:meth:`validate_only`)."""
        if self.cfg.val_only:
            return self.validate_only(self.cfg.find_probe_checkpoint())
        self.check_output_folder(resume=bool(resume or self.cfg.resume_checkpoint))
        self.files.prepare()
        path = self.files.resume_path(latest_first=resume, requested=bool(self.cfg.resume_checkpoint),
                                      requested_by="resume_checkpoint", log=logger)  # fmt: skip
        if path is not None:
            self.load(path)
        csv = self.files.csv_log("results.csv", CSV_COLUMNS, column="epoch", value=self.epoch)
        while self.epoch < self.cfg.optimization.num_epochs:
            train, val = self.train_epoch(), self.evaluate()
            last_step = (self.epoch + 1) * self.ipe - 1
            self.epoch += 1
            self.history.append({"epoch": self.epoch, "train": train, "val": val})
            if csv is not None:
                for k, (t, v) in enumerate(zip(train, val, strict=True)):
                    csv.log(
                        epoch=self.epoch, probe=k, lr=self.schedules[k].lr_at(last_step),
                        weight_decay=self.schedules[k].wd_at(last_step), train_loss=t["loss"],
                        train_action_recall5=t["action_recall5"], val_loss=v["loss"],
                        **{f"val_{m}": v[m] for m in METRICS},
                    )  # fmt: skip
            if self.rank == 0:
                logger.info("[epoch %d] %s", self.epoch, summary_line(self.summary()))
            self.files.save(self.state_dict())
            self.write_summary("results.json")
        if not self.history:
            self.history.append({"epoch": self.epoch, "train": [], "val": self.evaluate()})
        return self.write_summary("results.json")

    def validate_only(self, path: Path) -> dict[str, Any]:
        """Evaluate the probes of ``path`` once, without training; their file is left as it is and the results go
        to ``results_val_only.json`` (a training run's ``results.json`` in the folder is kept)."""
        ckpt = self.load(path, weights_only=True)
        self.files.prepare()
        self.epoch = int(ckpt.get("epoch", 0))
        self.history = [{"epoch": self.epoch, "train": [], "val": self.evaluate()}]
        summary = self.write_summary("results_val_only.json", val_only=True, probe_checkpoint=str(path))
        return summary

    def summary(self) -> dict[str, Any]:
        best = self.best_probe()
        last = self.history[-1]["val"] if self.history else None
        probes = []
        for k, h in enumerate(self.hparams):
            row: dict[str, Any] = {"probe": k, **to_dict(h)}
            if last is not None:
                row.update({f"val_{m}": last[k][m] for m in (*METRICS, "loss")})
            probes.append(row)
        return {
            "eval_name": self.cfg.eval_name,
            "tag": self.cfg.tag,
            "encoder_checkpoint": self.encoder_source,
            "random_init_encoder": self.encoder_source is None,
            "anticipation_anchor": self.cfg.data.anticipation_anchor,
            "anticipation_time_sec": list(self.cfg.data.anticipation_time_sec),
            "no_predictor": self.cfg.wrapper.no_predictor,
            "epochs": self.epoch,
            "world_size": self.world_size,
            "classes": dict(zip(("verbs", "nouns", "actions"), self.classes.sizes, strict=True)),
            "val_samples": last[best]["samples"] if last else None,
            "val_unreadable": last[best]["unreadable"] if last else None,
            "skipped_files": self._skipped_list(),
            "best_probe": best,
            **{m: (last[best][m] if last else None) for m in METRICS},
            **{f"{h}_{m}": (last[best][f"{h}_{m}"] if last else None) for m in (f"top{K}", "top1") for h in HEADS},
            "max_over_probes": {m: max(r[m] for r in last) for m in METRICS} if last else None,
            "probes": probes,
            "config": to_dict(self.cfg),
        }

    def write_summary(self, name: str, **extra: Any) -> dict[str, Any]:
        summary = {**self.summary(), **extra}
        if self.rank == 0:
            out = self.folder / name
            atomic_write(out, lambda f: f.write(json.dumps(summary, indent=2) + "\n"), "w")
        return summary


def summary_line(summary: dict[str, Any]) -> str:
    """``verb / noun / action recall@5 (percent) of the best probe over N of M val clips``."""
    if summary.get("action_recall5") is None:
        return "not evaluated yet"
    recalls = " / ".join(f"{summary[m]:.2f}" for m in METRICS)
    return (f"recall@5 verb / noun / action {recalls}% (probe {summary['best_probe']} of {len(summary['probes'])}) "
            f"over {describe_val_samples(summary['val_samples'], summary['val_unreadable'])}")  # fmt: skip


def main(
    cfg: AnticipationConfig, device: torch.device | str = "cpu", *, rank: int = 0, world_size: int = 1,
    resume: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Run the eval end to end: frozen model, data, probes, training (or with ``val_only`` one evaluation of the
    saved probes), results; returns the summary (also written to ``results.json``)."""
    device = torch.device(device)
    if cfg.val_only:
        cfg.find_probe_checkpoint()  # a missing probe file fails here, before the model and the data are built
    torch.manual_seed(cfg.pretrain.seed)
    model, source = build_anticipation_model(cfg)
    model.to(device)
    train, val, classes = make_datasets(cfg)
    train_batches, val_batches = make_loaders(cfg, train, val, rank, world_size)
    if rank == 0:
        logger.info(
            "%s: encoder %s, predictor %s, %d verbs / %d nouns / %d actions, %d train and %d val clips, %d probe(s), "
            "anchor %s", cfg.eval_name, source or "random init", "off" if cfg.wrapper.no_predictor else "on",
            *classes.sizes, len(train), len(val), len(cfg.optimization.probes), cfg.data.anticipation_anchor,
        )  # fmt: skip
    trainer = AnticipationTrainer(
        cfg, model, None if cfg.val_only else train_batches, val_batches, classes, device=device, rank=rank,
        world_size=world_size, encoder_source=source,
    )  # fmt: skip
    return trainer.run(resume=resume)
