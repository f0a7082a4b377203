"""Time of one full JEPA pretraining step: the trainer's own ``train_step`` on random input with the papers' masks.

    python benchmarks/train_step.py --modality image --model vit_tiny --crop 224 --batch 8 --steps 6 --warmup 2
    python benchmarks/train_step.py --modality video --model vit_tiny --crop 112 --frames 16 --batch 4 --dtype auto

A step is ``app.pretrain.Pretrainer.train_step`` as training runs it: schedules, target-encoder forward, context
encoder and predictor under autocast, loss, backward, per-network gradient clipping, AdamW, EMA update. The trainer is
built from a config of these settings (its data set replaced by a stand-in: the input is one random batch, and the
masks are the config's mask collator's, drawn for every step before the timed region, as DataLoader workers draw
them). Masks: I-JEPA's 4 targets of scale 0.15-0.2 (aspect 0.75-1.5) and a context of 0.85-1.0; V-JEPA's 8 blocks of
0.15 and 2 blocks of 0.7 spanning all time steps. Predictor: depth 6 (image) / 4 (video), width 96.

The FLOPs of one step (forward and backward; the optimizer adds none) are counted once with
``torch.utils.flop_counter.FlopCounterMode`` (with formulas for the CPU attention kernels, which it lacks), in an
extra step before the warm-up; masks differ from step to step, and so do the FLOPs a little (``flop_step_tokens``:
the counted step's token counts, ``context_tokens`` / ``target_tokens``: the timed steps' means).

``--compile`` wraps the encoder, target encoder and predictor in ``torch.compile`` after that count; the compile time
is the warm-up steps' time beyond as many timed steps (a timed step may still recompile for a new mask length: see
``ms_max`` and ``compiled_graphs``). A compile that fails is reported in the JSON line
(``compile_error``) and the step is timed without it (``compiled: false``).

The last line of stdout is one JSON object: ``ms_per_step`` (median over the timed steps), ``samples_per_s``,
``gflop_per_step``, ``achieved_gflops``, ``peak_mem_mb`` (CUDA max allocated, or the process's max RSS on CPU;
``mem_before_steps_mb``: the same before the first step: imports, model, optimizer), ``params_m`` (encoder +
predictor), ``dtype``, ``device``, the machine (``cpu``, ``cpu_capability``, ``threads``, ``torch``, ``load_1m``)
and the settings. ``--threads`` sets torch's thread count (default: torch's, e.g. from OMP_NUM_THREADS).
"""

import argparse
import json
import logging
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn
from torch._dynamo.utils import counters
from torch.utils.flop_counter import FlopCounterMode, flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app.pretrain  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from jepa.config import PretrainConfig  # noqa: E402
from jepa.config.strict import from_dict  # noqa: E402
from jepa.image.masks import MultiblockMaskCollator2D  # noqa: E402
from jepa.masks.collate import MaskCollator  # noqa: E402
from jepa.runtime.precision import resolve_dtype  # noqa: E402
from jepa.training.builders import mask_sets  # noqa: E402
from jepa.training.meta_arch import MaskSet  # noqa: E402
from jepa.video.masks import MultiblockMaskCollator3D  # noqa: E402

logger = logging.getLogger("train_step")

IJEPA_MASK = dict(
    allow_overlap=False, aspect_ratio=[0.75, 1.5], enc_mask_scale=[0.85, 1.0], pred_mask_scale=[0.15, 0.2],
    min_keep=10, num_enc_masks=1, num_pred_masks=4,
)  # fmt: skip
VJEPA_MASKS = [
    dict(aspect_ratio=[0.75, 1.5], num_blocks=8, spatial_scale=[0.15, 0.15], temporal_scale=[1.0, 1.0]),
    dict(aspect_ratio=[0.75, 1.5], num_blocks=2, spatial_scale=[0.7, 0.7], temporal_scale=[1.0, 1.0]),
]
PREDICTOR = {"image": dict(depth=6, width=96), "video": dict(depth=4, width=96)}

aten = torch.ops.aten


def _takes_tensors(formula: Callable[..., int]) -> Callable[..., int]:
    """A registered FLOP formula (which takes the op's tensors) as ``FlopCounterMode(custom_mapping=...)`` takes
    one that is not to be wrapped in its shape conversion again."""

    def count(*args: Any, **kwargs: Any) -> int:
        return formula(*args, **kwargs)

    count._get_raw = True  # type: ignore[attr-defined]
    return count


