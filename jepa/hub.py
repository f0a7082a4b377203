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

Each release also carries timm-style input metadata (:attr:`Release.pretrained_cfg`: input size, frames, tubelet,
mean / std, interpolation, crop fraction), from which its evaluation preprocessing is derived
(:meth:`Release.preprocess`), and :func:`create_model` builds any release or size as timm's ``create_model`` does
(trainable, ``model.pretrained_cfg`` set)::

    model = jepa.create_model("vjepa2_vitl", pretrained=True, num_frames=16)
    pre = jepa.hub.get_release("vjepa2_vitl").preprocess()

The official V-JEPA 2 hub names (``vjepa2_vit_large``, ``vjepa2_vit_huge``, ``vjepa2_vit_giant``,
``vjepa2_vit_giant_384``, ``vjepa2_preprocessor``) are here too, with the official keywords and return values
(:func:`official_entry_point`, :func:`vjepa2_preprocessor`), and so are V-JEPA 2.1's releases under their official
names (``vjepa2_1_vit_base_384``, ``vjepa2_1_vit_large_384``, ``vjepa2_1_vit_giant_384``,
``vjepa2_1_vit_gigantic_384``; the table :data:`VJEPA2_1_RELEASES`): image and video tokenizers, modality
embeddings, four deep-supervised levels, the pairwise RoPE with ``interpolate_rope``, and a dense predictor.
"""

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, overload
from urllib.parse import urlparse

import numpy as np
import torch
from torch import Tensor, nn

from jepa.checkpoint import (
    ENCODER_KEYS,
    CheckpointError,
    PathOrState,
    extract_state_dict,
    load_encoder,
    load_predictor,
    read_checkpoint,
)
from jepa.config.spec import VIT_SIZES, EncoderSpec, ModelSpec, PredictorSpec
from jepa.data.transforms import IMAGENET_NORMALIZATION
from jepa.models.builder import build_encoder_from_spec, build_predictor_from_spec
from jepa.models.predictor import VisionTransformerPredictor
from jepa.models.vision_transformer import VisionTransformer, to_hw
from jepa.preprocess import Preprocess

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)
Loaded = VisionTransformer | tuple[VisionTransformer, VisionTransformerPredictor]

_IJEPA_URL = "https://dl.fbaipublicfiles.com/ijepa"
_VJEPA_URL = "https://dl.fbaipublicfiles.com/jepa"
_VJEPA2_URL = "https://dl.fbaipublicfiles.com/vjepa2"
# The evaluation crop: the short side is resized to crop / CROP_PCT (256 for a 224 crop), then centre-cropped.
CROP_PCT = 224 / 256


@dataclass(frozen=True, kw_only=True)
class PretrainedCfg:
    """What a model expects of its input, in the terms of timm's ``pretrained_cfg`` (``model.pretrained_cfg`` of
    :func:`create_model`, which ``timm.data.resolve_data_config(model=...)`` reads), so that preprocessing is derived
    rather than guessed (:meth:`preprocess`).

    Attributes:
        url: the weights (None for a bare size).
        input_size: ``(C, H, W)`` of one image or frame at the native resolution.
        num_frames: frames per clip the model was built for (1: an image model).
        tubelet_size: frames per token (None for an image model).
        patch_size: pixels per token side.
        mean, std: per-channel normalisation after scaling to ``[0, 1]`` (ImageNet's, for every release).
        interpolation: of the evaluation resize: ``"bicubic"`` for images (I-JEPA / V-JEPA image evaluations),
            ``"bilinear"`` for clips (the V-JEPA video evaluations and V-JEPA 2's hub preprocessor).
        crop_pct: crop side / resized short side (224 / 256).
        crop_mode: ``"center"``: one central crop.
    """

    url: str | None
    input_size: tuple[int, int, int]
    num_frames: int
    tubelet_size: int | None
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bicubic", "bilinear"]
    crop_pct: float = CROP_PCT
    crop_mode: Literal["center"] = "center"

    @classmethod
    def of(cls, spec: EncoderSpec | ModelSpec, url: str | None = None) -> "PretrainedCfg":
        """The input metadata of an encoder spec (its native resolution, frames and tubelets)."""
        e = spec.encoder if isinstance(spec, ModelSpec) else spec
        h, w = to_hw(e.img_size)
        mean, std = IMAGENET_NORMALIZATION
        return cls(
            url=url, input_size=(e.in_chans, h, w), num_frames=e.num_frames,
            tubelet_size=e.tubelet_size if e.is_video else None, patch_size=e.patch_size,
            mean=(float(mean[0]), float(mean[1]), float(mean[2])), std=(float(std[0]), float(std[1]), float(std[2])),
            interpolation="bilinear" if e.is_video else "bicubic",
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """timm's ``pretrained_cfg`` dict (its keys, plus ``num_frames``, ``tubelet_size`` and ``patch_size``)."""
        return {
            "url": self.url, "input_size": self.input_size, "num_frames": self.num_frames,
            "tubelet_size": self.tubelet_size, "patch_size": self.patch_size, "mean": self.mean, "std": self.std,
            "interpolation": self.interpolation, "crop_pct": self.crop_pct, "crop_mode": self.crop_mode,
            "num_classes": 0,
        }  # fmt: skip

    def preprocess(self) -> Preprocess:
        """The evaluation preprocessing these settings describe: :class:`jepa.preprocess.Preprocess` at the native
        crop, short side ``crop / crop_pct``, this normalisation (bicubic for images, bilinear for clips, which is
        what :class:`Preprocess` does for each)."""
        _, h, w = self.input_size
        if h != w:
            raise ValueError(f"input_size {h}x{w} is not square; build Preprocess(crop_size=...) explicitly")
        return Preprocess(crop_size=h, resize_ratio=1 / self.crop_pct, normalization=(self.mean, self.std))


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
        encoder_key: the file's entry that holds the released encoder (what ``which`` defaults to):
            ``"target_encoder"`` (the EMA encoder), or ``"ema_encoder"`` for V-JEPA 2.1's distilled students.
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
    encoder_key: str = "target_encoder"

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
    def pretrained_cfg(self) -> PretrainedCfg:
        """The release's input metadata (timm's ``pretrained_cfg``): native resolution, frames, tubelets, ImageNet
        mean / std, the evaluation resize and crop."""
        return PretrainedCfg.of(self.spec(), url=self.url)

    def preprocess(self) -> Preprocess:
        """The release's evaluation preprocessing, derived from :attr:`pretrained_cfg`."""
        return self.pretrained_cfg.preprocess()

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


def _vjepa2_1(name: str, file: str, model_name: str, distilled: bool) -> Release:
    # V-JEPA 2.1 (the official hub's _make_vjepa2_1_model): 384 px, 64 frames, tubelets of 2, RoPE in the pairwise
    # layout with interpolate_rope, an image tokenizer for 1-frame inputs, modality embeddings and four
    # deep-supervised levels. Predictor width 384, 12 heads, 8 mask tokens, dense (predictor_proj_context). ViT-g/G:
    # depth 24, four levels in and out. ViT-B/L, distilled from ViT-G and stored under `ema_encoder`: depth 12, the
    # last level in, the teacher's last level (1664 wide) out: their predictors take the encoders' inference output
    # (the last level), as the official hub builds them (its encoders keep four levels in training mode; pass
    # n_output_distillation=1 for one). The official hub passes interpolate_rope to the encoder only, so its
    # predictors decode RoPE positions unscaled: so do these.
    encoder = dict(img_temporal_dim_size=1, modality_embedding=True, deep_supervision=True, rope_layout="pairwise",
                   interpolate_rope=True)  # fmt: skip
    predictor: dict[str, Any] = dict(predictor_embed_dim=384, depth=12 if distilled else 24, num_heads=12,
                                     num_mask_tokens=8, return_all_tokens=True, interpolate_rope=False)  # fmt: skip
    if distilled:
        predictor.update(n_output_distillation=1, teacher_embed_dim=VJEPA2_1_TEACHER_EMBED_DIM)
    else:
        predictor.update(n_output_distillation=4)
    return Release(
        name, "V-JEPA 2.1", f"{_VJEPA2_URL}/{file}", model_name, 384, 16, num_frames=64, tubelet_size=2,
        use_rope=True, predictor=predictor, encoder_extra=encoder,
        encoder_key="ema_encoder" if distilled else "target_encoder",
    )  # fmt: skip


VJEPA2_1_TEACHER_EMBED_DIM = 1664  # the ViT-G teacher of the distilled V-JEPA 2.1 ViT-B / ViT-L

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


# V-JEPA 2.1's releases, under the official hub names (their torch.hub entry points are official-style, see
# official_entry_point). A table of their own beside RELEASES; get_release and create_model read both.
VJEPA2_1_RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        _vjepa2_1("vjepa2_1_vit_base_384", "vjepa2_1_vitb_dist_vitG_384.pt", "vit_base", distilled=True),
        _vjepa2_1("vjepa2_1_vit_large_384", "vjepa2_1_vitl_dist_vitG_384.pt", "vit_large", distilled=True),
        _vjepa2_1("vjepa2_1_vit_giant_384", "vjepa2_1_vitg_384.pt", "vit_giant_xformers", distilled=False),
        _vjepa2_1("vjepa2_1_vit_gigantic_384", "vjepa2_1_vitG_384.pt", "vit_gigantic_xformers", distilled=False),
    )
}


