"""The official I-JEPA, V-JEPA and V-JEPA 2 releases as frozen encoders (and predictors): the table behind
``hubconf.py``.

Each :class:`Release` records what its paper's code built: the ViT size, input resolution, patch and tubelet
sizes, frame count, position encoding (2D / 3D sine-cosine tables, V-JEPA's ``uniform_power``, V-JEPA 2's RoPE),
the predictor, and the URL of the released training checkpoint (which holds ``encoder``, ``target_encoder`` and
``predictor``). :func:`load` builds the architecture and optionally loads weights through
:func:`jepa.checkpoint.load_encoder` / :func:`jepa.checkpoint.load_predictor` (strict, prefixes stripped)::

    encoder = jepa.hub.load("vjepa_vitl16", pretrained=True)            # downloads once, then cached
    encoder, predictor = jepa.hub.load("ijepa_vith14_in1k", checkpoint="IN1K-vit.h.14-300e.pth.tar",
                                       with_predictor=True)
"""

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, overload
from urllib.parse import urlparse

import torch
from torch import nn

from jepa.checkpoint import (
    CheckpointError,
    PathOrState,
    extract_state_dict,
    load_encoder,
    load_predictor,
    read_checkpoint,
)
from jepa.config.spec import EncoderSpec, ModelSpec, PredictorSpec
from jepa.models.builder import build_encoder_from_spec, build_predictor_from_spec
from jepa.models.predictor import VisionTransformerPredictor
from jepa.models.vision_transformer import VisionTransformer

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)
Loaded = VisionTransformer | tuple[VisionTransformer, VisionTransformerPredictor]

_IJEPA_URL = "https://dl.fbaipublicfiles.com/ijepa"
_VJEPA_URL = "https://dl.fbaipublicfiles.com/jepa"
_VJEPA2_URL = "https://dl.fbaipublicfiles.com/vjepa2"


@dataclass(frozen=True)
class Release:
    """One released model: the architecture its official code built and where its weights are.

    Attributes:
        name: the hub entry point.
        paper: ``"I-JEPA"``, ``"V-JEPA"`` or ``"V-JEPA 2"``.
        url: the released training checkpoint.
        model_name: the size factory (``"vit_huge"``, ``"vit_giant_xformers"``, ...), or None for a custom size
            given in ``encoder_extra`` (``embed_dim``, ``depth``, ``num_heads``).
        img_size, patch_size, num_frames, tubelet_size, uniform_power, use_rope: the encoder's keywords
            (``num_frames == 1`` for the image models).
        predictor: the predictor's ``predictor_embed_dim``, ``depth``, ``num_heads`` and ``num_mask_tokens``
            (:class:`jepa.config.spec.PredictorSpec` fields).
        encoder_extra: further :class:`VisionTransformer` keywords (:class:`jepa.config.spec.EncoderSpec` fields).
    """

    name: str
    paper: str
    url: str
    model_name: str | None
    img_size: int
    patch_size: int
    num_frames: int = 1
    tubelet_size: int = 2
    uniform_power: bool = False
    use_rope: bool = False
    predictor: Mapping[str, Any] = field(default_factory=dict)
    encoder_extra: Mapping[str, Any] = field(default_factory=dict)

    def spec(self, **overrides: Any) -> ModelSpec:
        """The release's encoder and predictor as a :class:`jepa.config.spec.ModelSpec`.

        ``overrides`` are encoder fields (the :class:`VisionTransformer` keywords: ``num_frames``, ``img_size``,
        ``use_sdpa``, ...; a misspelt one is a :class:`TypeError`); the grid and the shared switches reach the
        predictor too. A custom size (``model_name`` None) is built with the factories' qkv bias and LayerNorm eps
        1e-6, as a released one, so that it is the same with or without weights."""
        encoder = EncoderSpec.of(
            self.model_name,
            **{
                "img_size": self.img_size,
                "patch_size": self.patch_size,
                "num_frames": self.num_frames,
                "tubelet_size": self.tubelet_size,
                "uniform_power": self.uniform_power,
                "use_rope": self.use_rope,
                **self.encoder_extra,
                **overrides,
            },
        )
        predictor = PredictorSpec(**self.predictor) if self.predictor else None
        return ModelSpec(encoder=encoder, predictor=predictor)

    @property
    def file_name(self) -> str:
        """Name of the downloaded file in the hub cache; prefixed by the paper so that two releases' files with
        the same name (V-JEPA's ``k400-probe.pth.tar`` pattern) cannot collide."""
        base = os.path.basename(urlparse(self.url).path)
        return f"{self.paper.lower().replace(' ', '').replace('-', '')}-{base}"


def _ijepa(name: str, file: str, model_name: str, img_size: int, patch_size: int, pred_depth: int) -> Release:
    # I-JEPA's predictor: width 384, the encoder's head count, one mask token.
    heads = 16
    predictor = dict(predictor_embed_dim=384, depth=pred_depth, num_heads=heads, num_mask_tokens=1)
    return Release(name, "I-JEPA", f"{_IJEPA_URL}/{file}", model_name, img_size, patch_size, predictor=predictor)


