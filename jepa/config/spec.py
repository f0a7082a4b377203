"""The model spec: one typed description of an encoder and its predictor, without torch.

Every way to name a model produces one: the pretraining config (:meth:`jepa.config.PretrainConfig.model_spec`), the
eval config (:meth:`jepa.config.evals.EvalConfig.encoder_spec`), the config a checkpoint stores
(:func:`jepa.config.pretrain.model_spec_from_config_dict`), the hub release table (:meth:`jepa.hub.Release.spec`)
and ``jepa.extract``'s command line; :mod:`jepa.models.builder` is the one place that turns a spec into modules.
Two producers that describe the same weights are compared with :func:`spec_differences`, whose entries name both
values.

The field names are the :class:`jepa.models.VisionTransformer` / :class:`jepa.models.VisionTransformerPredictor`
keywords (the official ones), so a spec reads like the constructor call it stands for.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any

# Released sizes. Every official factory also sets patch 16, qkv bias and LayerNorm eps 1e-6.
VIT_SIZES: dict[str, dict] = {
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    "vit_huge": dict(embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0),
    "vit_giant": dict(embed_dim=1408, depth=40, num_heads=16, mlp_ratio=48 / 11),
    "vit_giant_xformers": dict(embed_dim=1408, depth=40, num_heads=22, mlp_ratio=48 / 11),
    "vit_gigantic": dict(embed_dim=1664, depth=48, num_heads=16, mlp_ratio=64 / 13),
    "vit_gigantic_xformers": dict(embed_dim=1664, depth=48, num_heads=26, mlp_ratio=64 / 13),
}
SIZE_KEYS = ("embed_dim", "depth", "num_heads", "mlp_ratio")
# V-JEPA 2.1's deep supervision: the four blocks (0-based) whose outputs are the levels, per encoder depth.
HIERARCHICAL_LAYERS: dict[int, tuple[int, ...]] = {
    12: (2, 5, 8, 11),
    24: (5, 11, 17, 23),
    40: (9, 19, 29, 39),
    48: (11, 23, 37, 47),
}
ROPE_LAYOUTS = ("duplicated", "pairwise")  # V-JEPA 2's released layout, V-JEPA 2.1's (see jepa.models.rope)


def hierarchical_layers_for(depth: int) -> tuple[int, ...]:
    """The blocks a deep-supervised encoder of ``depth`` blocks takes its four levels from: the official choice
    for the released depths (:data:`HIERARCHICAL_LAYERS`), else the ends of its four quarters,
    ``depth * k // 4 - 1`` (which is the official rule for 12, 24 and 40; 48 is the exception, 37 for 35)."""
    if depth in HIERARCHICAL_LAYERS:
        return HIERARCHICAL_LAYERS[depth]
    if depth < 4:
        raise ValueError(f"deep supervision takes four levels from four blocks; depth {depth} has fewer: "
                         "pass hierarchical_layers explicitly")  # fmt: skip
    return tuple(depth * k // 4 - 1 for k in range(1, 5))
FACTORY_NORM_EPS = 1e-6  # the official factories' LayerNorm eps (a plain VisionTransformer's is torch's 1e-5)


def unknown_size_message(model_name: str) -> str:
    return f"unknown model_name {model_name!r}; known: {', '.join(VIT_SIZES)}"


@dataclass(frozen=True, kw_only=True)
class EncoderSpec:
    """A :class:`jepa.models.VisionTransformer`: every constructor keyword but ``norm_layer`` (``norm_eps`` stands
    for it), with the same defaults, except that ``norm_eps`` defaults to the official factories' 1e-6.

    ``model_name`` labels a released size: its ``embed_dim``, ``depth``, ``num_heads`` and ``mlp_ratio`` must then
    be the table's (:meth:`of` fills them in). ``num_heads`` None means "not known yet" (an eval config that leaves
    it to the checkpoint's stored config); such a spec can be compared but not built.
    """

    model_name: str | None = None
    embed_dim: int
    depth: int
    num_heads: int | None
    mlp_ratio: float = 4.0
    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    num_frames: int = 1  # 1: an image encoder (2D patches); > 1: a video encoder of tubelets
    tubelet_size: int = 2
    in_chans: int = 3
    qkv_bias: bool = True
    qk_scale: float | None = None
    norm_eps: float = FACTORY_NORM_EPS
    uniform_power: bool = False
    use_rope: bool = False
    use_silu: bool = False
    wide_silu: bool = True
    use_sdpa: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    use_activation_checkpointing: bool = False
    init_std: float = 0.02
    out_layers: tuple[int, ...] | None = None
    handle_nonsquare_inputs: bool = True
    # V-JEPA 2.1 (see jepa.models.VisionTransformer): an image tokenizer for inputs of this many frames, modality
    # embeddings, four normalised levels, the RoPE layout and RoPE positions rescaled to the reference grid.
    img_temporal_dim_size: int | None = None
    modality_embedding: bool = False
    deep_supervision: bool = False
    hierarchical_layers: tuple[int, ...] | None = None
    n_output_distillation: int = 4
    rope_layout: str = "duplicated"
    interpolate_rope: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.img_size, list):  # I-JEPA writes [224]; a frozen spec keeps a hashable value
            object.__setattr__(self, "img_size", tuple(self.img_size) if len(self.img_size) > 1 else self.img_size[0])
        for key in ("out_layers", "hierarchical_layers"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, key, tuple(value))
        if self.rope_layout not in ROPE_LAYOUTS:
            raise ValueError(f"rope_layout must be one of {ROPE_LAYOUTS}, got {self.rope_layout!r}")
        if self.hierarchical_layers is not None and not self.deep_supervision:
            raise ValueError("hierarchical_layers is set but deep_supervision is off; set deep_supervision=True")
        if self.model_name is not None:
            if self.model_name not in VIT_SIZES:
                raise ValueError(unknown_size_message(self.model_name))
            wrong = {k: getattr(self, k) for k, v in VIT_SIZES[self.model_name].items() if getattr(self, k) != v}
            if wrong:
                fixed = VIT_SIZES[self.model_name]
                raise ValueError(f"{self.model_name} fixes {fixed}, got {wrong}; set model_name=None to change them")
        if self.num_heads is not None and self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @classmethod
    def of(cls, model_name: str | None = None, **fields: Any) -> "EncoderSpec":
        """A released size by name with ``fields`` for the rest, or (``model_name`` None) a custom size whose
        ``embed_dim``, ``depth``, ``num_heads`` are in ``fields``: what :func:`jepa.models.build_encoder` takes."""
        if model_name is None:
            return cls(**fields)
        if model_name not in VIT_SIZES:
            raise ValueError(unknown_size_message(model_name))
        clash = sorted(set(fields) & set(VIT_SIZES[model_name]))
        if clash:
            raise TypeError(f"{model_name} fixes {', '.join(clash)}; set model_name=None to change them")
        return cls(model_name=model_name, **VIT_SIZES[model_name], **fields)

    @property
    def is_video(self) -> bool:
        return self.num_frames > 1

    @property
    def levels(self) -> int:
        """Levels concatenated in the encoder's training-mode output: ``n_output_distillation`` with deep
        supervision, else 1 (its width is ``levels * embed_dim``, what the predictor takes)."""
        return self.n_output_distillation if self.deep_supervision else 1


