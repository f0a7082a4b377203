"""Frozen action anticipation (EPIC-KITCHENS-100, the built-in anticipation digits): attentive probes with three
heads (verb, noun, action) on the tokens of a frozen encoder and the frozen predictor's future frames.

The probes train in the engine of every frozen eval (:class:`evals.probing.ProbeTrainer`: checkpoints, resume,
``val_only``, the validation-feature cache, results); this module gives it the anticipation :class:`AnticipationTask`
and the inputs. Per training step (as the official eval): the observed clips and their anticipation times go through
the frozen :class:`evals.action_anticipation_frozen.model.AnticipativeWrapper` (no gradients); every probe (one per
entry of ``optimization.multihead_kwargs``) predicts verb, noun and action; its loss is the sum of the three heads'
losses (sigmoid focal loss or cross-entropy, :mod:`evals.action_anticipation_frozen.probe`); AdamW with one
parameter group (weight decay on every parameter, as the official anticipation optimiser) under the warmup-cosine LR
and cosine weight-decay schedules; no gradient clipping unless ``optimization.clip_grad`` asks for it.

Validation: class-mean recall@5 of each head over the classes present in the validation split
(:mod:`evals.action_anticipation_frozen.metrics`), from counts summed over the whole split and all ranks; the best
probe is the one with the highest action recall@5. (The official logs report, per metric, the maximum over probes,
which may mix probes; ``results.json`` gives that too, under ``max_over_probes``.) The probe file records the class
lists (``classes``); probes of other classes are refused.
"""

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from evals.action_anticipation_frozen.data import make_datasets, make_loaders
from evals.action_anticipation_frozen.metrics import ClassMeanRecall
from evals.action_anticipation_frozen.model import AnticipativeWrapper, build_anticipation_model
from evals.action_anticipation_frozen.probe import HEADS, AnticipationClassifier, head_loss
from evals.probing import Batches, Encode, Logits, ProbeTrainer, Scores
from jepa.config.anticipation import AnticipationConfig
from jepa.config.strict import ConfigError
from jepa.runtime.distributed import all_reduce_sum
from jepa.video.epickitchens import ActionClasses

logger = logging.getLogger(__name__)

K = 5  # recall@5
METRICS = tuple(f"{h}_recall{K}" for h in HEADS)  # verb_recall5, noun_recall5, action_recall5


def per_head(logits: Logits) -> tuple[Tensor, ...]:
    """Each head's logits ``[K, B, C]`` from the bank's ``[K, V, B, C]`` (one probe input per clip: ``V = 1``;
    several would be averaged)."""
    if not isinstance(logits, tuple) or len(logits) != len(HEADS):
        raise TypeError(f"expected the logits of the {len(HEADS)} heads {HEADS}")
    return tuple(h.mean(dim=1) for h in logits)


class AnticipationScores:
    """Top-5 and top-1 counts of each head per class and the loss sum, per probe, over a split."""

    def __init__(self, num_probes: int, sizes: tuple[int, int, int], device: torch.device) -> None:
        self.recalls = [ClassMeanRecall(num_probes, n, device, k=K) for n in sizes]
        self.top1 = [ClassMeanRecall(num_probes, n, device, k=1) for n in sizes]
        self.loss = torch.zeros(num_probes, dtype=torch.float64, device=device)
        self.batches = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, logits: Logits, labels: Tensor, losses: Tensor) -> None:
        """``logits``: per head ``[K, V, B, C]``; ``labels`` ``[B, 3]``; ``losses`` ``[K]`` (this batch's)."""
        for h, (head, recall, top1) in enumerate(zip(per_head(logits), self.recalls, self.top1, strict=True)):
            recall.update(head.detach(), labels[:, h])
            top1.update(head.detach(), labels[:, h])
        self.loss += losses.detach().double()
        self.batches += 1

    def reduce(self) -> "AnticipationScores":
        for counts in (*self.recalls, *self.top1):
            counts.reduce()
        all_reduce_sum(self.loss)
        all_reduce_sum(self.batches)
        return self

    @property
    def count(self) -> int:
        return self.recalls[0].samples

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
            out.append({**row, "loss": float(loss[k]), "samples": self.count})
        return out