def _vjepa(name: str, file: str, model_name: str, img_size: int) -> Release:
    # V-JEPA: 16 frames, tubelets of 2, 3D tables with uniform_power; predictor width 384, depth 12, the encoder's
    # 16 heads, one mask token per mask config (2).
    predictor = dict(predictor_embed_dim=384, depth=12, num_heads=16, num_mask_tokens=2)
    return Release(
        name, "V-JEPA", f"{_VJEPA_URL}/{file}", model_name, img_size, 16, num_frames=16, tubelet_size=2,
        uniform_power=True, predictor=predictor,
    )  # fmt: skip


def _vjepa2(name: str, file: str, model_name: str, img_size: int) -> Release:
    # V-JEPA 2: RoPE (no position table), built for 64 frames; predictor width 384, depth 12, 12 heads, 10 mask tokens.
    predictor = dict(predictor_embed_dim=384, depth=12, num_heads=12, num_mask_tokens=10)
    return Release(
        name, "V-JEPA 2", f"{_VJEPA2_URL}/{file}", model_name, img_size, 16, num_frames=64, tubelet_size=2,
        use_rope=True, predictor=predictor,
    )  # fmt: skip


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        _ijepa("ijepa_vith14_in1k", "IN1K-vit.h.14-300e.pth.tar", "vit_huge", 224, 14, pred_depth=12),
        _ijepa("ijepa_vith14_in22k", "IN22K-vit.h.14-900e.pth.tar", "vit_huge", 224, 14, pred_depth=12),
        _ijepa("ijepa_vith16_448_in1k", "IN1K-vit.h.16-448px-300e.pth.tar", "vit_huge", 448, 16, pred_depth=12),
        _ijepa("ijepa_vitg16_in22k", "IN22K-vit.g.16-600e.pth.tar", "vit_giant", 224, 16, pred_depth=16),
        _vjepa("vjepa_vitl16", "vitl16/vitl16.pth.tar", "vit_large", 224),
        _vjepa("vjepa_vith16", "vith16/vith16.pth.tar", "vit_huge", 224),
        _vjepa("vjepa_vith16_384", "vith16-384/vith16-384.pth.tar", "vit_huge", 384),
        _vjepa2("vjepa2_vitl", "vitl.pt", "vit_large", 256),
        _vjepa2("vjepa2_vith", "vith.pt", "vit_huge", 256),
        _vjepa2("vjepa2_vitg", "vitg.pt", "vit_giant_xformers", 256),
        _vjepa2("vjepa2_vitg_384", "vitg-384.pt", "vit_giant_xformers", 384),
    )
}


def get_release(name: str | Release) -> Release:
    """The :class:`Release` called ``name`` (a :class:`Release` is returned as it is)."""
    if isinstance(name, Release):
        return name
    if name not in RELEASES:
        raise ValueError(f"unknown release {name!r}; known: {', '.join(RELEASES)}")
    return RELEASES[name]


def download(release: str | Release, progress: bool = True) -> Path:
    """The release's checkpoint in torch.hub's cache (``$TORCH_HOME/hub/checkpoints``), downloaded on first use."""
    release = get_release(release)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / release.file_name
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s to %s", release.url, path)
        # download_url_to_file writes to a temporary file and renames it, so an interrupted download leaves nothing.
        torch.hub.download_url_to_file(release.url, str(path), progress=progress)
    return path