@dataclass(frozen=True, kw_only=True)
class PredictorSpec:
    """A :class:`jepa.models.VisionTransformerPredictor` over an encoder: its own width, depth, heads and mask
    tokens. The token grid, the encoder width and the switches both share (``uniform_power``, ``use_rope``,
    ``use_silu``, ``wide_silu``, ``use_sdpa``, activation checkpointing) come from the :class:`EncoderSpec`.

    ``square_rope_grid`` keeps the released V-JEPA 2 predictor's RoPE positions (see the predictor); pretraining
    sets it False.

    V-JEPA 2.1: ``n_output_distillation`` levels of ``embed_dim`` in (through ``Linear -> act -> Linear`` when
    more than one) and out (``n * out_embed_dim``; ``out_embed_dim`` defaults to ``teacher_embed_dim // n`` when a
    teacher's width is given, else ``embed_dim``); ``return_all_tokens`` adds ``predictor_proj_context``, the
    predictions for the context tokens (dense prediction, the config's ``loss.predict_all``). The image tokenizer
    and modality embedding switches come from the encoder spec; ``interpolate_rope`` is the predictor's own (the
    official 2.1 training code passes its one config value to both models, its hub to the encoder only).
    """

    predictor_embed_dim: int = 384
    depth: int = 6
    num_heads: int
    mlp_ratio: float = 4.0
    num_mask_tokens: int = 1
    use_mask_tokens: bool = True
    zero_init_mask_tokens: bool = True
    square_rope_grid: bool = True
    drop_path_rate: float = 0.0
    n_output_distillation: int = 1
    out_embed_dim: int | None = None
    teacher_embed_dim: int | None = None
    return_all_tokens: bool = False
    interpolate_rope: bool = False

    def __post_init__(self) -> None:
        if self.n_output_distillation < 1:
            raise ValueError(f"n_output_distillation must be >= 1, got {self.n_output_distillation}")
        if self.predictor_embed_dim % self.num_heads:
            raise ValueError(
                f"predictor_embed_dim {self.predictor_embed_dim} is not divisible by num_heads {self.num_heads}"
            )


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """An encoder and, for pretraining and the hub's ``with_predictor``, its predictor."""

    encoder: EncoderSpec
    predictor: PredictorSpec | None = None


