"""Reading and writing checkpoints in the official JEPA layout, and building frozen models from them.

A training checkpoint is a dict with ``encoder``, ``predictor``, ``target_encoder``, ``opt``, ``scaler``, ``epoch``,
``loss``, ``batch_size``, ``world_size`` and ``lr``; a probe checkpoint holds ``classifier`` (V-JEPA) or a list
``classifiers`` (V-JEPA 2). Weights saved from DDP or wrapped models carry ``module.`` / ``backbone.`` prefixes,
which are stripped here, in one place. Loading is strict: a missing or unexpected key, or a shape that does not
match, is an error that lists them.

No code runs from a checkpoint. :func:`read_checkpoint` is the one place that opens checkpoint files, and it never
fully unpickles: ``torch.save`` files load with ``torch.load(weights_only=True)``, which builds only tensors, plain
containers, numbers and strings. The official releases also pickle a few NumPy scalars (their ``loss`` / ``lr``),
so :data:`SAFE_GLOBALS` allows exactly these, and only for the duration of the load
(``torch.serialization.safe_globals``; importing this module registers nothing):

* ``numpy.core.multiarray.scalar`` and ``numpy._core.multiarray.scalar`` (one function, NumPy 1 and NumPy 2 paths:
  what a NumPy scalar pickles as);
* ``numpy.dtype``;
* the dtype class of each numeric type (``type(numpy.dtype(c))`` for the codes ``?bBhHiIlLqQefdgFDG``, e.g.
  ``numpy.dtypes.Float64DType``), which unpickling a dtype instantiates.

Any other global a file asks for (a class, ``os.system``, ``getattr``, ...) is a :class:`CheckpointError` naming the
file and the global. Files that are not checkpoints at all (text, an empty or truncated file) are errors that name
the file and say what was expected.

``.safetensors`` files (weights only, the ecosystem's safe format) are read too, so every loader here, ``jepa.hub``'s
``checkpoint=`` and ``jepa.extract`` take them unchanged; :func:`save_safetensors` exports one network of a
checkpoint to one (with the run's config as JSON metadata).

Writes are atomic (:func:`atomic_write`: a temporary ``.{name}.XXXXXXXX.tmp`` renamed over the file); an interrupted
writer's leftovers are removed by :func:`remove_stale_tmp`.
"""

import errno
import importlib
import json
import logging
import math
import os
import pickle
import re
import struct
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from jepa.config.spec import EncoderSpec, ModelSpec
from jepa.models.attentive_pooler import AttentiveClassifier
from jepa.models.builder import build_encoder_from_spec, build_predictor_from_spec
from jepa.models.pos_embed import Grid, interpolate_pos_embed
from jepa.models.predictor import VisionTransformerPredictor, vit_predictor
from jepa.models.vision_transformer import VIT_SIZES, VisionTransformer, to_hw

logger = logging.getLogger(__name__)