def _drop_unused_rope_tables(state: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A RoPE model has no position table, but a V-JEPA 2 file may still carry one that its model never adds (the
    official hub loads these files with ``strict=False``, noting that their state dicts hold ``pos_embed``). Drop
    exactly those keys, logged, and nothing else, so that the rest still loads strictly."""
    out = dict(state)
    for part, key in (("target_encoder", "pos_embed"), ("encoder", "pos_embed"), ("predictor", "predictor_pos_embed")):
        if part not in out:
            continue
        weights = extract_state_dict({part: out[part]}, (part,))
        if key in weights:
            logger.info("%s: dropping the unused %s of the RoPE model's %s", source, key, part)
            out[part] = {k: v for k, v in weights.items() if k != key}
    return out


@overload
def load(
    release: str | Release,
    *,
    pretrained: bool = ...,
    checkpoint: PathOrState | None = ...,
    which: str = ...,
    with_predictor: Literal[False] = ...,
    progress: bool = ...,
    **kwargs: Any,
) -> VisionTransformer: ...


@overload
def load(
    release: str | Release,
    *,
    pretrained: bool = ...,
    checkpoint: PathOrState | None = ...,
    which: str = ...,
    with_predictor: Literal[True],
    progress: bool = ...,
    **kwargs: Any,
) -> tuple[VisionTransformer, VisionTransformerPredictor]: ...


@overload
def load(
    release: str | Release,
    *,
    pretrained: bool = ...,
    checkpoint: PathOrState | None = ...,
    which: str = ...,
    with_predictor: bool,
    progress: bool = ...,
    **kwargs: Any,
) -> Loaded: ...


def load(
    release: str | Release,
    *,
    pretrained: bool = True,
    checkpoint: PathOrState | None = None,
    which: str = "target_encoder",
    with_predictor: bool = False,
    progress: bool = True,
    **kwargs: Any,
) -> Loaded:
    """A released encoder, frozen (``requires_grad`` False) and in eval mode, optionally with its predictor.

    Args:
        release: a name of :data:`RELEASES` (the hub entry points) or a :class:`Release`.
        pretrained: load the released weights, downloaded from ``release.url`` into torch.hub's cache on first use.
            False (and no ``checkpoint``) gives the architecture with random weights.
        checkpoint: a local checkpoint file (or a dict loaded from one) to load instead of the download, in the
            official layout (``encoder`` / ``target_encoder`` / ``predictor``, ``module.`` prefixes allowed).
        which: ``"target_encoder"`` (the EMA encoder, what the papers evaluate) or ``"encoder"`` (the context
            encoder).
        with_predictor: also return the predictor (from ``predictor``), frozen too.
        progress: show a progress bar while downloading.
        **kwargs: :class:`VisionTransformer` keywords that override the release's (``num_frames``, ``img_size``,
            ``use_sdpa``, ``use_activation_checkpointing``, ...). ``img_size`` / ``num_frames`` / ``patch_size`` /
            ``tubelet_size`` also set the predictor's grid (and the switches both share reach it too, see
            :meth:`Release.spec`); a position table of another size is resampled.

    Returns:
        The encoder, or ``(encoder, predictor)`` with ``with_predictor``.

    Raises:
        jepa.checkpoint.CheckpointError: the weights do not fit the release's architecture (the message lists the
            missing, unexpected or mis-shaped keys) or the file lacks ``which`` / ``predictor``.
    """
    release = get_release(release)
    if which not in ("target_encoder", "encoder"):
        raise ValueError(f"which must be 'target_encoder' or 'encoder', got {which!r}")
    spec = release.spec(**kwargs)
    if with_predictor and spec.predictor is None:
        raise ValueError(f"release {release.name} has no predictor")

    state: Mapping[str, Any] | None = None
    source = "the given checkpoint"
    if checkpoint is not None:
        source = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else source
        state = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    elif pretrained:
        path = download(release, progress=progress)
        source = str(path)
        state = read_checkpoint(path)
    if state is None:
        encoder = _frozen(build_encoder_from_spec(spec))
        return (encoder, _frozen(build_predictor_from_spec(spec))) if with_predictor else encoder

    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source} holds a {type(state).__name__}, expected a dict")
    if release.use_rope:
        state = _drop_unused_rope_tables(state, source)
    if which not in state:
        raise CheckpointError(f"{source} has no {which!r}; its keys are {sorted(state)}")
    try:
        encoder = load_encoder({which: state[which]}, which=which, spec=spec)
    except CheckpointError as e:
        raise CheckpointError(f"{source} [{which}] does not fit {release.name}: {e}") from e
    logger.info("%s: loaded %s [%s]", release.name, source, which)
    if not with_predictor:
        return encoder
    if "predictor" not in state:
        raise CheckpointError(f"{source} has no 'predictor'; its keys are {sorted(state)}")
    try:
        predictor = load_predictor({"predictor": state["predictor"]}, spec=spec)
    except CheckpointError as e:
        raise CheckpointError(f"{source} [predictor] does not fit {release.name}: {e}") from e
    return encoder, predictor


def _frozen(model: M) -> M:
    model.requires_grad_(False)
    return model.eval()


def entry_point(name: str) -> Callable[..., Loaded]:
    """A torch.hub entry point for the release ``name`` (what ``hubconf.py`` exports); the release is looked up
    in :data:`RELEASES` at call time."""
    release = RELEASES[name]

    def make(
        pretrained: bool = True,
        *,
        checkpoint: PathOrState | None = None,
        which: str = "target_encoder",
        with_predictor: bool = False,
        **kwargs: Any,
    ) -> Loaded:
        return load(name, pretrained=pretrained, checkpoint=checkpoint, which=which,
                    with_predictor=with_predictor, **kwargs)  # fmt: skip

    grid = f"{release.num_frames} frames x {release.img_size} px" if release.num_frames > 1 else "images"
    pos = "RoPE" if release.use_rope else "sine-cosine positions"
    make.__name__ = make.__qualname__ = name
    make.__doc__ = (
        f"{release.paper} {release.model_name}, patch {release.patch_size}, {release.img_size} px "
        f"({grid}; {pos}), frozen and in eval mode.\n\n"
        f"Weights: {release.url}. Arguments as :func:`jepa.hub.load`: ``pretrained`` downloads them, "
        "``checkpoint=`` loads a local file instead, ``which=`` picks ``target_encoder`` or ``encoder``, "
        "``with_predictor=True`` returns ``(encoder, predictor)``; other keywords override the architecture "
        "(``num_frames``, ``img_size``, ...)."
    )
    return make