# What an encoder's weights are, as opposed to how it runs (input size: position tables are resampled; attention
# kernel, dropout, checkpointing, which blocks to return). Two producers describing the same weights must agree here.
ARCHITECTURE_KEYS = (
    "embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "num_frames", "tubelet_size", "in_chans", "qkv_bias",
    "norm_eps", "uniform_power", "use_rope", "use_silu", "wide_silu", "img_temporal_dim_size", "modality_embedding",
    "deep_supervision", "hierarchical_layers", "rope_layout", "interpolate_rope",
)  # fmt: skip
PREDICTOR_KEYS = ("predictor_embed_dim", "depth", "num_heads", "mlp_ratio", "num_mask_tokens", "n_output_distillation",
                  "out_embed_dim", "teacher_embed_dim", "return_all_tokens", "interpolate_rope")  # fmt: skip


@dataclass(frozen=True)
class Difference:
    """One key on which a checkpoint and a config disagree."""

    key: str
    checkpoint: object
    config: object

    def __str__(self) -> str:
        return f"{self.key}: checkpoint {self.checkpoint!r} vs config {self.config!r}"


def _irrelevant(key: str, a: EncoderSpec, b: EncoderSpec) -> bool:
    """Keys that do not shape an encoder with these settings, so a difference there means nothing."""
    if key == "wide_silu":
        return not (a.use_silu and b.use_silu)  # the SwiGLU width; a use_silu difference is reported itself
    if key in ("tubelet_size", "uniform_power"):
        return not (a.is_video and b.is_video)  # no tubelets, and no uniform_power in a 2D table
    if key == "num_frames":
        return a.use_rope and b.use_rope and a.is_video and b.is_video  # RoPE has no table tied to the frames
    if key in ("rope_layout", "interpolate_rope"):
        return not (a.use_rope and b.use_rope)
    if key == "hierarchical_layers":
        return not (a.deep_supervision and b.deep_supervision)
    if key == "img_temporal_dim_size":
        return not (a.is_video and b.is_video)
    return False


def spec_differences(
    checkpoint: EncoderSpec | ModelSpec,
    config: EncoderSpec | ModelSpec,
    keys: tuple[str, ...] = ARCHITECTURE_KEYS,
) -> list[Difference]:
    """Where ``config`` describes another model than ``checkpoint`` (the spec its weights were made with).

    Only ``keys`` of the encoder are compared (and, for two :class:`ModelSpec` with predictors, the predictor's
    :data:`PREDICTOR_KEYS`, as ``predictor.<key>``). A value None on either side is not known there and agrees with
    anything; keys that do not shape the model in question are skipped: ``wide_silu`` without ``use_silu``,
    ``tubelet_size`` and ``uniform_power`` of an image encoder, ``num_frames`` of two RoPE video encoders.
    """
    out = []
    a = checkpoint.encoder if isinstance(checkpoint, ModelSpec) else checkpoint
    b = config.encoder if isinstance(config, ModelSpec) else config
    for key in keys:
        x, y = getattr(a, key), getattr(b, key)
        if x is not None and y is not None and x != y and not _irrelevant(key, a, b):
            out.append(Difference(key, x, y))
    pa, pb = (getattr(s, "predictor", None) for s in (checkpoint, config))
    if pa is not None and pb is not None:
        out += [Difference(f"predictor.{k}", getattr(pa, k), getattr(pb, k)) for k in PREDICTOR_KEYS
                if getattr(pa, k) != getattr(pb, k)]  # fmt: skip
    return out


def with_architecture_of(spec: EncoderSpec, checkpoint: EncoderSpec) -> EncoderSpec:
    """``checkpoint``'s architecture run as ``spec`` asks: its size, patches, positions and MLP with ``spec``'s
    input (``img_size``, ``num_frames``) and execution settings. Compare them first (:func:`spec_differences`)."""
    keep = {f.name for f in dataclasses.fields(EncoderSpec)} - set(ARCHITECTURE_KEYS) - {"model_name"}
    return dataclasses.replace(checkpoint, num_frames=spec.num_frames, **{k: getattr(spec, k) for k in keep})
