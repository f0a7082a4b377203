"""The frozen-evaluation engine both evals share: attentive probes trained on the tokens of a frozen encoder.

An eval supplies an *encode* function mapping a batch to ``(tokens, labels)`` with ``tokens`` of shape
``[V, B, N, D]``: ``V`` probe inputs per sample (spatial views, or views x segments when segments are probed one
by one), each of ``N`` tokens. Every probe classifies each of the ``V`` inputs; its prediction for a sample is the
softmax averaged over them. Several probes (``optimization.multihead_kwargs``) train at once on the same
features, each with its own learning-rate and weight-decay schedule; features are computed once per batch, without
gradients.

Metrics (top-1, top-5, loss) are sums over the whole split, reduced across ranks, divided by the number of samples
scored: not a mean of per-batch means. Validation samples that cannot be read are not scored (nor replaced by
another sample, which would then count twice): the loader drops them from their batch (:class:`jepa.data.PartialBatch`)
and ``results.json`` lists them under ``skipped_files``. Outputs in the eval's folder: ``<write_tag>-latest.pth.tar``
(probes, optimizers, epoch; the official layout, loadable with ``torch.load(weights_only=True)``), ``results.csv``
(one row per probe per epoch) and ``results.json``. Both the checkpoint and the results record the encoder and
its blocks (``wrapper.out_layers``) they come from; a run of another encoder, or of other blocks, into the same
folder is refused rather than overwriting (or resuming from) them. ``val_only`` evaluates the saved probes once and
writes ``results_val_only.json``, leaving the checkpoint and the training results as they are.
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
from torch import Tensor, nn

from jepa.checkpoint import CheckpointError, atomic_write, read_checkpoint, strip_prefixes
from jepa.config.evals import EvalConfig, ProbeOptimConfig
from jepa.config.strict import ConfigError, to_dict
from jepa.data import SampleLoadError, SkippedSample, split_skipped
from jepa.models import AttentiveClassifier
from jepa.runtime.distributed import all_gather_objects, all_reduce_sum
from jepa.runtime.precision import resolve_dtype
from jepa.training.ddp import wrap_ddp
from jepa.training.optim import clip_per_module, decays, make_adamw, set_hyperparams_at
from jepa.training.run import RunFolder, load_modules
from jepa.training.schedules import Schedules

logger = logging.getLogger(__name__)

Encode = Callable[[Any], tuple[Tensor, Tensor]]
CSV_COLUMNS = ["epoch", "probe", "lr", "weight_decay", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5"]
RANDOM_INIT = "random-init"  # the encoder of a run with pretrain.checkpoint null, as outputs record it


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
    """Sums of (top-1 hits, top-5 hits, loss, samples) per probe over a split; :meth:`reduce` adds up the ranks."""

    def __init__(self, num_probes: int, device: torch.device) -> None:
        self.sums = torch.zeros(num_probes, 4, dtype=torch.float64, device=device)

    def update(self, probs: Tensor, labels: Tensor, loss_sums: Tensor) -> None:
        """``probs`` ``[K, B, C]``, ``labels`` ``[B]``, ``loss_sums`` ``[K]`` (loss summed over the batch)."""
        self.sums[:, 0] += topk_correct(probs, labels, 1)
        self.sums[:, 1] += topk_correct(probs, labels, 5)
        self.sums[:, 2] += loss_sums.detach().double()
        self.sums[:, 3] += labels.numel()

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


# -- probes -----------------------------------------------------------------------------------------------------
class ProbeBank(nn.Module):
    """Several probes applied to the same tokens: ``[X, N, D] -> [K, X, C]``."""

    def __init__(self, probes: Iterable[nn.Module]) -> None:
        super().__init__()
        self.probes = nn.ModuleList(probes)

    def forward(self, tokens: Tensor) -> Tensor:
        return torch.stack([probe(tokens) for probe in self.probes])


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
    """What one update of the probes saw: logits ``[K, V, B, C]`` (float32, detached), labels ``[B]``, each
    probe's loss summed over the batch ``[K]`` (detached) and each probe's ``(lr, weight_decay)``."""

    logits: Tensor
    labels: Tensor
    loss_sums: Tensor
    hparams: list[tuple[float, float]]


@dataclass
class EpochResult:
    epoch: int
    train: list[dict[str, float]]
    val: list[dict[str, float]]


class ProbeTrainer:
    """Trains the probes of one eval on a frozen encoder's tokens, with checkpoints, CSV/JSON results and resume.

    Args:
        cfg: the eval config.
        encode: batch -> ``(tokens [V, B, N, D], labels [B])`` (called under ``torch.no_grad``).
        train_loader, val_loader: iterables of batches; ``train_loader.sampler.set_epoch`` is called when present;
            ``train_loader`` is None for a ``val_only`` eval (nothing is trained).
        embed_dim, num_heads: width of the tokens and the probe's heads (default: the encoder's).
        num_classes: classes of the task.
        device: where probes live.
        rank, world_size: this process in the group (probes are wrapped in DDP when ``world_size > 1``).
        encoder_source: the encoder's checkpoint (None: random init), recorded in the results and the probe
            checkpoint.

    Attributes:
        epoch: epochs trained.
        step: updates done (``epoch * ipe`` at the start of an epoch).
        skipped_files: path -> reason of every validation sample that could not be read, over all ranks and
            epochs (each path once).
    """

    def __init__(
        self,
        cfg: EvalConfig,
        encode: Encode,
        train_loader: Batches | None,
        val_loader: Batches,
        *,
        embed_dim: int,
        num_heads: int,
        num_classes: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        encoder_source: str | None = None,
        log_freq: int = 10,
    ) -> None:
        self.cfg = cfg
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

        def make_probe() -> AttentiveClassifier:
            return AttentiveClassifier(
                embed_dim=embed_dim,
                num_heads=cfg.classifier.num_heads or num_heads,
                depth=cfg.classifier.num_probe_blocks,
                num_classes=num_classes,
                blocks_on_queries=cfg.classifier.blocks_on_queries,
                use_sdpa=cfg.pretrain.use_sdpa,
            )

        self.bank = ProbeBank(make_probe() for _ in self.hparams).to(device)
        self.optimizers = [make_probe_optimizer(p, opt.betas) for p in self.bank.probes]
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
        self.model = wrap_ddp(self.bank, device, world_size, static_graph=True)
        requested = "auto" if opt.use_bfloat16 == "auto" else ("bfloat16" if opt.use_bfloat16 else "float32")
        self.dtype = resolve_dtype(requested, device, "optimization.use_bfloat16")
        self.epoch = 0
        self.step = 0
        self.history: list[EpochResult] = []
        self.skipped_files: dict[str, str] = {}
        self.val_cache = ValFeatureCache(opt.cache_val_features, self.device)

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
        probes were trained on and the unreadable validation files. Only tensors, plain containers, numbers and
        strings, so that ``torch.load(weights_only=True)`` reads it."""
        best = self.best_probe()
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

    def _refuse_other_features(self, file: Path, recorded: dict[str, Any], action: str) -> None:
        """Refuse probes or results of another encoder, or of other encoder blocks (``out_layers``): probes
        trained on one set of features mean nothing on another. ``recorded``: the file's contents (a file
        without these records, e.g. an official one, is taken as it is)."""
        self._refuse_other_encoder(file, recorded.get("encoder_checkpoint"), action)
        if "out_layers" not in recorded:
            return
        theirs = recorded["out_layers"]
        if (None if theirs is None else sorted(theirs)) != self.out_layers:
            raise ConfigError(
                f"{file} holds probes of encoder blocks wrapper.out_layers={theirs}, but this run probes "
                f"out_layers={self.out_layers}: refusing to {action}. Give this eval its own tag, or another folder."
            )

    def check_output_folder(self, resume: bool) -> None:
        """Refuse to overwrite, or resume from, the results or probe checkpoint of another encoder or of other
        encoder blocks."""
        if self.latest_path.is_file():
            ckpt = read_checkpoint(self.latest_path)
            self._refuse_other_features(self.latest_path, ckpt, "resume from it" if resume else "overwrite it")
        results = self.folder / "results.json"
        if results.is_file():
            self._refuse_other_encoder(results, encoder_of_results(results), "overwrite it")
            self._refuse_other_features(results, _read_json(results), "overwrite it")

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
        names = [f"classifier {i}" for i in range(len(states))]
        load_modules(dict(zip(names, states, strict=True)), dict(zip(names, self.bank.probes, strict=True)), path)
        for i, (probe, state) in enumerate(zip(self.bank.probes, states, strict=True)):
            if i < len(opts) and opts[i] is not None:
                keys = [(k, tuple(v.shape)) for k, v in strip_prefixes(state).items()]
                load_optimizer_state(self.optimizers[i], opts[i], keys, probe)
            else:
                logger.warning("%s: no optimizer state for probe %d; its AdamW moments start from zero", path, i)
        self.epoch = int(ckpt.get("epoch", 0))
        self.history = [EpochResult(**h) for h in ckpt.get("history", [])]
        self.skipped_files = {s["path"]: s["reason"] for s in ckpt.get("skipped_files", [])}
        logger.info("resumed probes from %s after epoch %d", path, self.epoch)

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
        the checkpoint. Refuses probes of another encoder or of other encoder blocks."""
        ckpt = read_checkpoint(path)
        self._refuse_other_features(Path(path), ckpt, "evaluate it")
        states = self.probe_states(ckpt, path)
        names = [f"classifier {i}" for i in range(len(states))]
        load_modules(dict(zip(names, states, strict=True)), dict(zip(names, self.bank.probes, strict=True)), path)
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
        summary = {**self.summary(), "val_only": True, "probe_checkpoint": str(path)}
        if self.rank == 0:
            out = self.folder / "results_val_only.json"
            atomic_write(out, lambda f: f.write(json.dumps(summary, indent=2) + "\n"), "w")
            logger.info(
                "%s (%s) val_only, encoder %s: top-1 %.2f%%, top-5 %.2f%% over %s; results in %s",
                summary["eval_name"], summary["tag"], self.encoder_id, summary["top1"], summary["top5"],
                describe_val_samples(summary["val_samples"], summary["val_unreadable"]), out,
            )  # fmt: skip
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
        """The probe with the highest validation top-1 at the last evaluated epoch (0 before any)."""
        if not self.history:
            return 0
        val = self.history[-1].val
        return max(range(len(val)), key=lambda k: val[k]["top1"])

    def _forward(self, batch: Any, training: bool = False) -> tuple[Tensor, Tensor]:
        """Probe logits ``[K, V, B, C]`` (float32) and labels ``[B]`` of one batch. Only training goes through DDP:
        validation shards may hold different numbers of batches, so evaluation must not need the other ranks."""
        return self._probe_logits(*self._encode(batch), training)

    def _encode(self, batch: Any) -> tuple[Tensor, Tensor]:
        """The frozen encoder's tokens ``[V, B, N, D]`` and the labels ``[B]`` of one batch."""
        with torch.no_grad(), self._autocast():
            return self.encode(batch)

    def _probe_logits(self, tokens: Tensor, labels: Tensor, training: bool = False) -> tuple[Tensor, Tensor]:
        tokens = tokens.to(self.device, non_blocking=True)
        views, batch_size = tokens.shape[:2]
        with self._autocast():
            logits = (self.model if training else self.bank)(tokens.flatten(0, 1))
        return logits.float().unflatten(1, (views, batch_size)), labels.to(self.device)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    @staticmethod
    def _losses(logits: Tensor, labels: Tensor) -> Tensor:
        """Per probe, cross-entropy summed over the batch and averaged over the views: ``[K]``."""
        k, v, b, c = logits.shape
        ce = F.cross_entropy(logits.reshape(-1, c), labels.repeat(k * v), reduction="none")
        return ce.view(k, v, b).mean(dim=1).sum(dim=1)

    def train_step(self, batch: Any) -> ProbeStep:
        """One update of every probe at global step :attr:`step`: schedules -> forward (the frozen encoder, then
        the probes) -> loss -> backward -> clip (each probe on its own) -> AdamW."""
        hparams = [set_hyperparams_at(o, s, self.step) for o, s in zip(self.optimizers, self.schedules, strict=True)]
        logits, labels = self._forward(batch, training=True)
        loss_sums = self._losses(logits, labels)
        (loss_sums.sum() / labels.numel()).backward()
        clip_per_module(self.bank.probes, self.cfg.optimization.clip_grad)
        for optimizer in self.optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return ProbeStep(logits.detach(), labels, loss_sums.detach(), hparams)

    def train_epoch(self) -> list[dict[str, float]]:
        """Train every probe for epoch :attr:`epoch` (0-based); returns each probe's metrics over the epoch."""
        if self.train_loader is None:
            raise RuntimeError("val_only: this trainer has no training data")
        self.model.train()
        set_epoch = getattr(getattr(self.train_loader, "sampler", None), "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.epoch)
        metrics = SplitMetrics(len(self.optimizers), self.device)
        start = time.perf_counter()
        self.step = self.epoch * self.ipe
        for itr, batch in enumerate(self.train_loader):
            out = self.train_step(batch)
            metrics.update(average_views(out.logits), out.labels, out.loss_sums)
            if (itr + 1) % self.log_freq == 0 or itr + 1 == self.ipe:
                self._progress("train", itr + 1, self.ipe, start, metrics, out.hparams[0][0])
        return metrics.reduce().results()

    @torch.no_grad()
    def evaluate(self, loader: Batches | None = None) -> list[dict[str, float]]:
        """Top-1 / top-5 / loss of every probe over the readable samples of the validation split (all ranks
        together); each result also gives ``samples`` (scored) and ``unreadable`` (distinct files the loader
        skipped, over all ranks, which are added to :attr:`skipped_files`). Raises :class:`SampleLoadError` when
        no sample could be scored."""
        cache = self.val_cache if loader is None else None  # only the validation split's features repeat
        loader = self.val_loader if loader is None else loader
        self.model.eval()
        metrics = SplitMetrics(len(self.optimizers), self.device)
        total = len(loader)
        skipped: dict[str, str] = {}
        start = time.perf_counter()
        for itr, (features, bad) in enumerate(self._val_features(loader, cache)):
            for sample in bad:
                skipped.setdefault(sample.path, sample.reason)
            if features is not None:
                logits, labels = self._probe_logits(*features)
                probs = average_views(logits)
                nll = -probs.gather(-1, labels.expand(probs.shape[0], -1).unsqueeze(-1)).clamp(min=1e-12).log()
                metrics.update(probs, labels, nll.squeeze(-1).sum(dim=-1))
            if (itr + 1) % self.log_freq == 0 or itr + 1 == total:
                self._progress("val", itr + 1, total, start, metrics)
        metrics.reduce()
        # Collectives on every rank before anyone raises, so that all ranks agree and none waits forever.
        unreadable: dict[str, str] = {}
        for part in all_gather_objects(skipped):
            for path, reason in part.items():
                unreadable.setdefault(path, reason)
        if metrics.count == 0:
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
                describe_val_samples(metrics.count, len(unreadable)),
                "; ".join(f"{p}: {r}" for p, r in list(unreadable.items())[:3]),
            )
        return [{**r, "unreadable": len(unreadable)} for r in metrics.results()]

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
        self, split: str, done: int, total: int, start: float, metrics: SplitMetrics, lr: float | None = None
    ) -> None:
        if self.rank != 0:
            return
        elapsed = time.perf_counter() - start
        rate = done / max(elapsed, 1e-9)
        eta = (total - done) / rate if total else math.nan
        n = max(int(metrics.sums[0, 3]), 1)
        top1 = 100.0 * float(metrics.sums[:, 0].max()) / n
        extra = f" lr {lr:.2e}" if lr is not None else ""
        logger.info(
            "epoch %d/%d %s [%d/%d] %.2f it/s, eta %.0f s, best top-1 so far (this rank) %.2f%%%s",
            self.epoch + 1, self.cfg.optimization.num_epochs, split, done, total, rate, eta, top1, extra,
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
        csv = self.files.csv_log("results.csv", CSV_COLUMNS, column="epoch", value=self.epoch)
        num_epochs = self.cfg.optimization.num_epochs
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
                    lr, wd = self.schedules[k].lr_at(last_step), self.schedules[k].wd_at(last_step)
                    csv.log(
                        epoch=self.epoch, probe=k, lr=lr, weight_decay=wd, train_loss=t["loss"], train_top1=t["top1"],
                        val_loss=v["loss"], val_top1=v["top1"], val_top5=v["top5"],
                    )  # fmt: skip
            best = self.best_probe()
            if self.rank == 0:
                logger.info(
                    "[epoch %d] train top-1 %.2f%%  val top-1 %.2f%%  top-5 %.2f%%  (probe %d of %d) over %s",
                    self.epoch, train[best]["top1"], val[best]["top1"], val[best]["top5"], best, len(val),
                    describe_val_samples(int(val[best]["samples"]), int(val[best].get("unreadable", 0))),
                )  # fmt: skip
            self.save()
            self.write_summary()
        if not self.history:
            self.history.append(EpochResult(self.epoch, [], self.evaluate()))
        summary = self.write_summary()
        if self.rank == 0 and summary["top1"] is not None:
            logger.info(
                "%s (%s), encoder %s: top-1 %.2f%%, top-5 %.2f%% over %s",
                summary["eval_name"], summary["tag"], self.encoder_id, summary["top1"], summary["top5"],
                describe_val_samples(summary["val_samples"], summary["val_unreadable"]),
            )  # fmt: skip
        return summary

    def summary(self) -> dict[str, Any]:
        best = self.best_probe()
        last = self.history[-1] if self.history else None
        probes = []
        for k, h in enumerate(self.hparams):
            row = {"probe": k, **to_dict(h)}
            if last is not None:
                row.update({f"val_{m}": last.val[k][m] for m in ("top1", "top5", "loss")})
                row["best_epoch_val_top1"] = max(e.val[k]["top1"] for e in self.history)
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
            "top1": last.val[best]["top1"] if last else None,
            "top5": last.val[best]["top5"] if last else None,
            "probes": probes,
            "config": to_dict(self.cfg),
        }

    def write_summary(self) -> dict[str, Any]:
        summary = self.summary()
        if self.rank == 0:
            atomic_write(self.folder / "results.json", lambda f: f.write(json.dumps(summary, indent=2) + "\n"), "w")
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
    """One frozen eval end to end: encoder, data (``make_data(cfg, rank, world_size) -> (train, val,
    num_classes)``; train is None with ``val_only``), probes, training (or, with ``val_only``, one evaluation of
    the saved probes), results. ``resume`` forces resuming (a requeued job)."""
    from evals.encoder import FrozenTokens, build_frozen_encoder, make_encode

    device = torch.device(device)
    if cfg.val_only:
        cfg.find_probe_checkpoint()  # a missing probe file fails here, before the encoder and the data are built
    torch.manual_seed(cfg.pretrain.seed)
    encoder, source = build_frozen_encoder(cfg)
    tokens = FrozenTokens(
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
    trainer = ProbeTrainer(
        cfg, make_encode(tokens, device), train, val, embed_dim=tokens.embed_dim, num_heads=tokens.num_heads,
        num_classes=num_classes, device=device, rank=rank, world_size=world_size, encoder_source=source,
    )  # fmt: skip
    return trainer.run(resume=resume)