# A checkpoint file, or what one holds once loaded (a pickled payload: its values are anything torch.load builds).
PathOrState = str | os.PathLike | Mapping[str, Any]
# An allowed global and the name a pickle gives it (torch.serialization.safe_globals' entries).
SafeGlobal = tuple[Callable[..., object], str]
_PREFIXES = ("module.", "backbone.")
M = TypeVar("M", bound=nn.Module)


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not fit the model; the message names the file and the keys."""


def _numpy_safe_globals() -> list[SafeGlobal]:
    """The NumPy entries of :data:`SAFE_GLOBALS` as ``(object, pickled name)`` pairs, resolved for the installed
    NumPy (its scalar function moved from ``numpy.core`` to ``numpy._core`` in NumPy 2; files name either)."""
    try:
        import numpy as np
    except ImportError:  # without NumPy no file can hold NumPy objects
        return []
    scalar = None
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            scalar = importlib.import_module(module).scalar
            break
        except (ImportError, AttributeError):
            continue
    entries: dict[str, Callable[..., object]] = {"numpy.dtype": np.dtype}
    if scalar is not None:
        entries["numpy.core.multiarray.scalar"] = entries["numpy._core.multiarray.scalar"] = scalar
    for code in "?bBhHiIlLqQefdgFDG":
        cls = type(np.dtype(code))
        entries.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
    return [(obj, name) for name, obj in sorted(entries.items())]


# What torch.load(weights_only=True) may build besides tensors, containers, numbers and strings: NumPy scalars and
# dtypes, as the official .pth.tar files hold them. Applied only around each load (see read_checkpoint).
SAFE_GLOBALS: list[SafeGlobal] = _numpy_safe_globals()
_SAFE_GLOBALS_LOCK = threading.Lock()

# torch.save files start with a zip header, or (the legacy format, torch < 1.6) with a pickled magic number.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[2:]
# What torch.load raises for a damaged file of the right format (found by truncating and overwriting bytes of both
# formats): RuntimeError from the zip reader; EOFError, IndexError, KeyError, UnicodeDecodeError and struct.error
# from the unpickler reading garbage. Its UnpicklingError is handled apart (a refused global or a damaged pickle).
_DAMAGED_FILE_ERRORS = (RuntimeError, EOFError, IndexError, KeyError, UnicodeDecodeError, struct.error)
# torch's weights-only unpickler refusing a global or an object it would have to build from one.
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")
_REFUSED_OBJECT = re.compile(r"Can only (?:create new object|build)|unrecognized function")

# save_safetensors' metadata keys (safetensors metadata values are strings), and the checkpoint keys of each network.
_META_NETWORK = "jepa.network"
_META_CONFIG = "jepa.config"
# The entries of a training checkpoint that hold an encoder: the EMA one, the context one, and V-JEPA 2.1's
# distilled releases' `ema_encoder` (the student's EMA weights).
ENCODER_KEYS = ("target_encoder", "encoder", "ema_encoder")
_NETWORK_KEYS = {
    "target_encoder": ("target_encoder",),
    "encoder": ("encoder",),
    "ema_encoder": ("ema_encoder",),
    "predictor": ("predictor",),
    "classifier": ("classifier", "classifiers"),
}


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC


def _file_kind(path: Path) -> str | None:
    """``"torch"``, ``"safetensors"`` or None, from the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_ZIP_MAGIC) or (head[:1] == b"\x80" and head[2:].startswith(_LEGACY_MAGIC[:12])):
        return "torch"
    # safetensors: a little-endian u64 header length, then the JSON header.
    if len(head) > 8 and head[8:9] == b"{" and 8 + struct.unpack("<Q", head[:8])[0] <= path.stat().st_size:
        return "safetensors"
    return None


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint file onto the CPU, without running code from it.

    With ``mmap`` a ``torch.save`` zip file is memory-mapped: tensors are read from disk only when touched, so a
    look at a multi-GB checkpoint's ``config`` costs no full read (the legacy format is read whole).

    ``torch.save`` files load with ``weights_only=True`` (plus :data:`SAFE_GLOBALS`). A ``.safetensors`` file made by
    :func:`save_safetensors` comes back as ``{network: state_dict, "config": ..., "metadata": ...}`` (under the
    official layout's key for its network, so the loaders find it); any other safetensors file as its flat state
    dict.

    Raises:
        CheckpointError: the file is missing, is not a checkpoint, is damaged, or asks for a Python global outside
            :data:`SAFE_GLOBALS` (named in the message).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, expected a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        kind = _file_kind(path)
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from e
    if kind == "safetensors" or path.suffix == ".safetensors":
        return _read_safetensors(path)
    if kind is None:
        what = "is empty (0 bytes)" if path.stat().st_size == 0 else "is not a checkpoint"
        raise CheckpointError(
            f"checkpoint {path} {what}: expected a file written by torch.save (a zip archive, or the legacy pickle "
            "format) or a .safetensors file"
        )
    try:
        # safe_globals edits torch's process-wide list on entry and exit: one load at a time keeps another thread's
        # exit from removing the entries while this load still needs them.
        with _SAFE_GLOBALS_LOCK, torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and _is_zip(path))
    except pickle.UnpicklingError as e:
        raise _unpickling_error(path, str(e)) from e
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from e
    except _DAMAGED_FILE_ERRORS as e:
        detail = f"{type(e).__name__}: {e}" if str(e) else f"{type(e).__name__} (the data ends early)"
        raise CheckpointError(f"checkpoint {path} is damaged or truncated: {detail}") from e