# SDPA on CPU runs as its own fused kernels, which FlopCounterMode has no formula for (it would count 0); their
# arguments start like those of the CUDA kernels it knows: (grad_out,) query, key, value.
CPU_SDPA_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _takes_tensors(
        flop_registry[aten._scaled_dot_product_flash_attention]
    ),
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _takes_tensors(
        flop_registry[aten._scaled_dot_product_flash_attention_backward]
    ),
}
COMPILED = ("encoder", "target_encoder", "predictor")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modality", choices=["image", "video"], default="image")
    p.add_argument("--model", default="vit_tiny", help="a released size (vit_tiny, vit_small, vit_base, ...)")
    p.add_argument("--embed-dim", type=int, default=None, help="custom size, not --model: + --depth --heads")
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--crop", type=int, default=224, help="image / frame side in pixels")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    p.add_argument("--frames", type=int, default=16, help="video: frames per clip")
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--tubelet", type=int, default=2, help="video: frames per tubelet")
    p.add_argument("--pred-depth", type=int, default=None, help="default: 6 (image), 4 (video)")
    p.add_argument("--pred-dim", type=int, default=None, help="default: 96")
    p.add_argument("--clip-grad", type=float, default=10.0, help="per-network gradient clipping; 0: none")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "auto"], default="float32")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoders and the predictor")
    p.add_argument(
        "--activation-checkpointing", action="store_true",
        help="recompute each block's activations in the backward (model.use_activation_checkpointing)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", type=int, default=0, metavar="K", help="profile the timed steps; report the K top ops")
    args = p.parse_args(argv)
    custom = (args.embed_dim, args.depth, args.heads)
    if any(v is not None for v in custom) and None in custom:
        p.error("a custom size needs all of --embed-dim, --depth and --heads")
    for name in ("batch", "steps", "crop", "patch", "frames", "tubelet"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < (1 if args.compile else 0):
        p.error("--warmup must be >= 0, and >= 1 with --compile (the first warm-up step compiles)")
    return args


def build_config(args: argparse.Namespace, dtype: torch.dtype, folder: str) -> PretrainConfig:
    """The pretraining config of the benchmark's settings, in the resolved ``dtype``, training ``folder``. Its data
    set is a built-in one, which :func:`build_trainer` replaces by a stand-in without loading it."""
    video = args.modality == "video"
    pred = PREDICTOR[args.modality]
    if args.embed_dim is None:
        size: dict[str, Any] = {"model_name": args.model}
    else:
        size = dict(model_name=None, embed_dim=args.embed_dim, depth=args.depth, num_heads=args.heads)
    # I-JEPA's min_keep of 10 tokens on its 14 x 14 grid; less on small grids, where no 10-token target fits.
    min_keep = max(1, min(IJEPA_MASK["min_keep"], (args.crop // args.patch) ** 2 // 16))
    raw = {
        "app": "vjepa" if video else "ijepa",
        "data": dict(
            dataset_type="moving_digits" if video else "digits", batch_size=args.batch, crop_size=args.crop,
            patch_size=args.patch, num_frames=args.frames, tubelet_size=args.tubelet, num_workers=0, pin_mem=False,
        ),
        "logging": {"folder": folder},
        "mask": VJEPA_MASKS if video else {**IJEPA_MASK, "min_keep": min_keep},
        "meta": {"seed": args.seed, "dtype": str(dtype).removeprefix("torch."), "use_sdpa": True},
        "model": dict(
            size, pred_depth=args.pred_depth or pred["depth"], pred_embed_dim=args.pred_dim or pred["width"],
            uniform_power=video, use_mask_tokens=True, zero_init_mask_tokens=True,
            use_activation_checkpointing=args.activation_checkpointing,
        ),
        # Clipping from the first step (no warmup epochs), so that every timed step clips.
        "optimization": dict(
            epochs=1, ipe=args.warmup + args.steps + 1, warmup=0, clip_grad=args.clip_grad or None,
            ema=[0.996, 1.0],
        ),
    }  # fmt: skip
    return from_dict(PretrainConfig, raw)


def mask_collator(cfg: PretrainConfig, seed: int) -> MaskCollator:
    """The mask collator the trainer's loader would use (as ``jepa.training.builders`` builds it)."""
    d = cfg.data
    if cfg.is_video:
        assert isinstance(cfg.mask, list)
        return MultiblockMaskCollator3D(
            cfg.mask, crop_size=d.crop_size, num_frames=d.num_frames, patch_size=d.patch_size,
            tubelet_size=d.tubelet_size, seed=seed,
        )  # fmt: skip
    assert not isinstance(cfg.mask, list)
    return MultiblockMaskCollator2D(cfg.mask, input_size=d.crop_size, patch_size=d.patch_size, seed=seed)


class _StandIn(torch.utils.data.Dataset):
    """A data set of ``n`` empty samples: the trainer wants one to build its loader, which the benchmark never reads."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        return 0, 0, index


def build_trainer(cfg: PretrainConfig, device: torch.device) -> app.pretrain.Pretrainer:
    """The trainer of ``cfg`` on ``device``, with a stand-in data set (the input is random; no file is read)."""

    def stand_in(cfg: PretrainConfig, seed: int) -> tuple[_StandIn, MaskCollator]:
        return _StandIn(cfg.data.batch_size), mask_collator(cfg, seed)

    with mock.patch.object(app.pretrain, "build_dataset_and_collator", stand_in):
        return app.pretrain.Pretrainer(cfg, device)


def draw_masks(cfg: PretrainConfig, count: int, device: torch.device) -> list[list[MaskSet]]:
    """The mask sets of ``count`` batches (batch ``k`` holds samples ``k * B ... k * B + B - 1``), on ``device``."""
    collator, batch = mask_collator(cfg, cfg.meta.seed), cfg.data.batch_size
    out = []
    for k in range(count):
        _, enc, pred = collator([(k * batch + b,) for b in range(batch)])
        out.append(mask_sets(cfg, [m.to(device) for m in enc], [m.to(device) for m in pred]))
    return out


def random_input(cfg: PretrainConfig, device: torch.device, seed: int) -> torch.Tensor:
    """A normalised-looking batch: ``[B, 3, H, W]`` images or ``[B, 3, T, H, W]`` clips of N(0, 1) pixels."""
    d = cfg.data
    shape = (d.batch_size, 3, d.num_frames, d.crop_size, d.crop_size) if cfg.is_video else (
        d.batch_size, 3, d.crop_size, d.crop_size)  # fmt: skip
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)


def count_flops(trainer: app.pretrain.Pretrainer, x: torch.Tensor, sets: list[MaskSet]) -> int:
    """FLOPs of one training step (forward and backward), running it."""
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        trainer.train_step(x, sets)
    return counter.get_total_flops()


def compile_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Replace the encoder, target encoder and predictor of the JEPA module by ``torch.compile`` wrappers (they
    share the parameters, so the optimizer and the EMA update are unchanged); returns the originals."""
    originals = {name: getattr(model, name) for name in COMPILED}
    for name, module in originals.items():
        setattr(model, name, torch.compile(module))
    return originals


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(trainer: app.pretrain.Pretrainer, x: torch.Tensor, batches: list[list[MaskSet]]) -> list[float]:
    """Seconds of each step, one per mask batch."""
    times = []
    for sets in batches:
        _sync(trainer.device)
        start = time.perf_counter()
        trainer.train_step(x, sets)
        _sync(trainer.device)
        times.append(time.perf_counter() - start)
    return times


def token_counts(batches: list[list[MaskSet]]) -> dict[str, list]:
    """Mean tokens per sample over ``batches``: ``context_tokens[i]``, the context of mask set ``i`` (each set has
    one context mask); ``target_tokens[i][j]``, its target ``j``."""

    def mean(lengths: list[int]) -> float:
        return round(statistics.mean(lengths), 1)

    sets = range(len(batches[0]))
    return {
        "context_tokens": [mean([b[i][0][0].shape[1] for b in batches]) for i in sets],
        "target_tokens": [
            [mean([b[i][1][j].shape[1] for b in batches]) for j in range(len(batches[0][i][1]))] for i in sets
        ],
    }


def profiled_steps(
    trainer: app.pretrain.Pretrainer, x: torch.Tensor, batches: list[list[MaskSet]], top: int
) -> tuple[list[float], list[dict[str, Any]]]:
    """:func:`timed_steps` under the torch profiler; also the ``top`` ops by self time, in ms per step (CPU, and
    CUDA on a GPU). The table goes to stderr."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        times = timed_steps(trainer, x, batches)
    key = "self_device_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    print(prof.key_averages().table(sort_by=key, row_limit=top), file=sys.stderr)
    n = len(batches)
    rows = [
        {"op": e.key, "self_ms_per_step": round(getattr(e, key) / 1000 / n, 2), "calls_per_step": e.count / n}
        for e in events[:top]
    ]
    return times, rows


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build, count, warm up and time; the JSON line's fields."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device, what="--dtype")
    with tempfile.TemporaryDirectory() as folder:  # the trainer's run folder; nothing is written into it
        cfg = build_config(args, dtype, folder)
        trainer = build_trainer(cfg, device)
    model = trainer.model
    x = random_input(cfg, device, args.seed)
    batches = draw_masks(cfg, 1 + args.warmup + args.steps, device)

    baseline_mb = peak_memory_mb(device)
    flops = count_flops(trainer, x, batches[0])
    compiled, compile_error, originals = False, None, {}
    if args.compile:
        originals = compile_modules(model)
        compiled = True
    warm = batches[1 : 1 + args.warmup]
    try:
        warm_times = timed_steps(trainer, x, warm)
    except Exception as e:  # noqa: BLE001  (reported in the JSON line; the step is then timed without compile)
        if not args.compile:
            raise
        compile_error = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        logger.error("torch.compile failed, timing the step without it: %s", compile_error)
        for name, module in originals.items():
            setattr(model, name, module)
        compiled = False
        warm_times = timed_steps(trainer, x, warm)
    timed = batches[1 + args.warmup :]
    profile = None
    if args.profile:
        times, profile = profiled_steps(trainer, x, timed, args.profile)
    else:
        times = timed_steps(trainer, x, timed)
    ms = 1000 * statistics.median(times)
    gflop = flops / 1e9
    d, m = cfg.data, cfg.model
    tokens = (d.num_frames // d.tubelet_size if cfg.is_video else 1) * (d.crop_size // d.patch_size) ** 2
    params = sum(p.numel() for module in (model.encoder, model.predictor) for p in module.parameters())
    result: dict[str, Any] = {
        "case": f"train_step_{args.modality}",
        "ms_per_step": round(ms, 2),
        "ms_min": round(1000 * min(times), 2),
        "ms_max": round(1000 * max(times), 2),
        "samples_per_s": round(d.batch_size / (ms / 1000), 3),
        "gflop_per_step": round(gflop, 3),
        "achieved_gflops": round(gflop / (ms / 1000), 2),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "mem_before_steps_mb": round(baseline_mb, 1),
        "activation_checkpointing": args.activation_checkpointing,
        "params_m": round(params / 1e6, 3),
        "dtype": str(trainer.dtype).removeprefix("torch."),  # what the trainer autocasts to
        "dtype_requested": args.dtype,
        "device": str(device),
        **machine_info(device),
        "modality": args.modality,
        "model": m.model_name or "custom",
        **m.size,
        "crop": d.crop_size,
        "patch": d.patch_size,
        "frames": d.num_frames if cfg.is_video else 1,
        "tubelet": d.tubelet_size if cfg.is_video else 1,
        "tokens": tokens,
        **token_counts(batches[1 + args.warmup :]),
        "flop_step_tokens": token_counts(batches[:1]),  # those of the step whose FLOPs were counted
        "batch": d.batch_size,
        "pred_depth": m.pred_depth,
        "pred_dim": m.pred_embed_dim,
        "clip_grad": cfg.optimization.clip_grad,
        "steps": args.steps,
        "warmup": args.warmup,
        "compile": args.compile,
        "compiled": compiled,
        "loss_finite": not bool(trainer.nonfinite),
    }
    if profile is not None:
        result["profile"] = profile  # the timings above are then the profiled steps' (slower)
    if args.compile:
        # The warm-up steps' time beyond as many ordinary steps: compiling (and recompiling for new mask lengths).
        result["compile_s"] = round(sum(warm_times) - len(warm_times) * ms / 1000, 2) if compiled else None
        result["compile_error"] = compile_error
        # Mask lengths change from step to step: a new length recompiles once, then shapes are dynamic.
        result["compiled_graphs"] = counters["stats"]["unique_graphs"]
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(run(parse_args(argv))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
