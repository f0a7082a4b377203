"""The probe-training engine of every frozen eval: probes trained on the features of a frozen model.

An eval supplies an *encode* function mapping a batch to ``(tokens, labels)`` with ``tokens`` of shape
``[V, B, N, D]``: ``V`` probe inputs per sample (spatial views, or views x segments when segments are probed one
by one), each of ``N`` tokens; and a *task* (:class:`ProbeTask`): which probe reads the tokens, its loss, what is
measured and which probe is the best. :class:`Classification` (top-1 / top-5 of the softmax averaged over the ``V``
inputs) is the task of the video and image classification evals; the anticipation eval's task (verb, noun and
action heads, class-mean recall@5) is :class:`evals.action_anticipation_frozen.eval.AnticipationTask`. Several
probes (``optimization.multihead_kwargs``) train at once on the same features, each with its own learning-rate and
weight-decay schedule; features are computed once per batch, without gradients.

Metrics are sums over the whole split, reduced across ranks, then divided (by the samples scored, or per class):
not a mean of per-batch means. Validation samples that cannot be read are not scored (nor replaced by another
sample, which would then count twice): the loader drops them from their batch (:class:`jepa.data.PartialBatch`)
and ``results.json`` lists them under ``skipped_files``. Outputs in the eval's folder: ``<write_tag>-latest.pth.tar``
(probes, optimizers, epoch; the official layout, loadable with ``torch.load(weights_only=True)``), ``results.csv``
(one row per probe per epoch) and ``results.json``. Both the checkpoint and the results record the encoder and
its blocks (``wrapper.out_layers``) they come from, and the checkpoint what the task records (the anticipation
classes); a run of another encoder, of other blocks or of other classes into the same folder is refused rather
than overwriting (or resuming from) them. ``val_only`` evaluates the saved probes once and writes
``results_val_only.json``, leaving the checkpoint and the training results as they are.
"""

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch import Tensor, nn

from evals.encoder import EncoderTokens
from evals.finetune import InputMixer, LinearHead, make_finetune_optimizer
from jepa.checkpoint import CheckpointError, atomic_write, read_checkpoint, strip_prefixes
from jepa.config.evals import EvalConfig, EvalConfigBase, ProbeOptimConfig
from jepa.config.strict import ConfigError, to_dict
from jepa.data import SampleLoadError, SkippedSample, split_skipped
from jepa.models import AttentiveClassifier
from jepa.runtime.distributed import all_gather_objects, all_reduce_sum
from jepa.runtime.precision import resolve_dtype
from jepa.training.ddp import wrap_ddp
from jepa.training.optim import clip_per_module, decays, make_adamw, set_hyperparams_at
from jepa.training.rng import restore_rng, rng_state
from jepa.training.run import RunFolder, load_modules
from jepa.training.schedules import Schedules

logger = logging.getLogger(__name__)

Encode = Callable[[Any], tuple[Tensor, Tensor]]
# A probe bank's output: logits [K, V, B, C] (K probes, V inputs per sample, B samples, C classes), or one such
# tensor per head of probes with several heads (the anticipation probe's verb, noun and action).
Logits = Tensor | tuple[Tensor, ...]
RANDOM_INIT = "random-init"  # the encoder of a run with pretrain.checkpoint null, as outputs record it
_CSV_HEAD = ["epoch", "probe", "lr", "weight_decay", "train_loss"]


class ValFeatureCache:
    """The frozen encoder's validation features, kept after the first evaluation and reused by the next ones.

    Validation inputs (clips, views, crops) are deterministic and the encoder is frozen, so its features are the
    same every epoch: kept, an N-epoch eval encodes the validation split once. ``policy`` ``"auto"`` keeps them when
    their estimated size (from the first batch) fits in a quarter of the available memory (host memory, or the
    GPU's free memory when they stay on it), ``True`` always, ``False`` never; the decision is logged once.
    """

    def __init__(self, policy: bool | str, device: torch.device) -> None:
        self.policy = policy
        self.device = device
        self.batches: list[tuple[tuple[Tensor, Tensor] | None, list[SkippedSample]]] = []
        self.enabled: bool | None = None if policy == "auto" else bool(policy)
        self.complete = False

    def add(self, features: tuple[Tensor, Tensor] | None, skipped: list[SkippedSample], num_batches: int) -> None:
        if self.enabled is None and features is not None:
            self.enabled = self._fits(features[0], num_batches)
        if self.enabled is not False:
            kept = None if features is None else (features[0].detach(), features[1])
            self.batches.append((kept, list(skipped)))

    def finish(self) -> None:
        if self.enabled:
            size = sum(f[0].nelement() * f[0].element_size() for f, _ in self.batches if f is not None)
            logger.info("validation features cached: %d batches, %.1f MB, reused by the next epochs",
                        len(self.batches), size / 2**20)  # fmt: skip
            self.complete = True
        else:
            self.batches = []

    def _fits(self, tokens: Tensor, num_batches: int) -> bool:
        need = tokens.nelement() * tokens.element_size() * num_batches
        if tokens.is_cuda:
            free = torch.cuda.mem_get_info(tokens.device)[0]
        else:
            try:
                free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):  # no such query (macOS, Windows): assume 4 GiB free
                free = 4 * 2**30
        fits = need <= free // 4
        logger.info("validation features: about %.1f MB; %s (cache_val_features: auto, %.1f MB free)",
                    need / 2**20, "caching them" if fits else "not caching them", free / 2**20)  # fmt: skip
        return fits


class Batches(Protocol):
    """What the probe trainer iterates over: a DataLoader, or any sized iterable of batches."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...


def describe_val_samples(scored: int, unreadable: int) -> str:
    """``"N of M val samples, K unreadable"``, pointing to the list in ``results.json`` when ``K > 0``."""
    text = f"{scored} of {scored + unreadable} val samples, {unreadable} unreadable"
    return f"{text} (listed in results.json)" if unreadable else text


def same_encoder(a: str, b: str) -> bool:
    """Whether two recorded encoders (checkpoint paths, or :data:`RANDOM_INIT`) are the same one."""
    if a == b:
        return True
    if RANDOM_INIT in (a, b):
        return False
    return Path(a).resolve() == Path(b).resolve()


def _read_json(path: Path) -> dict[str, Any]:
    """A results file's contents (empty when it holds no mapping)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} exists but cannot be read as JSON ({e}); move it away or set another tag") from e
    return data if isinstance(data, dict) else {}