def _unpickling_error(path: Path, message: str) -> CheckpointError:
    if m := _REFUSED_GLOBAL.search(message):
        return CheckpointError(
            f"refusing to load checkpoint {path}: it asks for the Python global {m.group(1)}, which is not on the "
            "allow-list (jepa.checkpoint.SAFE_GLOBALS), because loading it could run code; a checkpoint may hold "
            "only tensors, plain containers, numbers, strings and NumPy scalars"
        )
    found = re.search(r"WeightsUnpickler error:\s*(.+)", message)
    detail = found.group(1).strip() if found else message.strip().splitlines()[-1]
    if _REFUSED_OBJECT.search(message):
        return CheckpointError(
            f"refusing to load checkpoint {path}: building an object it holds could run code ({detail})"
        )
    return CheckpointError(f"checkpoint {path} is damaged or not a torch checkpoint: {detail}")


def _read_safetensors(path: Path) -> dict[str, Any]:
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except safetensors.SafetensorError as e:
        raise CheckpointError(f"checkpoint {path} is not a valid .safetensors file (damaged or truncated?): {e}") from e
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from e
    network = metadata.get(_META_NETWORK)
    if network is None:
        return tensors
    out: dict[str, Any] = {network: tensors, "metadata": metadata}
    if _META_CONFIG in metadata:
        try:
            out["config"] = json.loads(metadata[_META_CONFIG])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"checkpoint {path}: metadata {_META_CONFIG!r} is not JSON: {e}") from e
    return out