class AnticipationTask:
    """The anticipation eval's :class:`evals.probing.ProbeTask`: verb, noun and action heads
    (:class:`AnticipationClassifier`), the sum of their losses, class-mean recall@5; the best probe has the highest
    action recall@5; AdamW with one group (weight decay on every parameter, as officially)."""

    metric: str = "action_recall5"
    columns: tuple[str, ...] = METRICS

    def __init__(self, cfg: AnticipationConfig, classes: ActionClasses) -> None:
        self.cfg = cfg
        self.classes = classes

    def make_probe(
        self, *, embed_dim: int, num_heads: int, depth: int, blocks_on_queries: bool, use_sdpa: bool
    ) -> nn.Module:
        num_verbs, num_nouns, num_actions = self.classes.sizes
        return AnticipationClassifier(
            embed_dim=embed_dim, num_heads=num_heads, depth=depth, num_verbs=num_verbs, num_nouns=num_nouns,
            num_actions=num_actions, use_sdpa=use_sdpa, blocks_on_queries=blocks_on_queries,
        )  # fmt: skip

    def make_optimizer(self, probe: nn.Module, betas: tuple[float, float]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(probe.parameters(), betas=betas)

    def mix(self, batch: Any, step: int) -> tuple[Any, Tensor]:
        return batch, batch[1]  # no mixing: the probes see the clips as they are

    def loss(self, logits: Logits, labels: Tensor) -> Tensor:
        """Per probe, the sum of its three heads' losses: ``[K]``."""
        focal = self.cfg.optimization.use_focal_loss
        heads = per_head(logits)
        return torch.stack([head_loss(heads[h], labels[:, h], focal) for h in range(len(HEADS))]).sum(dim=0)

    def val_loss(self, logits: Logits, labels: Tensor) -> Tensor:
        return self.loss(logits, labels)

    def scores(self, num_probes: int, device: torch.device) -> Scores:
        return AnticipationScores(num_probes, self.classes.sizes, device)

    def records(self) -> dict[str, Any]:
        return {"classes": self.classes.to_dict()}

    def check_records(self, file: Path, recorded: dict[str, Any], action: str) -> None:
        classes = recorded.get("classes")
        if classes is None:
            logger.warning("%s records no class lists (an official file): its heads are taken to follow the official "
                           "class order of this run's training CSV", file)  # fmt: skip
        elif classes != self.classes.to_dict():
            raise ConfigError(f"{file} holds probes of other verb/noun/action classes than this run's training CSV: "
                              f"refusing to {action}")  # fmt: skip

    def summary(self, last: list[dict[str, float]] | None, best: int) -> dict[str, Any]:
        d = self.cfg.data
        return {
            "anticipation_anchor": d.anticipation_anchor,
            "anticipation_time_sec": list(d.anticipation_time_sec),
            "no_predictor": self.cfg.wrapper.no_predictor,
            "classes": dict(zip(("verbs", "nouns", "actions"), self.classes.sizes, strict=True)),
            **{m: (last[best][m] if last else None) for m in METRICS},
            **{f"{h}_{m}": (last[best][f"{h}_{m}"] if last else None) for m in (f"top{K}", "top1") for h in HEADS},
            "max_over_probes": {m: max(r[m] for r in last) for m in METRICS} if last else None,
        }

    def describe(self, result: dict[str, float]) -> str:
        return "recall@5 verb / noun / action " + " / ".join(f"{result[m]:.2f}" for m in METRICS) + "%"


def make_encode(model: AnticipativeWrapper, device: torch.device) -> Encode:
    """The engine's ``encode``: a batch ``(clips, labels [B, 3], anticipation times [B], ...)`` -> the frozen
    model's tokens as one probe input per clip ``[1, B, N, D]`` and the labels."""

    def encode(batch: Any) -> tuple[Tensor, Tensor]:
        clips, labels, times = batch[0], batch[1], batch[2]
        return model(clips.to(device, non_blocking=True), times.to(device)).unsqueeze(0), labels

    return encode


def anticipation_trainer(
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
) -> ProbeTrainer:
    """The engine set up for anticipation probes on the frozen ``model`` (on ``device``), labels indexing
    ``classes``; ``train_loader`` may be None with ``val_only``."""
    return ProbeTrainer(
        cfg, make_encode(model, device), train_loader, val_loader, task=AnticipationTask(cfg, classes),
        embed_dim=model.encoder.embed_dim, num_heads=model.encoder.num_heads, device=device, rank=rank,
        world_size=world_size, encoder_source=encoder_source,
    )  # fmt: skip


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
    trainer = anticipation_trainer(
        cfg, model, None if cfg.val_only else train_batches, val_batches, classes, device=device, rank=rank,
        world_size=world_size, encoder_source=source,
    )  # fmt: skip
    return trainer.run(resume=resume)