def encoder_of_results(path: Path) -> str | None:
    """The encoder a ``results.json`` records (None when it records none)."""
    data = _read_json(path)
    if "encoder_checkpoint" not in data:
        return None
    return data["encoder_checkpoint"] or RANDOM_INIT


# -- metrics ----------------------------------------------------------------------------------------------------
def average_views(logits: Tensor) -> Tensor:
    """Class probabilities ``[..., B, C]`` from logits ``[..., V, B, C]``: the softmax averaged over the views."""
    return logits.float().softmax(dim=-1).mean(dim=-3)


def topk_correct(probs: Tensor, labels: Tensor, k: int) -> Tensor:
    """How many rows of ``probs`` ``[..., B, C]`` rank their label among the ``k`` highest (``k`` is capped at
    ``C``); returns ``[...]``. Ties are broken by ``torch.topk``."""
    k = min(k, probs.shape[-1])
    top = probs.topk(k, dim=-1).indices
    return (top == labels.unsqueeze(-1)).any(dim=-1).sum(dim=-1)


class SplitMetrics:
    """Sums of (top-1 hits, top-5 hits, loss, samples) per probe over a split; :meth:`reduce` adds up the ranks.
    The :class:`Scores` of :class:`Classification`."""

    def __init__(self, num_probes: int, device: torch.device) -> None:
        self.sums = torch.zeros(num_probes, 4, dtype=torch.float64, device=device)

    def update(self, probs: Tensor, labels: Tensor, loss_sums: Tensor) -> None:
        """``probs`` ``[K, B, C]``, ``labels`` ``[B]``, ``loss_sums`` ``[K]`` (loss summed over the batch)."""
        self.sums[:, 0] += topk_correct(probs, labels, 1)
        self.sums[:, 1] += topk_correct(probs, labels, 5)
        self.sums[:, 2] += loss_sums.detach().double()
        self.sums[:, 3] += labels.numel()

    def add(self, logits: Logits, labels: Tensor, losses: Tensor) -> None:
        """One batch of logits ``[K, V, B, C]``, scored by their softmax averaged over the views; ``losses`` ``[K]``
        are each probe's mean over the batch."""
        self.update(average_views(single_head(logits)), labels, losses * labels.numel())

    def reduce(self) -> "SplitMetrics":
        all_reduce_sum(self.sums)
        return self

    @property
    def count(self) -> int:
        return int(self.sums[0, 3])

    def results(self) -> list[dict[str, float]]:
        """Per probe: ``top1`` and ``top5`` in percent and the mean ``loss``, over every sample seen."""
        n = self.sums[:, 3].clamp(min=1)
        top1, top5, loss = (100.0 * self.sums[:, 0] / n), (100.0 * self.sums[:, 1] / n), self.sums[:, 2] / n
        return [
            {"top1": float(a), "top5": float(b), "loss": float(c), "samples": self.count}
            for a, b, c in zip(top1, top5, loss, strict=True)
        ]


def single_head(logits: Logits) -> Tensor:
    """The logits of a one-head probe bank (:class:`TypeError` for several heads)."""
    if isinstance(logits, tuple):
        raise TypeError(f"expected one head's logits [K, V, B, C], got {len(logits)} heads")
    return logits


def map_logits(fn: Callable[[Tensor], Tensor], logits: Logits) -> Logits:
    """``fn`` applied to the logits of each head."""
    return tuple(fn(t) for t in logits) if isinstance(logits, tuple) else fn(logits)


# -- tasks ------------------------------------------------------------------------------------------------------
class Scores(Protocol):
    """Per probe, sums over a split of what a task measures, batch by batch; :meth:`reduce` adds up the ranks."""

    def add(self, logits: Logits, labels: Tensor, losses: Tensor) -> None:
        """One batch: float32 logits, the labels, each probe's loss ``[K]`` (:meth:`ProbeTask.loss`)."""
        ...

    def reduce(self) -> "Scores": ...

    @property
    def count(self) -> int:
        """Samples scored (on this rank until :meth:`reduce`)."""
        ...

    def results(self) -> list[dict[str, float]]:
        """Per probe: every metric, ``loss`` and ``samples``."""
        ...


class ProbeTask(Protocol):
    """What the probes of one kind of eval are trained for; :class:`ProbeTrainer` does the rest.

    Attributes:
        metric: the result that picks the best probe (higher is better), also written for training in the CSV.
        columns: the validation results written per probe (CSV, ``results.json``), besides ``loss``.
    """

    metric: str
    columns: tuple[str, ...]

    def make_probe(
        self, *, embed_dim: int, num_heads: int, depth: int, blocks_on_queries: bool, use_sdpa: bool
    ) -> nn.Module:
        """A probe of tokens ``[X, N, D]`` (``D = embed_dim``) -> logits ``[X, C]`` (a tuple, one per head)."""
        ...

    def make_optimizer(self, probe: nn.Module, betas: tuple[float, float]) -> torch.optim.Optimizer: ...

    def mix(self, batch: Any, step: int) -> tuple[Any, Tensor]:
        """A training batch as the probes see it at global step ``step`` and the targets of :meth:`loss` (the
        batch's labels, or soft targets of mixed inputs)."""
        ...

    def loss(self, logits: Logits, labels: Tensor) -> Tensor:
        """Each probe's training loss ``[K]`` against the targets of :meth:`mix`; their sum is backpropagated."""
        ...

    def val_loss(self, logits: Logits, labels: Tensor) -> Tensor:
        """Each probe's loss ``[K]`` reported on validation."""
        ...

    def scores(self, num_probes: int, device: torch.device) -> Scores: ...

    def records(self) -> dict[str, Any]:
        """Plain data the probe checkpoint records besides the probes (what they mean: the classes)."""
        ...

    def check_records(self, file: Path, recorded: dict[str, Any], action: str) -> None:
        """Refuse (:class:`ConfigError`, saying it refuses to ``action``) a probe file whose records disagree."""
        ...

    def summary(self, last: list[dict[str, float]] | None, best: int) -> dict[str, Any]:
        """The headline of ``results.json``: the metrics of probe ``best`` in the last validation ``last``."""
        ...

    def describe(self, result: dict[str, float]) -> str:
        """One probe's validation results in a log line."""
        ...