def save_safetensors(
    source: PathOrState | nn.Module,
    path: str | os.PathLike,
    *,
    which: str = "target_encoder",
    index: int = 0,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export one network's weights to a weights-only ``.safetensors`` file, atomically (see :func:`atomic_write`).

    The file holds one flat tensor dict (prefixes stripped) and string metadata: ``jepa.network`` (``which``, the
    key :func:`read_checkpoint` puts the weights back under), ``jepa.config`` (the checkpoint's ``config`` as JSON,
    when it has one) and ``metadata``. Every loader reads it like the checkpoint it came from::

        save_safetensors("jepa-latest.pth.tar", "encoder.safetensors")     # the EMA encoder
        encoder = load_encoder("encoder.safetensors", num_heads=16)

    Args:
        source: a checkpoint file, a dict loaded from one, a plain state dict, or a module (its ``state_dict()``).
        path: the file to write.
        which: the network: ``"target_encoder"``, ``"encoder"``, ``"predictor"`` or ``"classifier"`` (a probe
            checkpoint's ``classifier``, or ``classifiers[index]``).
        index: the probe of a ``classifiers`` list.
        metadata: further string entries.
    """
    if which not in _NETWORK_KEYS:
        raise ValueError(f"which must be one of {sorted(_NETWORK_KEYS)}, got {which!r}")
    if isinstance(source, nn.Module):
        source = source.state_dict()
    ckpt = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    weights = extract_state_dict(ckpt, _NETWORK_KEYS[which], index=index)
    tensors: dict[str, Tensor] = {}
    storages: set[int] = set()
    for key, value in weights.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{_source(source)} [{which}]: {key!r} is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu().contiguous()
        ptr = value.untyped_storage().data_ptr()
        # safetensors refuses tensors that share memory (views, tied weights): give each its own copy.
        tensors[key] = value.clone() if ptr in storages else value
        storages.add(ptr)
    meta = {_META_NETWORK: which, **(metadata or {})}
    config = ckpt.get("config") if isinstance(ckpt, Mapping) else None
    if config is not None:
        meta[_META_CONFIG] = json.dumps(config, sort_keys=True)
    data = safetensors.torch.save(tensors, metadata=meta)
    return atomic_write(path, lambda f: f.write(data))


# atomic_write's temporary files: tempfile.mkstemp(prefix=".{name}.", suffix=".tmp") adds 8 characters of
# tempfile's alphabet in between; remove_stale_tmp matches exactly these names.
_TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(_TMP_SUFFIX))


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], object], mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file)`` atomically: a temporary file in the same folder, flushed and synced,
    then renamed over ``path`` (readers see the old file or the new one, never a partial one). The file is opened
    with ``mode``: binary (``IO[bytes]``) or text (``IO[str]``, no newline translation).

    Raises:
        OSError: writing failed (disk full, no permission, read-only file system, ...): the error keeps its errno
            and type, and its message names ``path`` and the errno (ENOSPC says that the disk is full). The
            temporary file is removed and a previous ``path`` is kept.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, mode, newline=None if "b" in mode else "") as f:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual mode
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            _remove_tmp(Path(tmp))
        cause = _os_error_in(e)
        if cause is None:
            raise
        raise _write_error(path, cause) from e
    return path


def _remove_tmp(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError as e:  # keep the write's own error; this one is only worth a line
        logger.warning("could not remove the temporary file %s: %s", tmp, e)


def _os_error_in(e: BaseException) -> OSError | None:
    """``e`` when it is an ``OSError`` with an errno, or the one a ``RuntimeError`` was raised while handling
    (torch.save reports a failed write as ``RuntimeError: ... unexpected pos``, its context the file's error)."""
    cause: BaseException | None = e
    while isinstance(cause, RuntimeError) and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    return cause if isinstance(cause, OSError) and cause.errno is not None else None


def _write_error(path: Path, e: OSError) -> OSError:
    code = e.errno if e.errno is not None else 0  # _os_error_in passes only errors with an errno
    name = errno.errorcode.get(code, f"errno {code}")
    why = {errno.ENOSPC: "the disk is full", getattr(errno, "EDQUOT", -1): "the disk quota is exceeded"}.get(code)
    reason = f"{name}, {why}" if why else name
    err = OSError(e.errno, f"could not write {path}: {reason} ({e.strerror or e})")  # OSError picks the subclass
    err.filename = str(path)
    return err


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` leaves in ``folder`` when its process is killed
    mid-write (``.{name}.XXXXXXXX.tmp``), logging each; returns them. Other files, sub-folders and files of other
    folders are left alone. Call it before anything in this run writes into ``folder``: a file being written
    at that moment by another process would be removed too."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in sorted(folder.iterdir()):
        if _TMP_NAME.fullmatch(p.name) and p.is_file() and not p.is_symlink():
            size = p.stat().st_size
            p.unlink()
            logger.info("removed %s (%d bytes), left by an interrupted checkpoint write", p, size)
            removed.append(p)
    return removed


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


def _is_state_dict(obj: Mapping[str, object]) -> bool:
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
    result = model.load_state_dict(_as_sharded(state_dict, expected), strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys {result.missing_keys}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys {result.unexpected_keys}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))


def _as_sharded(state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """``state_dict`` with each full tensor whose entry in ``expected`` (the model's own state dict) is an FSDP2
    shard (a ``DTensor``) distributed as that entry is: a sharded model loads a full checkpoint, each rank keeping
    its shard. An unsharded model gets ``state_dict`` unchanged."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not any(isinstance(v, DTensor) for v in expected.values()):
        return state_dict
    out: dict[str, Tensor] = {}
    for k, v in state_dict.items():
        own = expected.get(k)
        if isinstance(own, DTensor) and not isinstance(v, DTensor):
            v = distribute_tensor(v.to(own.device, own.dtype), own.device_mesh, own.placements)
        out[k] = v
    return out


def _freeze(model: M) -> M:
    model.requires_grad_(False)
    return model.eval()


def _count_indexed(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)(?:\.|$)")
    ids = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    return max(ids) + 1 if ids else 0


def _grid_from_table(n: int, video: bool, patch_size: int, tubelet_size: int, kwargs: Mapping[str, Any]
                     ) -> dict[str, int]:  # fmt: skip
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


def _fit_table(state_dict: dict[str, Tensor], key: str, model: VisionTransformer | VisionTransformerPredictor,
               video: bool, source: str) -> None:  # fmt: skip
    table = getattr(model, key, None)
    if key not in state_dict or table is None or state_dict[key].shape == table.shape:
        return
    src = _source_grid(state_dict[key].shape[1], model.grid)
    logger.info("%s: resampling %s from token grid %s to %s", source, key, src, model.grid)
    state_dict[key] = interpolate_pos_embed(state_dict[key], src, model.grid, video)


def _mlp_kwargs(state_dict: Mapping[str, Tensor], prefix: str, width: int) -> dict[str, bool | float]:
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
    # V-JEPA 2.1's weights: an image tokenizer, modality embeddings, per-level norms. Only 2.1 has those norms, so
    # they also stand for its RoPE (pairwise layout, positions rescaled to the reference grid), which weights
    # cannot show; keywords override.
    if "patch_embed_img.proj.weight" in state_dict:
        out["img_temporal_dim_size"] = state_dict["patch_embed_img.proj.weight"].shape[2]
    if "img_mod_embed" in state_dict:
        out["modality_embedding"] = True
    if "norms_block.0.weight" in state_dict:
        out["deep_supervision"] = True
        if out["use_rope"]:
            out.update(rope_layout="pairwise", interpolate_rope=out["patch_size"] in (14, 16))
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
    spec: EncoderSpec | ModelSpec | None = None,
    **model_kwargs: Any,
) -> VisionTransformer:
    """A frozen :class:`VisionTransformer` in eval mode, from a checkpoint file or a loaded dict.

    Args:
        path_or_state: a training checkpoint (``encoder`` / ``target_encoder`` inside), a dict loaded from one, or
            a plain encoder state dict.
        which: ``"target_encoder"`` (the EMA weights, what the papers evaluate), ``"encoder"``, or
            ``"ema_encoder"`` (where V-JEPA 2.1's distilled releases keep the student's EMA weights).
        model_name: a released size (``"vit_large"``, ...). When omitted, the width and depth read from the weights
            pick a released size if one matches, otherwise :class:`VisionTransformer` is built from the weights'
            shapes and ``model_kwargs`` (which must then give ``num_heads``).
        spec: the architecture as a :mod:`jepa.config.spec` model spec (from a config, a release or a checkpoint's
            stored config), built as it is by :mod:`jepa.models.builder`; nothing is read from the weights then, and
            ``model_name`` / ``model_kwargs`` are left out.
        **model_kwargs: any :class:`VisionTransformer` keyword (``img_size``, ``num_frames``, ``use_sdpa``, ...);
            they override what is read from the weights. A position table of another resolution is resampled.
    """
    if which not in ENCODER_KEYS:
        raise ValueError(f"which must be one of {', '.join(map(repr, ENCODER_KEYS))}, got {which!r}")
    source = _source(path_or_state)
    state_dict = extract_state_dict(path_or_state, (which,))
    if spec is not None:
        if model_name is not None or model_kwargs:
            raise TypeError("load_encoder: spec= fixes the architecture; leave out model_name and other keywords")
        model = build_encoder_from_spec(spec)
    else:
        model = _encoder_from_weights(state_dict, source, model_name, model_kwargs)
    _fit_table(state_dict, "pos_embed", model, model.is_video, source)
    load_strict(model, state_dict, f"{source} [{which}]")
    return _freeze(model)


def _encoder_from_weights(
    state_dict: Mapping[str, Tensor], source: str, model_name: str | None, model_kwargs: dict[str, Any]
) -> VisionTransformer:
    """The encoder that the weights' shapes, ``model_name`` and ``model_kwargs`` describe (see :func:`load_encoder`),
    as a spec built by the one builder."""
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
    norm_layer = merged.pop("norm_layer", None)
    if model_name is not None:
        size_keys = VIT_SIZES.get(model_name, {}).keys()  # the size's; keywords giving them clash (a TypeError)
        rest = {k: v for k, v in merged.items() if k not in size_keys or k in model_kwargs}
        spec = EncoderSpec.of(model_name, **rest)
    else:
        if "num_heads" not in merged:
            raise CheckpointError(
                f"{source}: width {inferred['embed_dim']} / depth {inferred['depth']} is not a released size and the "
                "number of heads cannot be read from weights; pass num_heads= (or model_name=)"
            )
        # The norm eps cannot be read from weights: a custom size is a plain VisionTransformer (torch's 1e-5).
        spec = EncoderSpec(**{"norm_eps": 1e-5, **merged})
    return build_encoder_from_spec(spec, norm_layer=norm_layer)


def load_predictor(
    path_or_state: PathOrState, *, spec: ModelSpec | None = None, **predictor_kwargs: Any
) -> VisionTransformerPredictor:
    """A frozen predictor (eval mode) from a training checkpoint's ``predictor`` or a plain state dict; an
    action-conditioned (V-JEPA 2-AC) file gives a :class:`jepa.models.ac_predictor.VisionTransformerPredictorAC`
    (its keywords as :func:`jepa.worldmodel.load.load_ac_predictor` takes them).

    With ``spec`` (a :class:`jepa.config.spec.ModelSpec` with a predictor) the predictor is built from it as it is, and
    ``predictor_kwargs`` are left out. Otherwise:

    Widths, depth, the number of mask tokens and RoPE are read from the weights; ``num_heads`` must be given (the
    official code sets it from the encoder). The token grid comes from ``img_size`` / ``patch_size`` /
    ``num_frames`` / ``tubelet_size`` (or I-JEPA's ``num_patches``); for a position table they default to the
    grid the table was built for. Built like the official ``vit_predictor`` (LayerNorm eps 1e-6) unless
    ``norm_layer`` is given.
    """
    source = _source(path_or_state)
    state_dict = extract_state_dict(path_or_state, ("predictor",))
    if "action_encoder.weight" in state_dict:  # a V-JEPA 2-AC predictor (jepa.worldmodel.load)
        if spec is not None:
            raise TypeError("load_predictor: spec= describes a mask-token predictor; pass an AC predictor's keywords")
        from jepa.worldmodel.load import load_ac_predictor

        if "num_heads" not in predictor_kwargs:
            raise CheckpointError(f"{source}: an AC predictor's number of heads cannot be read from weights; pass "
                                  "num_heads= (16 for the release)")
        return load_ac_predictor(state_dict, **predictor_kwargs)  # type: ignore[return-value]
    if "predictor_embed.weight" not in state_dict and "predictor_embed.0.weight" not in state_dict:
        raise CheckpointError(f"{source}: not predictor weights (no predictor_embed.weight / predictor_embed.0.weight)")
    if spec is not None:
        if predictor_kwargs:
            raise TypeError("load_predictor: spec= fixes the architecture; leave out other keywords")
        model = build_predictor_from_spec(spec)
        _fit_table(state_dict, "predictor_pos_embed", model, model.is_video, source)
        load_strict(model, state_dict, f"{source} [predictor]")
        return _freeze(model)
    if "num_heads" not in predictor_kwargs:
        raise CheckpointError(f"{source}: the predictor's number of heads cannot be read from weights; pass num_heads=")
    if "predictor_embed.weight" in state_dict:
        embed = state_dict["predictor_embed.weight"]
        embed_dim, levels = embed.shape[1], 1
    else:  # V-JEPA 2.1's multi-level embedding: Linear(levels * D, D) -> act -> Linear(D, predictor width)
        embed = state_dict["predictor_embed.2.weight"]
        embed_dim = embed.shape[1]
        levels = state_dict["predictor_embed.0.weight"].shape[1] // embed_dim
    n_tokens = _count_indexed(state_dict, "mask_tokens.") or int("mask_token" in state_dict)
    inferred: dict[str, Any] = {
        "embed_dim": embed_dim,
        "predictor_embed_dim": embed.shape[0],
        "depth": _count_indexed(state_dict, "predictor_blocks."),
        "num_mask_tokens": max(n_tokens, 1),
        "qkv_bias": "predictor_blocks.0.attn.qkv.bias" in state_dict,
        "use_rope": "predictor_pos_embed" not in state_dict,
        **_mlp_kwargs(state_dict, "predictor_blocks.0", embed.shape[0]),
    }
    # V-JEPA 2.1's options, read from the weights: levels, prediction width, dense prediction, modality embeddings.
    if levels > 1:
        inferred["n_output_distillation"] = levels
    out_width = state_dict["predictor_proj.weight"].shape[0] if "predictor_proj.weight" in state_dict else None
    if out_width is not None and out_width != levels * embed_dim:
        inferred["out_embed_dim"] = out_width // levels
    if "predictor_proj_context.weight" in state_dict:
        inferred["return_all_tokens"] = True
    if "img_mod_embed" in state_dict:
        inferred.update(modality_embedding=True, img_temporal_dim_size=1)
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