def _release_names() -> list[str]:
    return [*RELEASES, *VJEPA2_1_RELEASES]


def get_release(name: str | Release) -> Release:
    """The :class:`Release` called ``name`` in :data:`RELEASES` or :data:`VJEPA2_1_RELEASES` (a :class:`Release`
    is returned as it is)."""
    if isinstance(name, Release):
        return name
    if name in RELEASES:
        return RELEASES[name]
    if name in VJEPA2_1_RELEASES:
        return VJEPA2_1_RELEASES[name]
    raise ValueError(f"unknown release {name!r}; known: {', '.join(_release_names())}")


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
    parts = [(part, "pos_embed") for part in ENCODER_KEYS] + [("predictor", "predictor_pos_embed")]
    for part, key in parts:
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
    which: str | None = ...,
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
    which: str | None = ...,
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
    which: str | None = ...,
    with_predictor: bool,
    progress: bool = ...,
    **kwargs: Any,
) -> Loaded: ...


def load(
    release: str | Release,
    *,
    pretrained: bool = True,
    checkpoint: PathOrState | None = None,
    which: str | None = None,
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
        which: ``"target_encoder"`` (the EMA encoder, what the papers evaluate), ``"encoder"`` (the context
            encoder) or ``"ema_encoder"`` (V-JEPA 2.1's distilled students); None: the release's
            :attr:`Release.encoder_key`.
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
    which = release.encoder_key if which is None else which
    if which not in ENCODER_KEYS:
        raise ValueError(f"which must be one of {', '.join(map(repr, ENCODER_KEYS))}, got {which!r}")
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
    release = get_release(name)

    def make(
        pretrained: bool = True,
        *,
        checkpoint: PathOrState | None = None,
        which: str | None = None,
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
        f"``checkpoint=`` loads a local file instead, ``which=`` picks the encoder (default {release.encoder_key}), "
        "``with_predictor=True`` returns ``(encoder, predictor)``; other keywords override the architecture "
        "(``num_frames``, ``img_size``, ...)."
    )
    return make


# Parameters that a model builds frozen: the fixed sine-cosine position tables (see frozen_sincos_embed).
_FIXED_TABLES = ("pos_embed", "predictor_pos_embed")


def _as_built(model: M) -> M:
    """Undo :func:`_frozen`: every parameter trainable again but the fixed position tables, training mode, as the
    constructors leave a model."""
    for name, param in model.named_parameters():
        param.requires_grad_(name not in _FIXED_TABLES)
    return model.train()


def create_model(
    name: str,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    *,
    which: str | None = None,
    **kwargs: Any,
) -> VisionTransformer:
    """An encoder by name, as timm's ``create_model``: a release of :data:`RELEASES` or a size of
    :data:`jepa.config.spec.VIT_SIZES`, trainable and in training mode, with ``model.pretrained_cfg`` (a dict, see
    :class:`PretrainedCfg`) for ``timm.data.resolve_data_config``.

    Args:
        name: ``"vjepa2_vitl"``, ``"ijepa_vith14_in1k"``, ... or ``"vit_large"``, ...
        pretrained: load the release's weights (downloaded once, see :func:`download`); a bare size has none.
        checkpoint_path: a local checkpoint (official layout, or a plain state dict) to load instead.
        which: the encoder of a training checkpoint: ``"target_encoder"`` (EMA), ``"encoder"`` or ``"ema_encoder"``;
            None: the release's :attr:`Release.encoder_key` (``"target_encoder"`` for a bare size).
        **kwargs: architecture overrides, the :class:`VisionTransformer` keywords (``num_frames``, ``img_size``,
            ``drop_path_rate``, ``use_activation_checkpointing``, ...), through :meth:`Release.spec` (or, for a
            size, :meth:`jepa.config.spec.EncoderSpec.of`); a misspelt one is a ``TypeError``.
    """
    if name in RELEASES or name in VJEPA2_1_RELEASES:
        release = get_release(name)
        spec = release.spec(**kwargs)
        url: str | None = release.url
        if pretrained or checkpoint_path is not None:
            model = _as_built(load(release, pretrained=pretrained, checkpoint=checkpoint_path, which=which, **kwargs))
        else:
            model = build_encoder_from_spec(spec)
    elif name in VIT_SIZES:
        if pretrained:
            names = ", ".join(_release_names())
            raise ValueError(f"{name} is a size without released weights; name a release: {names}")
        spec = ModelSpec(encoder=EncoderSpec.of(name, **kwargs))
        url = None
        if checkpoint_path is not None:
            model = _as_built(load_encoder(checkpoint_path, which=which or "target_encoder", spec=spec))
        else:
            model = build_encoder_from_spec(spec)
    else:
        raise ValueError(
            f"unknown model {name!r}; releases: {', '.join(_release_names())}; sizes: {', '.join(VIT_SIZES)}"
        )
    model.pretrained_cfg = PretrainedCfg.of(spec, url=url).to_dict()
    return model


# The official V-JEPA 2 torch.hub names and the release each one is.
OFFICIAL_HUB_NAMES = {
    "vjepa2_vit_large": "vjepa2_vitl",
    "vjepa2_vit_huge": "vjepa2_vith",
    "vjepa2_vit_giant": "vjepa2_vitg",
    "vjepa2_vit_giant_384": "vjepa2_vitg_384",
}


def official_entry_point(name: str) -> Callable[..., tuple[VisionTransformer, VisionTransformerPredictor]]:
    """The official V-JEPA 2 / 2.1 hub entry point ``name`` (a key of :data:`OFFICIAL_HUB_NAMES` or of
    :data:`VJEPA2_1_RELEASES`), a drop-in for ``torch.hub.load("facebookresearch/vjepa2", name)``.

    As the official one it takes ``pretrained`` (keyword only, default True) and architecture keywords (``num_frames``,
    ``patch_size``, ``tubelet_size``, ``use_sdpa``, ``use_activation_checkpointing``, ... which reach encoder and
    predictor alike), loads the encoder the official hub loads (V-JEPA 2: the checkpoint's ``encoder``;
    ``which="target_encoder"`` takes the EMA one; V-JEPA 2.1: ``target_encoder``, or ``ema_encoder`` for the
    distilled ViT-B / ViT-L) and returns ``(encoder, predictor)`` trainable and in training mode, as built. Unlike
    the official V-JEPA 2 one it loads strictly (only the unused position tables of the files are dropped, logged),
    and also takes ``checkpoint=`` (a local file instead of the download) and ``img_size``.
    """
    release = OFFICIAL_HUB_NAMES.get(name, name)
    r = get_release(release)
    default_which = "encoder" if name in OFFICIAL_HUB_NAMES else r.encoder_key

    def make(
        *,
        pretrained: bool = True,
        checkpoint: PathOrState | None = None,
        which: str = default_which,
        **kwargs: Any,
    ) -> tuple[VisionTransformer, VisionTransformerPredictor]:
        encoder, predictor = load(release, pretrained=pretrained, checkpoint=checkpoint, which=which,
                                  with_predictor=True, **kwargs)  # fmt: skip
        return _as_built(encoder), _as_built(predictor)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = (
        f"{r.paper} {r.model_name}, {r.img_size} px, and its predictor: the official hub's {name} (release "
        f"{release}, encoder from {default_which!r}); returns (encoder, predictor), trainable. See "
        ":func:`jepa.hub.official_entry_point`."
    )
    return make


class VJEPA2Preprocessor:
    """The official ``vjepa2_preprocessor``: V-JEPA 2's evaluation transform of one clip, returning a list with one
    view ``[3, T, crop_size, crop_size]`` as the official one does (resize the short side to
    ``int(crop_size * 256 / 224)``, bilinear, centre crop, ImageNet normalisation; :class:`jepa.preprocess.Preprocess`
    does the work).

    Call with a clip: a uint8 array or tensor ``[T, H, W, 3]``, a uint8 tensor ``[T, 3, H, W]`` (the layout of the
    official demo, which decodes with ``permute(0, 3, 1, 2)``), or a sequence of ``[H, W, 3]`` frames.
    """

    def __init__(self, crop_size: int = 256) -> None:
        self.crop_size = crop_size
        self.preprocess = Preprocess(crop_size=crop_size, resize_ratio=1 / CROP_PCT)

    def __call__(self, clip: Tensor | np.ndarray | Sequence[Tensor | np.ndarray]) -> list[Tensor]:
        if isinstance(clip, Sequence):
            clip = torch.stack([torch.as_tensor(np.asarray(f)) for f in clip])
        if isinstance(clip, Tensor) and clip.dim() == 4 and clip.shape[1] == 3 and clip.shape[-1] != 3:
            clip = clip.permute(0, 2, 3, 1)  # [T, 3, H, W] -> [T, H, W, 3]
        if clip.ndim != 4:
            raise ValueError(f"expected a clip [T, H, W, 3] or [T, 3, H, W], got shape {tuple(clip.shape)}")
        return [self.preprocess(clip)]

    def __repr__(self) -> str:
        return f"VJEPA2Preprocessor(crop_size={self.crop_size})"


def vjepa2_preprocessor(*, pretrained: bool = True, crop_size: int = 256) -> VJEPA2Preprocessor:
    """The official hub's ``vjepa2_preprocessor``: V-JEPA 2's evaluation transform (see :class:`VJEPA2Preprocessor`).
    ``pretrained`` is accepted for the official signature; a transform has no weights."""
    return VJEPA2Preprocessor(crop_size=crop_size)