class Classification:
    """Single-label classification into ``num_classes``: a probe per set of hyper-parameters (the
    :class:`AttentiveClassifier`, or with ``head="linear"`` a :class:`evals.finetune.LinearHead`), cross-entropy
    averaged over the views, top-1 / top-5 of the softmax averaged over them (:class:`SplitMetrics`); the probe of
    highest validation top-1 is the best; AdamW with the official two groups (:func:`make_probe_optimizer`).

    ``label_smoothing`` smooths the targets (timm's ``LabelSmoothingCrossEntropy``); ``mixer`` mixes the training
    inputs (timm's Mixup / CutMix, :class:`evals.finetune.InputMixer`), whose soft targets (smoothed as the mixer
    says) are scored with timm's ``SoftTargetCrossEntropy``. Training metrics count the unmixed labels.
    """

    metric: str = "top1"
    columns: tuple[str, ...] = ("top1", "top5")

    def __init__(
        self,
        num_classes: int,
        *,
        head: str = "attentive",
        label_smoothing: float = 0.0,
        mixer: InputMixer | None = None,
    ) -> None:
        if head not in ("attentive", "linear"):
            raise ValueError(f"head: got {head!r}, expected 'attentive' or 'linear'")
        self.num_classes = num_classes
        self.head = head
        self.label_smoothing = label_smoothing
        self.mixer = mixer

    def make_probe(
        self, *, embed_dim: int, num_heads: int, depth: int, blocks_on_queries: bool, use_sdpa: bool
    ) -> nn.Module:
        if self.head == "linear":
            return LinearHead(embed_dim=embed_dim, num_classes=self.num_classes)
        return AttentiveClassifier(
            embed_dim=embed_dim, num_heads=num_heads, depth=depth, num_classes=self.num_classes,
            blocks_on_queries=blocks_on_queries, use_sdpa=use_sdpa,
        )  # fmt: skip

    def make_optimizer(self, probe: nn.Module, betas: tuple[float, float]) -> torch.optim.Optimizer:
        return make_probe_optimizer(probe, betas)

    def mix(self, batch: Any, step: int) -> tuple[Any, Tensor]:
        if self.mixer is None:
            return batch, batch[1]
        inputs, targets = self.mixer(batch[0], batch[1], step)
        return (inputs, *batch[1:]), targets

    def loss(self, logits: Logits, labels: Tensor) -> Tensor:
        """Per probe, cross-entropy averaged over the views and the batch: ``[K]``; ``labels`` are class indices
        ``[B]`` or soft targets ``[B, C]``."""
        logits = single_head(logits)
        k, v, b, c = logits.shape
        if labels.dim() == 2:
            soft, targets = SoftTargetCrossEntropy(), labels.repeat(v, 1)  # view-major, as the logits
            return torch.stack([soft(logits[i].reshape(v * b, c), targets) for i in range(k)])
        if self.label_smoothing > 0:
            smooth = LabelSmoothingCrossEntropy(self.label_smoothing)
            return torch.stack([smooth(logits[i].reshape(v * b, c), labels.repeat(v)) for i in range(k)])
        ce = F.cross_entropy(logits.reshape(-1, c), labels.repeat(k * v), reduction="none")
        return ce.view(k, v, b).mean(dim=(1, 2))

    def val_loss(self, logits: Logits, labels: Tensor) -> Tensor:
        """Per probe, the negative log-likelihood of the view-averaged softmax (the prediction that is scored),
        averaged over the batch: ``[K]``."""
        probs = average_views(single_head(logits))
        nll = -probs.gather(-1, labels.expand(probs.shape[0], -1).unsqueeze(-1)).clamp(min=1e-12).log()
        return nll.squeeze(-1).mean(dim=-1)

    def scores(self, num_probes: int, device: torch.device) -> Scores:
        return SplitMetrics(num_probes, device)

    def records(self) -> dict[str, Any]:
        return {}

    def check_records(self, file: Path, recorded: dict[str, Any], action: str) -> None:
        return None  # a probe of other classes fails the strict load on its linear layer's shape

    def summary(self, last: list[dict[str, float]] | None, best: int) -> dict[str, Any]:
        return {m: (last[best][m] if last else None) for m in self.columns}

    def describe(self, result: dict[str, float]) -> str:
        return f"top-1 {result['top1']:.2f}%, top-5 {result['top5']:.2f}%"


def classification_task(cfg: EvalConfig, num_classes: int) -> Classification:
    """The :class:`Classification` a classification eval config describes (head, label smoothing, mixing)."""
    o = cfg.optimization
    mixer = None
    if o.mixes:
        mixer = InputMixer(
            mixup=o.mixup, cutmix=o.cutmix, prob=o.mixup_prob, switch_prob=o.mixup_switch_prob,
            label_smoothing=o.label_smoothing, num_classes=num_classes, seed=cfg.pretrain.seed,
        )  # fmt: skip
    return Classification(num_classes, head=cfg.classifier.head, label_smoothing=o.label_smoothing, mixer=mixer)


CSV_COLUMNS = [*_CSV_HEAD, "train_top1", "val_loss", "val_top1", "val_top5"]  # the classification evals'


def csv_columns(task: ProbeTask) -> list[str]:
    """The columns of ``results.csv``: the schedules, the training loss and metric, the validation results."""
    return [*_CSV_HEAD, f"train_{task.metric}", "val_loss", *(f"val_{c}" for c in task.columns)]


# -- probes -----------------------------------------------------------------------------------------------------
class ProbeBank(nn.Module):
    """Several probes applied to the same tokens: ``[X, N, D] -> [K, X, C]`` (a tuple of them, one per head, for
    probes with several heads)."""

    def __init__(self, probes: Iterable[nn.Module]) -> None:
        super().__init__()
        self.probes = nn.ModuleList(probes)

    def forward(self, tokens: Tensor) -> Logits:
        outs = [probe(tokens) for probe in self.probes]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(head) for head in zip(*outs, strict=True))
        return torch.stack(outs)


class TunedModel(nn.Module):
    """An encoder trained with its probe (fine-tuning): encoder inputs -> :class:`EncoderTokens` ``[V, B, N, D]``
    -> probe bank -> logits ``[K, V, B, C]`` (:data:`Logits`), in one module (one DDP wrapper, one EMA)."""

    def __init__(self, tokens: EncoderTokens, bank: ProbeBank) -> None:
        super().__init__()
        self.tokens = tokens
        self.bank = bank

    def forward(self, x: Tensor) -> Logits:
        tokens = self.tokens(x)
        views, batch_size = tokens.shape[:2]
        return map_logits(lambda t: t.unflatten(1, (views, batch_size)), self.bank(tokens.flatten(0, 1)))


def _grouped_names(named: Iterable[tuple[str, torch.Size | tuple[int, ...]]]) -> list[str]:
    """Parameter names in optimizer order: the decayed group, then the rest (the official two groups)."""
    named = list(named)
    return [n for n, s in named if decays(n, s)] + [n for n, s in named if not decays(n, s)]


