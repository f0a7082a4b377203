"""Reading and writing checkpoints in the official JEPA layout, and building frozen models from them.

A training checkpoint is a dict with ``encoder``, ``predictor``, ``target_encoder``, ``opt``, ``scaler``, ``epoch``,
``loss``, ``batch_size``, ``world_size`` and ``lr``; a probe checkpoint holds ``classifier`` (V-JEPA) or a list
``classifiers`` (V-JEPA 2). Weights saved from DDP or wrapped models carry ``module.`` / ``backbone.`` prefixes,
which are stripped here, in one place. Loading is strict: a missing or unexpected key, or a shape that does not
match, is an error that lists them.
"""

import logging
import math
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from jepa.models.attentive_pooler import AttentiveClassifier
from jepa.models.pos_embed import Grid, interpolate_pos_embed
from jepa.models.predictor import VisionTransformerPredictor, vit_predictor
from jepa.models.vision_transformer import VIT_SIZES, VisionTransformer, build_vit, to_hw

logger = logging.getLogger(__name__)

PathOrState = str | os.PathLike | Mapping[str, Any]
_PREFIXES = ("module.", "backbone.")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not fit the model; the message names the file and the keys."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file onto the CPU (tensors only unless the file needs more)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Older official files pickle a few non-tensor objects (e.g. NumPy scalars); they are trusted inputs here.
        logger.warning("%s holds non-tensor objects; loading it with full unpickling", path)
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable or truncated: {e}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is unreadable or truncated: {e}") from e


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file)`` atomically: a temporary file in the same folder, flushed and synced,
    then renamed over ``path`` (readers see the old file or the new one, never a partial one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual mode
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``obj`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(dict(obj), f))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def strip_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove leading ``module.`` / ``module.backbone.`` / ``backbone.`` from every key."""
    out = {}
    for key, value in state_dict.items():
        name = key
        while name.startswith(_PREFIXES):
            name = name.split(".", 1)[1]
        if name in out:
            raise CheckpointError(f"keys {key!r} and another one both map to {name!r} once prefixes are stripped")
        out[name] = value
    return out


def _source(path_or_state: PathOrState) -> str:
    return str(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else "the given state dict"


def _is_state_dict(obj: Mapping[str, Any]) -> bool:
    return len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def extract_state_dict(path_or_state: PathOrState, keys: tuple[str, ...], index: int = 0) -> dict[str, Tensor]:
    """The weights stored under the first of ``keys`` present (a list under it is indexed with ``index``), or
    the object itself when it already is a plain state dict. Prefixes are stripped."""
    source = _source(path_or_state)
    obj = read_checkpoint(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else path_or_state
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, expected a dict")
    for key in keys:
        if key in obj:
            value = obj[key]
            if isinstance(value, (list, tuple)):
                if not 0 <= index < len(value):
                    raise CheckpointError(f"{source}: '{key}' holds {len(value)} entries, index {index} asked")
                value = value[index]
            if not isinstance(value, Mapping):
                raise CheckpointError(f"{source}: '{key}' holds a {type(value).__name__}, expected a state dict")
            return strip_prefixes(value)
    if _is_state_dict(obj):
        return strip_prefixes(obj)
    raise CheckpointError(f"{source} has no {' or '.join(repr(k) for k in keys)}; its keys are {sorted(obj)}")


def load_strict(model: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """``model.load_state_dict`` that reports every missing, unexpected and mis-shaped key at once."""
    expected = model.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: shape mismatch for " + "; ".join(mismatched)
        )
    result = model.load_state_dict(state_dict, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys {result.missing_keys}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys {result.unexpected_keys}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))


def _freeze(model: nn.Module) -> nn.Module:
    model.requires_grad_(False)
    return model.eval()


def _count_indexed(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)(?:\.|$)")
    ids = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    return max(ids) + 1 if ids else 0


def _grid_from_table(n: int, video: bool, patch_size: int, tubelet_size: int, kwargs: dict[str, Any]) -> dict:
    """``img_size`` / ``num_frames`` that give a position table of ``n`` tokens, from what the caller fixed.

    An image table is taken as square. A video table's split between time and space is ambiguous, so one of
    ``num_frames`` / ``img_size`` must be given.
    """
    if "img_size" in kwargs:
        if not video or "num_frames" in kwargs:
            return {}
        h, w = to_hw(kwargs["img_size"])
        spatial = (h // patch_size) * (w // patch_size)
        if n % spatial:
            raise CheckpointError(f"a {n}-token video position table does not fit img_size={h}x{w}; pass num_frames")
        return {"num_frames": n // spatial * tubelet_size}
    if video and "num_frames" not in kwargs:
        raise CheckpointError(f"cannot tell the token grid of a {n}-token video position table; pass num_frames=")
    t = kwargs["num_frames"] // tubelet_size if video else 1
    side = math.isqrt(n // t)
    if n % t or side * side * t != n:
        raise CheckpointError(f"a {n}-token position table is not a square grid over {t} time steps; pass img_size=")
    return {"img_size": side * patch_size}


def _source_grid(n: int, target: Grid) -> Grid:
    t, h, w = target
    if n % t == 0 and math.isqrt(n // t) ** 2 == n // t:
        side = math.isqrt(n // t)
        return t, side, side
    if n % (h * w) == 0:
        return n // (h * w), h, w
    raise CheckpointError(f"cannot resample a {n}-token position table to the grid {target}")


def _fit_table(state_dict: dict[str, Tensor], key: str, model: nn.Module, video: bool, source: str) -> None:
    table = getattr(model, key, None)
    if key not in state_dict or table is None or state_dict[key].shape == table.shape:
        return
    src = _source_grid(state_dict[key].shape[1], model.grid)
    logger.info("%s: resampling %s from token grid %s to %s", source, key, src, model.grid)
    state_dict[key] = interpolate_pos_embed(state_dict[key], src, model.grid, video)


def _mlp_kwargs(state_dict: Mapping[str, Tensor], prefix: str, width: int) -> dict[str, Any]:
    if f"{prefix}.mlp.fc3.weight" in state_dict:
        return {"use_silu": True}
    fc1 = state_dict.get(f"{prefix}.mlp.fc1.weight")
    return {} if fc1 is None else {"mlp_ratio": fc1.shape[0] / width}


def encoder_kwargs_from_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Architecture keywords readable from encoder weights (everything but the number of heads and the norm eps)."""
    if "patch_embed.proj.weight" not in state_dict:
        raise CheckpointError(f"not encoder weights: no patch_embed.proj.weight among {sorted(state_dict)[:8]}...")
    w = state_dict["patch_embed.proj.weight"]
    video = w.dim() == 5
    out: dict[str, Any] = {
        "embed_dim": w.shape[0],
        "in_chans": w.shape[1],
        "patch_size": w.shape[-1],
        "depth": _count_indexed(state_dict, "blocks."),
        "qkv_bias": "blocks.0.attn.qkv.bias" in state_dict,
        "use_rope": "pos_embed" not in state_dict,
    }
    if video:
        out["tubelet_size"] = w.shape[2]
    out.update(_mlp_kwargs(state_dict, "blocks.0", w.shape[0]))
    return out


def _released_size(embed_dim: int, depth: int, use_rope: bool) -> str | None:
    names = [n for n, c in VIT_SIZES.items() if (c["embed_dim"], c["depth"]) == (embed_dim, depth)]
    if len(names) > 1:
        # Width 1408 / 1664: V-JEPA 2's RoPE giants use the 22/26-head "xformers" layout, I-JEPA's the 16-head one.
        names = [n for n in names if n.endswith("_xformers") == use_rope]
    return names[0] if names else None


def load_encoder(
    path_or_state: PathOrState,
    *,
    which: str = "target_encoder",
    model_name: str | None = None,
    **model_kwargs: Any,
) -> VisionTransformer:
    """A frozen :class:`VisionTransformer` in eval mode, from a checkpoint file or a loaded dict.

    Args:
        path_or_state: a training checkpoint (``encoder`` / ``target_encoder`` inside), a dict loaded from one, or
            a plain encoder state dict.
        which: ``"target_encoder"`` (the EMA weights, what the papers evaluate) or ``"encoder"``.
        model_name: a released size (``"vit_large"``, ...). When omitted, the width and depth read from the weights
            pick a released size if one matches, otherwise :class:`VisionTransformer` is built from the weights'
            shapes and ``model_kwargs`` (which must then give ``num_heads``).
        **model_kwargs: any :class:`VisionTransformer` keyword (``img_size``, ``num_frames``, ``use_sdpa``, ...);
            they override what is read from the weights. A position table of another resolution is resampled.
    """
    if which not in ("target_encoder", "encoder"):
        raise ValueError(f"which must be 'target_encoder' or 'encoder', got {which!r}")
    source = _source(path_or_state)
    state_dict = extract_state_dict(path_or_state, (which,))
    inferred = encoder_kwargs_from_state_dict(state_dict)
    video = "tubelet_size" in inferred
    merged = {**inferred, **model_kwargs}
    if not inferred["use_rope"]:
        tub = merged.get("tubelet_size", 2)
        merged.update(_grid_from_table(state_dict["pos_embed"].shape[1], video, merged["patch_size"], tub, merged))
    elif video:
        merged.setdefault("num_frames", 16)
    if model_name is None:
        model_name = _released_size(inferred["embed_dim"], inferred["depth"], inferred["use_rope"])
        if (
            model_name is not None
            and model_kwargs.get("num_heads", VIT_SIZES[model_name]["num_heads"])
            == (VIT_SIZES[model_name]["num_heads"])
        ):
            logger.info("%s: weights match the released size %s", source, model_name)
            model_kwargs = {k: v for k, v in model_kwargs.items() if k != "num_heads"}
            merged.pop("num_heads", None)
        else:
            model_name = None
    if model_name is not None:
        size_keys = VIT_SIZES[model_name].keys()
        model = build_vit(model_name, **{k: v for k, v in merged.items() if k not in size_keys or k in model_kwargs})
    else:
        if "num_heads" not in merged:
            raise CheckpointError(
                f"{source}: width {inferred['embed_dim']} / depth {inferred['depth']} is not a released size and the "
                "number of heads cannot be read from weights; pass num_heads= (or model_name=)"
            )
        model = VisionTransformer(**merged)
    _fit_table(state_dict, "pos_embed", model, model.is_video, source)
    load_strict(model, state_dict, f"{source} [{which}]")
    return _freeze(model)


def load_predictor(path_or_state: PathOrState, **predictor_kwargs: Any) -> VisionTransformerPredictor:
    """A frozen predictor (eval mode) from a training checkpoint's ``predictor`` or a plain state dict.

    Widths, depth, the number of mask tokens and RoPE are read from the weights; ``num_heads`` must be given (the
    official code sets it from the encoder). The token grid comes from ``img_size`` / ``patch_size`` /
    ``num_frames`` / ``tubelet_size`` (or I-JEPA's ``num_patches``); for a position table they default to the
    grid the table was built for. Built like the official ``vit_predictor`` (LayerNorm eps 1e-6) unless
    ``norm_layer`` is given.
    """
    source = _source(path_or_state)
    state_dict = extract_state_dict(path_or_state, ("predictor",))
    if "predictor_embed.weight" not in state_dict:
        raise CheckpointError(f"{source}: not predictor weights (no predictor_embed.weight)")
    if "num_heads" not in predictor_kwargs:
        raise CheckpointError(f"{source}: the predictor's number of heads cannot be read from weights; pass num_heads=")
    embed = state_dict["predictor_embed.weight"]
    n_tokens = _count_indexed(state_dict, "mask_tokens.") or int("mask_token" in state_dict)
    inferred: dict[str, Any] = {
        "embed_dim": embed.shape[1],
        "predictor_embed_dim": embed.shape[0],
        "depth": _count_indexed(state_dict, "predictor_blocks."),
        "num_mask_tokens": max(n_tokens, 1),
        "qkv_bias": "predictor_blocks.0.attn.qkv.bias" in state_dict,
        "use_rope": "predictor_pos_embed" not in state_dict,
        **_mlp_kwargs(state_dict, "predictor_blocks.0", embed.shape[0]),
    }
    merged = {**inferred, **predictor_kwargs}
    if "num_patches" not in merged:
        if inferred["use_rope"]:
            if "img_size" not in merged or "patch_size" not in merged:
                raise CheckpointError(f"{source}: a RoPE predictor needs img_size= and patch_size= (its token grid)")
        else:
            n = state_dict["predictor_pos_embed"].shape[1]
            patch = merged.setdefault("patch_size", 16)
            if "num_frames" in merged:
                video = merged["num_frames"] > 1
            elif "img_size" in merged:
                h, w = to_hw(merged["img_size"])
                video = n != (h // patch) * (w // patch)
            else:
                video = math.isqrt(n) ** 2 != n
            merged.update(_grid_from_table(n, video, patch, merged.get("tubelet_size", 2), merged))
    model = vit_predictor(**merged)
    _fit_table(state_dict, "predictor_pos_embed", model, model.is_video, source)
    load_strict(model, state_dict, f"{source} [predictor]")
    return _freeze(model)


def load_classifier(path_or_state: PathOrState, *, index: int = 0, **classifier_kwargs: Any) -> AttentiveClassifier:
    """A frozen :class:`AttentiveClassifier` from a probe checkpoint (``classifier``, or ``classifiers[index]``).

    Width, depth and classes are read from the weights; ``num_heads`` defaults to 16 (both releases' probes). A
    V-JEPA 1 file (it carries the unapplied ``xattn.proj``) runs its extra blocks over the queries, as V-JEPA 1
    did; pass ``blocks_on_queries`` to override.
    """
    source = _source(path_or_state)
    state_dict = extract_state_dict(path_or_state, ("classifier", "classifiers"), index=index)
    if "pooler.query_tokens" not in state_dict or "linear.weight" not in state_dict:
        raise CheckpointError(f"{source}: not attentive-probe weights (no pooler.query_tokens / linear.weight)")
    embed_dim = state_dict["pooler.query_tokens"].shape[-1]
    inferred: dict[str, Any] = {
        "embed_dim": embed_dim,
        "num_classes": state_dict["linear.weight"].shape[0],
        "depth": _count_indexed(state_dict, "pooler.blocks.") + 1,
        "qkv_bias": "pooler.cross_attention_block.xattn.q.bias" in state_dict,
        "blocks_on_queries": "pooler.cross_attention_block.xattn.proj.weight" in state_dict,
    }
    fc1 = state_dict.get("pooler.cross_attention_block.mlp.fc1.weight")
    if fc1 is not None:
        inferred["mlp_ratio"] = fc1.shape[0] / embed_dim
    merged = {**inferred, **classifier_kwargs}
    if "num_heads" not in merged:
        if embed_dim % 16:
            raise CheckpointError(f"{source}: pass num_heads= (width {embed_dim} does not split into 16 heads)")
        merged["num_heads"] = 16
        logger.info("%s: probe num_heads not given; using 16, as both official releases do", source)
    model = AttentiveClassifier(**merged)
    load_strict(model, state_dict, f"{source} [classifier]")
    return _freeze(model)