def make_probe_optimizer(probe: nn.Module, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with the official two groups: decayed weights, then biases and 1-D parameters (never decayed); the
    decayed group carries no ``WD_exclude`` key, as in the official probe optimizer (see
    :func:`jepa.training.optim.param_groups`)."""
    return make_adamw([probe], betas, mark_decayed=False)


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, state: dict, file_keys: list[tuple[str, tuple[int, ...]]], probe: nn.Module
) -> None:
    """Load an optimizer state saved for a probe whose state dict had ``file_keys`` (name, shape) in order.

    An official V-JEPA 1 probe carries a cross-attention output projection its code never applied (our probe has
    none), so its optimizer numbered more parameters: the state is matched by parameter name instead of position.
    """
    ours = _grouped_names((n, p.shape) for n, p in probe.named_parameters())
    theirs = _grouped_names(file_keys)
    if ours == theirs:
        optimizer.load_state_dict(state)
        return
    position = {name: i for i, name in enumerate(ours)}
    missing = [n for n in ours if n not in theirs]
    if missing:
        raise CheckpointError(f"optimizer state lacks parameters {missing}")
    remapped = {position[theirs[i]]: v for i, v in state["state"].items() if theirs[i] in position}
    groups, first = [], 0
    for group, ours_group in zip(state["param_groups"], optimizer.param_groups, strict=True):
        kept = [position[theirs[i]] for i in group["params"] if theirs[i] in position]
        if len(kept) != len(ours_group["params"]):
            raise CheckpointError("optimizer state groups do not match the probe's parameter groups")
        groups.append({**group, "params": list(range(first, first + len(kept)))})
        first += len(kept)
    # Positions were assigned in group order, so renumbering group by group keeps them aligned.
    optimizer.load_state_dict({"state": remapped, "param_groups": groups})


@dataclass
class ProbeStep:
    """What one update of the probes saw: logits (float32, detached; :data:`Logits`), labels ``[B]``, each probe's
    training loss ``[K]`` (detached) and each probe's ``(lr, weight_decay)``."""

    logits: Logits
    labels: Tensor
    losses: Tensor
    hparams: list[tuple[float, float]]


@dataclass
class EpochResult:
    epoch: int
    train: list[dict[str, float]]
    val: list[dict[str, float]]


class ProbeTrainer:
    """Trains the probes of one eval on a frozen model's tokens (or, fine-tuning, one encoder with its probe), with
    checkpoints, CSV/JSON results and resume.

    Args:
        cfg: the eval config.
        encode: batch -> ``(tokens [V, B, N, D], labels)`` (called under ``torch.no_grad``).
        train_loader, val_loader: iterables of batches; ``train_loader.sampler.set_epoch`` is called when present;
            ``train_loader`` is None for a ``val_only`` eval (nothing is trained).
        embed_dim, num_heads: width of the tokens and the probe's heads (default: the encoder's).
        device: where probes live.
        task: what the probes are trained for; default :class:`Classification` of ``num_classes``.
        num_classes: the classes of a classification task (given instead of ``task``).
        rank, world_size: this process in the group (probes are wrapped in DDP when ``world_size > 1``).
        encoder_source: the encoder's checkpoint (None: random init), recorded in the results and the probe
            checkpoint.
        finetune: fine-tuning: the encoder's tokens to train with the (one) probe, on ``device``. ``encode`` then
            gives the encoder's inputs, ``(inputs, labels)``; the encoder trains under layer-wise LR decay
            (``optimization.layer_decay``, :mod:`evals.finetune`), with an EMA of encoder and probe when
            ``optimization.ema_decay`` is set (the EMA weights are then the ones evaluated), and the probe file also
            holds the encoder's weights (``encoder``, the official key) and the EMA's (``ema``).

    Attributes:
        epoch: epochs trained.
        step: updates done (``epoch * ipe`` at the start of an epoch).
        skipped_files: path -> reason of every validation sample that could not be read, over all ranks and
            epochs (each path once).
    """

    def __init__(
        self,
        cfg: EvalConfigBase,
        encode: Encode,
        train_loader: Batches | None,
        val_loader: Batches,
        *,
        embed_dim: int,
        num_heads: int,
        device: torch.device,
        task: ProbeTask | None = None,
        num_classes: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        encoder_source: str | None = None,
        log_freq: int = 10,
        finetune: EncoderTokens | None = None,
    ) -> None:
        if task is None:
            if num_classes is None:
                raise ValueError("num_classes is required without a task (a classification eval)")
            task = Classification(num_classes)
        elif num_classes is not None:
            raise ValueError("num_classes is given by the task: pass one or the other")
        self.cfg = cfg
        self.task: ProbeTask = task
        self.encode = encode
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.encoder_source = encoder_source
        self.log_freq = log_freq
        self.files = RunFolder(cfg.output_folder, cfg.pretrain.write_tag, writer=rank == 0)
        self.folder, self.tag = self.files.folder, self.files.tag
        opt = cfg.optimization
        self.hparams: list[ProbeOptimConfig] = opt.probes
        if train_loader is None and not cfg.val_only:
            raise ValueError("a training loader is required unless val_only")
        # val_only trains nothing: one nominal iteration per epoch keeps the (unused) schedules well defined.
        self.ipe = 1 if train_loader is None else len(train_loader)
        if self.ipe == 0:
            raise ValueError("the training split yields no batch on this rank")
        probes = [
            task.make_probe(
                embed_dim=embed_dim,
                num_heads=cfg.classifier.num_heads or num_heads,
                depth=cfg.classifier.num_probe_blocks,
                blocks_on_queries=cfg.classifier.blocks_on_queries,
                use_sdpa=cfg.pretrain.use_sdpa,
            )  # fmt: skip
            for _ in self.hparams
        ]
        self.bank = ProbeBank(probes).to(device)
        self.tuned: TunedModel | None = None
        self.ema: ModelEmaV3 | None = None
        if finetune is None:
            self.optimizers = [task.make_optimizer(p, opt.betas) for p in self.bank.probes]
        else:
            if len(probes) != 1:
                raise ValueError(f"fine-tuning trains one encoder with one probe, got {len(probes)} probes")
            self.tuned = TunedModel(finetune, self.bank)
            self.optimizers = [make_finetune_optimizer(finetune.encoder, probes[0], opt.betas, opt.layer_decay)]
            if opt.ema_decay is not None:
                self.ema = ModelEmaV3(self.tuned, decay=opt.ema_decay)
        self.schedules = [
            Schedules(
                ipe=self.ipe,
                epochs=opt.num_epochs,
                ipe_scale=1.0,
                warmup_epochs=h.warmup,
                start_lr=h.lr if h.start_lr is None else h.start_lr,  # None is filled in by the config
                lr=h.lr,
                final_lr=h.final_lr,
                weight_decay=h.weight_decay,
                final_weight_decay=1e-6 if h.final_weight_decay is None else h.final_weight_decay,
                ema=(1.0, 1.0),
            )  # fmt: skip
            for h in self.hparams
        ]
        self.model = wrap_ddp(self.bank if self.tuned is None else self.tuned, device, world_size, static_graph=True)
        requested = "auto" if opt.use_bfloat16 == "auto" else ("bfloat16" if opt.use_bfloat16 else "float32")
        self.dtype = resolve_dtype(requested, device, "optimization.use_bfloat16")
        self.epoch = 0
        self.step = 0
        self.history: list[EpochResult] = []
        self.skipped_files: dict[str, str] = {}
        # A fine-tuned encoder's validation features change every epoch: nothing to keep.
        self.val_cache = ValFeatureCache(False if self.tuned is not None else opt.cache_val_features, self.device)

    @property
    def encoder_id(self) -> str:
        """The encoder as outputs record it: its checkpoint path, or :data:`RANDOM_INIT`."""
        return self.encoder_source or RANDOM_INIT

    # -- checkpoints -------------------------------------------------------------------------------------------
    @property
    def latest_path(self) -> Path:
        return self.files.latest

    def state_dict(self) -> dict[str, Any]:
        """The official probe layout (``classifier``, ``opt``, ``scaler``, ``epoch``, ...) with every probe under
        ``classifiers`` (V-JEPA 2's key) and ``classifier`` the best one on validation so far, plus the encoder the
        probes were trained on, the unreadable validation files and the task's records. Only tensors, plain
        containers, numbers and strings, so that ``torch.load(weights_only=True)`` reads it."""
        best = self.best_probe()
        rng_per_rank = all_gather_objects(rng_state())  # a collective: every rank saves
        tuned = {}
        if self.tuned is not None:
            tuned = {"encoder": self.tuned.tokens.encoder.state_dict(),
                     "ema": None if self.ema is None else self.ema.module.state_dict()}  # fmt: skip
        return {
            "classifier": self.bank.probes[best].state_dict(),
            "classifiers": [p.state_dict() for p in self.bank.probes],
            "opt": [o.state_dict() for o in self.optimizers],
            "scaler": None,
            "epoch": self.epoch,
            "batch_size": self.cfg.optimization.batch_size,
            "world_size": self.world_size,
            "lr": self.hparams[best].lr,
            "best_probe": best,
            "history": [vars(h) for h in self.history],
            "probe_hparams": [to_dict(h) for h in self.hparams],
            "config": to_dict(self.cfg),
            # Not "encoder", which in a training checkpoint holds the encoder's weights.
            "encoder_checkpoint": self.encoder_id,
            "out_layers": self.out_layers,
            "skipped_files": self._skipped_list(),
            "rng": rng_per_rank[0],
            "rng_per_rank": rng_per_rank,
            **tuned,
            **self.task.records(),
        }

    def _skipped_list(self) -> list[dict[str, str]]:
        return [{"path": path, "reason": reason} for path, reason in sorted(self.skipped_files.items())]

    @property
    def out_layers(self) -> list[int] | None:
        """The encoder blocks the probes read (``wrapper.out_layers``; None: the last one), as outputs record it."""
        layers = self.cfg.wrapper.out_layers
        return None if layers is None else sorted(set(layers))

    def _refuse_other_encoder(self, file: Path, theirs: str | None, action: str) -> None:
        if theirs is None or same_encoder(theirs, self.encoder_id):
            return
        raise ConfigError(
            f"{file} was produced with encoder {theirs}, but this run evaluates encoder {self.encoder_id}: "
            f"refusing to {action}. Give this eval its own tag (outputs go to <folder>/<eval_name>/<tag>, "
            f"here {self.folder}), or another folder."
        )

    def _refuse_other_features(self, file: Path, recorded: dict[str, Any], action: str, probes: bool = True) -> None:
        """Refuse probes or results of another encoder, or of other encoder blocks (``out_layers``): probes
        trained on one set of features mean nothing on another; for a probe file (``probes``), also one whose
        task records disagree (:meth:`ProbeTask.check_records`). ``recorded``: the file's contents (a file
        without these records, e.g. an official one, is taken as it is)."""
        self._refuse_other_encoder(file, recorded.get("encoder_checkpoint"), action)
        if "out_layers" in recorded:
            theirs = recorded["out_layers"]
            if (None if theirs is None else sorted(theirs)) != self.out_layers:
                raise ConfigError(
                    f"{file} holds probes of encoder blocks wrapper.out_layers={theirs}, but this run probes "
                    f"out_layers={self.out_layers}: refusing to {action}. Give this eval its own tag, or another "
                    "folder."
                )
        if probes:
            tuned = "encoder" in recorded  # a fine-tuning run's file holds the encoder it trained
            if tuned != (self.tuned is not None):
                held = "a fine-tuned encoder and its probe" if tuned else "probes of a frozen encoder"
                wanted = "fine-tunes the encoder" if self.tuned is not None else "keeps the encoder frozen"
                raise ConfigError(f"{file} holds {held}, but this run {wanted} ({self.cfg.eval_name}): refusing to "
                                  f"{action}. Give this eval its own tag, or another folder.")  # fmt: skip
            self.task.check_records(file, recorded, action)

    def check_output_folder(self, resume: bool) -> None:
        """Refuse to overwrite, or resume from, the results or probe checkpoint of another encoder, of other
        encoder blocks or of other task records."""
        if self.latest_path.is_file():
            ckpt = read_checkpoint(self.latest_path)
            self._refuse_other_features(self.latest_path, ckpt, "resume from it" if resume else "overwrite it")
        results = self.folder / "results.json"
        if results.is_file():
            self._refuse_other_encoder(results, encoder_of_results(results), "overwrite it")
            self._refuse_other_features(results, _read_json(results), "overwrite it", probes=False)

    def save(self) -> Path | None:
        """Write ``latest`` (rank 0; the others return None)."""
        return self.files.save(self.state_dict())

    def load(self, path: str | Path) -> None:
        """Resume from a probe checkpoint: ours, or an official V-JEPA 1 (``classifier``) / V-JEPA 2
        (``classifiers``) one."""
        ckpt = read_checkpoint(path)
        self._refuse_other_features(Path(path), ckpt, "resume from it")
        if "classifiers" in ckpt:
            states, opts = ckpt["classifiers"], ckpt.get("opt")
        elif "classifier" in ckpt:
            states, opts = [ckpt["classifier"]], [ckpt.get("opt")]
        else:
            raise CheckpointError(
                f"{path}: no 'classifier' or 'classifiers' in a probe checkpoint; keys {sorted(ckpt)}"
            )
        if not isinstance(opts, list):
            opts = [opts]
        if len(states) != len(self.bank.probes):
            raise CheckpointError(
                f"{path} holds {len(states)} probe(s) but the config trains {len(self.bank.probes)} "
                "(optimization.multihead_kwargs)"
            )
        self._load_weights(ckpt, states, path)
        for i, (probe, state) in enumerate(zip(self.bank.probes, states, strict=True)):
            if i < len(opts) and opts[i] is not None:
                if self.tuned is not None:  # ours only: the layer-decay groups of encoder and probe
                    self.optimizers[i].load_state_dict(opts[i])
                    continue
                keys = [(k, tuple(v.shape)) for k, v in strip_prefixes(state).items()]
                load_optimizer_state(self.optimizers[i], opts[i], keys, probe)
            else:
                logger.warning("%s: no optimizer state for probe %d; its AdamW moments start from zero", path, i)
        self.epoch = int(ckpt.get("epoch", 0))
        self.history = [EpochResult(**h) for h in ckpt.get("history", [])]
        self.skipped_files = {s["path"]: s["reason"] for s in ckpt.get("skipped_files", [])}
        # Drop path draws from torch's generator: continue its stream (an official probe file has none to restore).
        restore_rng(ckpt, self.rank, self.world_size, reseed=self.cfg.pretrain.seed + self.epoch)
        logger.info("resumed probes from %s after epoch %d", path, self.epoch)

    def _load_weights(self, ckpt: dict[str, Any], states: list[dict[str, Tensor]], path: str | Path) -> None:
        """The probes' weights ``states`` and, fine-tuning, the encoder's and the EMA's of ``ckpt``, strictly."""
        names = [f"classifier {i}" for i in range(len(states))]
        sources: dict[str, Any] = dict(zip(names, states, strict=True))
        targets: dict[str, nn.Module] = dict(zip(names, self.bank.probes, strict=True))
        if self.tuned is not None:
            sources["encoder"], targets["encoder"] = ckpt["encoder"], self.tuned.tokens.encoder
            if self.ema is not None:
                if ckpt.get("ema") is None:
                    raise CheckpointError(f"{path} holds no EMA weights, but optimization.ema_decay is set")
                sources["ema"], targets["ema"] = ckpt["ema"], self.ema.module
        load_modules(sources, targets, path)

    def probe_states(self, ckpt: dict[str, Any], path: str | Path) -> list[dict[str, Tensor]]:
        """The probes' state dicts of ``ckpt``, one per probe of this run: every entry of ``classifiers`` (ours,
        V-JEPA 2) or the single ``classifier`` (V-JEPA 1). For one probe from a file of several, the file's best
        one (``classifier``, which ours keep) is taken, as a ``val_only`` run of an inference config (one probe)
        on the folder of its training run (several) needs. :class:`CheckpointError` when the counts disagree."""
        if "classifiers" in ckpt:
            states = list(ckpt["classifiers"])
        elif "classifier" in ckpt:
            states = [ckpt["classifier"]]
        else:
            raise CheckpointError(
                f"{path}: no 'classifier' or 'classifiers' in a probe checkpoint; keys {sorted(ckpt)}"
            )
        if len(states) != len(self.bank.probes) and len(self.bank.probes) == 1 and "classifier" in ckpt:
            logger.info("%s holds %d probes: evaluating its best one (probe %s, 'classifier')", path, len(states),
                        ckpt.get("best_probe", "?"))  # fmt: skip
            states = [ckpt["classifier"]]
        if len(states) != len(self.bank.probes):
            raise CheckpointError(
                f"{path} holds {len(states)} probe(s) but the config has {len(self.bank.probes)} "
                "(optimization.multihead_kwargs)"
            )
        return states

    def load_probes(self, path: str | Path) -> dict[str, Any]:
        """``val_only``: the probes' weights from ``path``, strictly (nothing else: no optimizer state); returns
        the checkpoint. Refuses probes of another encoder, of other encoder blocks or of other task records."""
        ckpt = read_checkpoint(path)
        self._refuse_other_features(Path(path), ckpt, "evaluate it")
        states = self.probe_states(ckpt, path)
        self._load_weights(ckpt, states, path)
        logger.info("val_only: evaluating %d probe(s) from %s (epoch %s)", len(states), path, ckpt.get("epoch", "?"))
        return ckpt

    def validate_only(self, path: str | Path) -> dict[str, Any]:
        """``val_only``: evaluate the saved probes of ``path`` once on the validation split, without training;
        their weights and the folder's checkpoint are left as they are. The results go to
        ``results_val_only.json`` (the training run's ``results.json`` in the same folder is kept)."""
        ckpt = self.load_probes(path)
        self.files.prepare()
        self.epoch = int(ckpt.get("epoch", 0))
        self.history = [EpochResult(self.epoch, [], self.evaluate())]
        summary = self.write_summary("results_val_only.json", val_only=True, probe_checkpoint=str(path))
        self._log_summary(summary, f"val_only; results in {self.folder / 'results_val_only.json'}")
        return summary

    def maybe_resume(self, force: bool = False) -> None:
        """Resume from ``latest`` when ``resume_checkpoint`` is set, or ``force`` (a requeued job, ``--resume``),
        and it exists."""
        path = self.files.resume_path(
            latest_first=force, requested=bool(self.cfg.resume_checkpoint), requested_by="resume_checkpoint",
            log=logger,
        )  # fmt: skip
        if path is not None:
            self.load(path)

    # -- training ----------------------------------------------------------------------------------------------
    def best_probe(self) -> int:
        """The probe with the highest validation :attr:`ProbeTask.metric` at the last evaluated epoch (0 before
        any)."""
        if not self.history:
            return 0
        val = self.history[-1].val
        return max(range(len(val)), key=lambda k: val[k][self.task.metric])

    def _forward(self, batch: Any, training: bool = False) -> tuple[Logits, Tensor]:
        """Probe logits (float32; :data:`Logits`) and labels of one batch. Only training goes through DDP:
        validation shards may hold different numbers of batches, so evaluation must not need the other ranks."""
        return self._probe_logits(*self._encode(batch), training)

    def _encode(self, batch: Any) -> tuple[Tensor, Tensor]:
        """The frozen model's tokens ``[V, B, N, D]`` and the labels of one batch."""
        with torch.no_grad(), self._autocast():
            return self.encode(batch)

    def _probe_logits(self, inputs: Tensor, labels: Tensor, training: bool = False) -> tuple[Logits, Tensor]:
        """Logits (float32) of the frozen tokens ``[V, B, N, D]`` through the probes or, fine-tuning, of the encoder
        inputs through encoder and probe (the EMA's, when there is one, for evaluation)."""
        inputs = inputs.to(self.device, non_blocking=True)
        if self.tuned is not None:
            net = self.model if training else (self.tuned if self.ema is None else self.ema.module)
            with self._autocast():
                logits = net(inputs)
            return map_logits(Tensor.float, logits), labels.to(self.device)
        views, batch_size = inputs.shape[:2]
        with self._autocast():
            logits = (self.model if training else self.bank)(inputs.flatten(0, 1))
        return map_logits(lambda t: t.float().unflatten(1, (views, batch_size)), logits), labels.to(self.device)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def train_step(self, batch: Any) -> ProbeStep:
        """One update of every probe at global step :attr:`step`: schedules -> the task's mixing -> forward (the
        frozen encoder, then the probes; fine-tuning, both with gradients) -> loss -> backward -> clip (each probe
        on its own; fine-tuning, encoder and probe together) -> AdamW (-> the EMA)."""
        hparams = [set_hyperparams_at(o, s, self.step) for o, s in zip(self.optimizers, self.schedules, strict=True)]
        batch, targets = self.task.mix(batch, self.step)
        logits, labels = self._forward(batch, training=True)
        losses = self.task.loss(logits, targets.to(self.device))
        losses.sum().backward()
        clip_per_module(self.bank.probes if self.tuned is None else [self.tuned], self.cfg.optimization.clip_grad)
        for optimizer in self.optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.tuned, step=self.step)
        self.step += 1
        return ProbeStep(map_logits(Tensor.detach, logits), labels, losses.detach(), hparams)

    def train_epoch(self) -> list[dict[str, float]]:
        """Train every probe for epoch :attr:`epoch` (0-based); returns each probe's metrics over the epoch."""
        if self.train_loader is None:
            raise RuntimeError("val_only: this trainer has no training data")
        self.model.train()
        set_epoch = getattr(getattr(self.train_loader, "sampler", None), "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.epoch)
        scores = self.task.scores(len(self.optimizers), self.device)
        start = time.perf_counter()
        self.step = self.epoch * self.ipe
        for itr, batch in enumerate(self.train_loader):
            out = self.train_step(batch)
            scores.add(out.logits, out.labels, out.losses)
            if (itr + 1) % self.log_freq == 0 or itr + 1 == self.ipe:
                self._progress("train", itr + 1, self.ipe, start, scores, out.hparams[0][0])
        return scores.reduce().results()

    @torch.no_grad()
    def evaluate(self, loader: Batches | None = None) -> list[dict[str, float]]:
        """The task's metrics and loss of every probe over the readable samples of the validation split (all ranks
        together); each result also gives ``samples`` (scored) and ``unreadable`` (distinct files the loader
        skipped, over all ranks, which are added to :attr:`skipped_files`). Raises :class:`SampleLoadError` when
        no sample could be scored."""
        cache = self.val_cache if loader is None else None  # only the validation split's features repeat
        loader = self.val_loader if loader is None else loader
        self.model.eval()
        if self.ema is not None:
            self.ema.module.eval()
        scores = self.task.scores(len(self.optimizers), self.device)
        total = len(loader)
        skipped: dict[str, str] = {}
        start = time.perf_counter()
        for itr, (features, bad) in enumerate(self._val_features(loader, cache)):
            for sample in bad:
                skipped.setdefault(sample.path, sample.reason)
            if features is not None:
                logits, labels = self._probe_logits(*features)
                scores.add(logits, labels, self.task.val_loss(logits, labels))
            if (itr + 1) % self.log_freq == 0 or itr + 1 == total:
                self._progress("val", itr + 1, total, start, scores)
        scores.reduce()
        # Collectives on every rank before anyone raises, so that all ranks agree and none waits forever.
        unreadable: dict[str, str] = {}
        for part in all_gather_objects(skipped):
            for path, reason in part.items():
                unreadable.setdefault(path, reason)
        if scores.count == 0:
            first = "; ".join(f"{p}: {r}" for p, r in list(unreadable.items())[:5])
            raise SampleLoadError(
                f"no validation sample could be scored: {len(unreadable)} of {len(unreadable)} are unreadable"
                + (f" (first: {first})" if first else " (the validation split is empty)")
            )
        for path, reason in unreadable.items():
            self.skipped_files.setdefault(path, reason)
        if unreadable and self.rank == 0:
            logger.warning(
                "validation: %s; first: %s",
                describe_val_samples(scores.count, len(unreadable)),
                "; ".join(f"{p}: {r}" for p, r in list(unreadable.items())[:3]),
            )
        return [{**r, "unreadable": len(unreadable)} for r in scores.results()]

    def _val_features(
        self, loader: Batches, cache: "ValFeatureCache | None"
    ) -> Iterator[tuple[tuple[Tensor, Tensor] | None, list[SkippedSample]]]:
        """``((tokens, labels) or None, unreadable samples)`` per validation batch: from the cache when it is
        complete, else encoded now (and kept when the cache takes them)."""
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

    def _progress(
        self, split: str, done: int, total: int, start: float, scores: Scores, lr: float | None = None
    ) -> None:
        if self.rank != 0:
            return
        elapsed = time.perf_counter() - start
        rate = done / max(elapsed, 1e-9)
        eta = (total - done) / rate if total else math.nan
        best = max(r[self.task.metric] for r in scores.results())
        extra = f" lr {lr:.2e}" if lr is not None else ""
        logger.info(
            "epoch %d/%d %s [%d/%d] %.2f it/s, eta %.0f s, best %s so far (this rank) %.2f%s",
            self.epoch + 1, self.cfg.optimization.num_epochs, split, done, total, rate, eta, self.task.metric, best,
            extra,
        )  # fmt: skip

    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train (resuming when asked), evaluate after every epoch, write CSV/JSON; returns the summary. Refuses
        (:class:`ConfigError`) an output folder that holds the results or probes of another encoder.
        With ``val_only``: :meth:`validate_only` on the probe file :meth:`EvalConfig.find_probe_checkpoint` finds."""
        if self.cfg.val_only:
            return self.validate_only(self.cfg.find_probe_checkpoint())
        self.check_output_folder(resume=bool(resume or self.cfg.resume_checkpoint))
        self.files.prepare()
        self.maybe_resume(force=resume)
        csv = self.files.csv_log("results.csv", csv_columns(self.task), column="epoch", value=self.epoch)
        num_epochs = self.cfg.optimization.num_epochs
        metric = self.task.metric
        if self.epoch >= num_epochs:
            logger.info("probes already trained for %d epochs: evaluating only", self.epoch)
        while self.epoch < num_epochs:
            train = self.train_epoch()
            val = self.evaluate()
            last_step = (self.epoch + 1) * self.ipe - 1
            self.history.append(EpochResult(self.epoch + 1, train, val))
            self.epoch += 1
            if csv is not None:
                for k, (t, v) in enumerate(zip(train, val, strict=True)):
                    csv.log(
                        epoch=self.epoch, probe=k, lr=self.schedules[k].lr_at(last_step),
                        weight_decay=self.schedules[k].wd_at(last_step), train_loss=t["loss"],
                        **{f"train_{metric}": t[metric], "val_loss": v["loss"]},
                        **{f"val_{c}": v[c] for c in self.task.columns},
                    )  # fmt: skip
            best = self.best_probe()
            if self.rank == 0:
                logger.info(
                    "[epoch %d] val %s, train %s %.2f (probe %d of %d) over %s",
                    self.epoch, self.task.describe(val[best]), metric, train[best][metric], best, len(val),
                    describe_val_samples(int(val[best]["samples"]), int(val[best].get("unreadable", 0))),
                )  # fmt: skip
            self.save()
            self.write_summary()
        if not self.history:
            self.history.append(EpochResult(self.epoch, [], self.evaluate()))
        summary = self.write_summary()
        self._log_summary(summary, f"results in {self.folder}")
        return summary

    def _log_summary(self, summary: dict[str, Any], where: str) -> None:
        if self.rank != 0 or not self.history:
            return
        best = self.history[-1].val[summary["best_probe"]]
        logger.info(
            "%s (%s), encoder %s: %s over %s; %s", summary["eval_name"], summary["tag"], self.encoder_id,
            self.task.describe(best), describe_val_samples(summary["val_samples"], summary["val_unreadable"]), where,
        )  # fmt: skip

    def summary(self) -> dict[str, Any]:
        best = self.best_probe()
        last = self.history[-1] if self.history else None
        metric = self.task.metric
        probes = []
        for k, h in enumerate(self.hparams):
            row = {"probe": k, **to_dict(h)}
            if last is not None:
                row.update({f"val_{m}": last.val[k][m] for m in (*self.task.columns, "loss")})
                row[f"best_epoch_val_{metric}"] = max(e.val[k][metric] for e in self.history)
            probes.append(row)
        return {
            "eval_name": self.cfg.eval_name,
            "tag": self.cfg.tag,
            "encoder_checkpoint": self.encoder_source,
            "random_init_encoder": self.encoder_source is None,
            "out_layers": self.out_layers,
            "epochs": self.epoch,
            "world_size": self.world_size,
            "val_samples": last.val[best]["samples"] if last else None,  # scored: readable, each once
            "val_unreadable": last.val[best].get("unreadable", 0) if last else None,
            "skipped_files": self._skipped_list(),
            "best_probe": best,
            **self.task.summary(last.val if last else None, best),
            "probes": probes,
            "config": to_dict(self.cfg),
        }

    def write_summary(self, name: str = "results.json", **extra: Any) -> dict[str, Any]:
        """The summary, with ``extra`` entries, written to ``name`` in the eval's folder (rank 0)."""
        summary = {**self.summary(), **extra}
        if self.rank == 0:
            atomic_write(self.folder / name, lambda f: f.write(json.dumps(summary, indent=2) + "\n"), "w")
        return summary


def run_eval(
    cfg: EvalConfig,
    make_data: Callable[[EvalConfig, int, int], tuple[Batches | None, Batches, int]],
    device: torch.device | str = "cpu",
    *,
    rank: int = 0,
    world_size: int = 1,
    resume: bool = False,
) -> dict[str, Any]:
    """One classification eval end to end (frozen, or fine-tuning the encoder): encoder, data (``make_data(cfg,
    rank, world_size) -> (train, val, num_classes)``; train is None with ``val_only``), probes, training (or, with
    ``val_only``, one evaluation of the saved probes), results. ``resume`` forces resuming (a requeued job)."""
    from evals import encoder as encoders  # looked up at run time (tests replace the builders)

    device = torch.device(device)
    if cfg.val_only:
        cfg.find_probe_checkpoint()  # a missing probe file fails here, before the encoder and the data are built
    torch.manual_seed(cfg.pretrain.seed)
    build = encoders.build_tuned_encoder if cfg.finetune else encoders.build_frozen_encoder
    encoder, source = build(cfg)
    tokens = EncoderTokens(
        encoder.to(device),
        attend_across_segments=cfg.optimization.attend_across_segments,
        image_frames=cfg.pretrain.frames_per_clip,
        out_layers=cfg.wrapper.out_layers,
    )
    train, val, num_classes = make_data(cfg, rank, world_size)
    if cfg.data.num_classes is not None and cfg.data.num_classes != num_classes:
        raise ValueError(f"data.num_classes is {cfg.data.num_classes} but the data set has {num_classes} classes")
    if rank == 0:
        logger.info(
            "%s: encoder %s (%s), %d classes, %d probe(s), %d train batches per epoch on each of %d rank(s)",
            cfg.eval_name, source or "random init", type(encoder).__name__, num_classes, len(cfg.optimization.probes),
            0 if train is None else len(train), world_size,
        )  # fmt: skip
    encode = encoders.encoder_inputs if cfg.finetune else encoders.make_encode(tokens, device)
    trainer = ProbeTrainer(
        cfg, encode, train, val, embed_dim=tokens.embed_dim, num_heads=tokens.num_heads,
        task=classification_task(cfg, num_classes), device=device, rank=rank, world_size=world_size,
        encoder_source=source, finetune=tokens if cfg.finetune else None,
    )  # fmt: skip
    return trainer.run(resume=resume)
