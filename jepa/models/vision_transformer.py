"""One Vision Transformer for images (2D patches) and video (3D tubelets), with the official parameter names."""

from collections.abc import Sequence
from functools import partial
from typing import Literal, overload

import torch
from torch import Tensor, nn

from jepa.config.spec import VIT_SIZES, hierarchical_layers_for
from jepa.masks import apply_masks
from jepa.masks.blocks import as_pair
from jepa.models.layers import Block, NormLayer, PatchEmbed
from jepa.models.pos_embed import Grid, interpolate_pos_embed, sincos_table
from jepa.models.rope import Rope3D, RopeLayout, check_rope_layout, rope_reference_grid
from jepa.models.trunk import build_blocks, collect_block_outputs, init_trunk, run_blocks

Masks = Tensor | Sequence[Tensor]
Modality = Literal["image", "video"]


def to_hw(img_size: int | Sequence[int]) -> tuple[int, int]:
    """``224``, ``[224]`` (I-JEPA's form) or ``(h, w)`` -> ``(h, w)``: :func:`as_pair` plus the one-element form."""
    if isinstance(img_size, Sequence) and not isinstance(img_size, str) and len(img_size) == 1:
        img_size = int(img_size[0])
    return as_pair(img_size, "img_size")


def token_grid(img_size: tuple[int, int], patch_size: int, num_frames: int, tubelet_size: int) -> Grid:
    """Token grid ``(T, H, W)`` of a model; ``T == 1`` for images (``num_frames == 1``)."""
    t = num_frames // tubelet_size if num_frames > 1 else 1
    return t, img_size[0] // patch_size, img_size[1] // patch_size


def frozen_sincos_embed(dim: int, grid: Grid, is_video: bool, uniform_power: bool) -> nn.Parameter:
    """The fixed sine-cosine position table ``[1, T * H * W, dim]`` of a token grid ``(T, H, W)``, as a parameter
    that is never trained but is saved in the state dict (the official checkpoints carry it)."""
    return nn.Parameter(sincos_table(dim, grid, is_video, uniform_power).unsqueeze(0), requires_grad=False)


class VisionTransformer(nn.Module):
    """ViT encoder over 2D patches (``num_frames == 1``) or 3D tubelets (``num_frames > 1``).

    Positions come from a fixed sine-cosine table (2D, or 3D with optional ``uniform_power``), resampled when an
    input's token grid differs from the one built for, or from V-JEPA 2's 3D RoPE (``use_rope=True``, no table).

    V-JEPA 2.1's options (all off by default, so a V-JEPA 2 model is unchanged):

    * ``img_temporal_dim_size`` (2.1 sets 1): a video model also gets ``patch_embed_img``, a tubelet-1 tokenizer
      that takes inputs of that many frames (and 4-D image batches ``[B, C, H, W]``, as one frame): images and video
      in one encoder. ``modality_embedding`` adds a learned ``img_mod_embed`` or ``video_mod_embed`` ``[1, 1, D]``
      to every token, by the tokenizer the input went through (the official encoder adds ``video_mod_embed`` to
      everything when it has no image tokenizer).
    * ``deep_supervision``: the outputs of four blocks (``hierarchical_layers``; by default the official choice for
      the depth, :func:`jepa.config.spec.hierarchical_layers_for`) each pass through their own LayerNorm
      (``norms_block.{0..3}``, which replace ``norm``). ``forward(x, training=True)`` returns the last
      ``n_output_distillation`` of them concatenated over channels, ``[B, N, n * D]`` (the prediction targets and
      the predictor's input); otherwise (inference) ``norms_block[-1]`` of the last block, ``[B, N, D]``, as the
      official encoder does.
    * ``rope_layout="pairwise"``: 2.1's RoPE channel layout (:mod:`jepa.models.rope`); ``interpolate_rope``: RoPE
      positions rescaled to the 16-token reference grid (patch 16), so a model trained at one resolution runs at
      others.

    The keyword names are the official ones; ``state_dict()`` keys equal the official checkpoints' keys.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        num_frames: int = 1,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: NormLayer = nn.LayerNorm,
        init_std: float = 0.02,
        out_layers: Sequence[int] | None = None,
        uniform_power: bool = False,
        use_silu: bool = False,
        wide_silu: bool = True,
        use_sdpa: bool = True,
        use_activation_checkpointing: bool = False,
        use_rope: bool = False,
        handle_nonsquare_inputs: bool = True,
        img_temporal_dim_size: int | None = None,
        modality_embedding: bool = False,
        deep_supervision: bool = False,
        hierarchical_layers: Sequence[int] | None = None,
        n_output_distillation: int = 4,
        rope_layout: RopeLayout = "duplicated",
        interpolate_rope: bool = False,
    ) -> None:
        super().__init__()
        check_rope_layout(rope_layout)
        if img_temporal_dim_size is not None and not (num_frames > 1 and img_temporal_dim_size >= 1):
            raise ValueError(
                f"img_temporal_dim_size={img_temporal_dim_size}: an image tokenizer is an option of a video encoder "
                f"(num_frames > 1, got {num_frames}) and takes inputs of >= 1 frames"
            )
        if hierarchical_layers is not None and not deep_supervision:
            raise ValueError("hierarchical_layers is set but deep_supervision is off; set deep_supervision=True")
        if interpolate_rope:
            if not use_rope:
                raise ValueError("interpolate_rope rescales RoPE positions: it needs use_rope=True")
            rope_reference_grid(patch_size)  # fails early for a patch size without a reference grid
        self.img_height, self.img_width = to_hw(img_size)
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.is_video = num_frames > 1
        self.num_features = self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.out_layers = out_layers
        self.uniform_power = uniform_power
        self.use_rope = use_rope
        self.handle_nonsquare_inputs = handle_nonsquare_inputs
        self.use_activation_checkpointing = use_activation_checkpointing
        self.img_temporal_dim_size = img_temporal_dim_size
        self.rope_layout = rope_layout
        self.interpolate_rope = interpolate_rope
        self.grid = token_grid((self.img_height, self.img_width), patch_size, num_frames, tubelet_size)
        self.num_patches = self.grid[0] * self.grid[1] * self.grid[2]

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, tubelet_size if self.is_video else None)
        self.patch_embed_img = (
            None if img_temporal_dim_size is None else PatchEmbed(patch_size, in_chans, embed_dim, tubelet_size=1)
        )
        self.pos_embed = None if use_rope else frozen_sincos_embed(embed_dim, self.grid, self.is_video, uniform_power)
        block = partial(
            Block,
            embed_dim,
            num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            drop=drop_rate,
            attn_drop=attn_drop_rate,
            norm_layer=norm_layer,
            use_sdpa=use_sdpa,
            use_silu=use_silu,
            wide_silu=wide_silu,
        )
        self.blocks = build_blocks(depth, drop_path_rate, block)
        self.deep_supervision = deep_supervision
        self.return_hierarchical = False  # the official switch: forward returns the levels as with training=True
        self.hierarchical_layers: list[int] | None = None
        self.norms_block: nn.ModuleList | None = None  # with deep supervision, in place of `norm`
        if deep_supervision:
            levels = hierarchical_layers_for(depth) if hierarchical_layers is None else tuple(hierarchical_layers)
            _check_levels(levels, depth, n_output_distillation)
            self.hierarchical_layers = list(levels)
            self.n_output_distillation = n_output_distillation
            self.norms_block = nn.ModuleList(norm_layer(embed_dim) for _ in levels)
        else:
            self.norm = norm_layer(embed_dim)
        self.modality_embedding = modality_embedding
        if modality_embedding:
            self.img_mod_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.video_mod_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))

        self.init_std = init_std
        init_trunk(self, self.blocks, init_std)
        if modality_embedding:
            nn.init.normal_(self.img_mod_embed, std=1e-6)  # the official initialisation: next to zero
            nn.init.normal_(self.video_mod_embed, std=1e-6)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def modality(self, x: Tensor) -> Modality:
        """``"image"`` when ``x`` goes through the image tokenizer ``patch_embed_img`` (a model built with
        ``img_temporal_dim_size``, given a 4-D batch or ``img_temporal_dim_size`` frames), else ``"video"`` (what
        every other input of a video model is, and the label of an image model's inputs too)."""
        if self.img_temporal_dim_size is None:
            return "video"
        if x.dim() == 4 or (x.dim() == 5 and x.shape[2] == self.img_temporal_dim_size):
            return "image"
        return "video"

    def input_grid(self, x: Tensor) -> Grid:
        """Token grid ``(T, H, W)`` of an input ``[B, C, H, W]`` or ``[B, C, T, H, W]``."""
        p = self.patch_size
        if x.dim() == 4:
            return 1, x.shape[-2] // p, x.shape[-1] // p
        tubelet = 1 if self.modality(x) == "image" else self.tubelet_size
        return x.shape[2] // tubelet, x.shape[-2] // p, x.shape[-1] // p

    def prepare_tokens(self, x: Tensor) -> tuple[Tensor, Grid]:
        """Pixels -> position-encoded tokens ``[B, N, D]`` and their grid ``(T, H, W)``.

        A video model also takes images ``[B, C, H, W]``: they become static clips of ``tubelet_size`` frames, or,
        with an image tokenizer (``img_temporal_dim_size``), one frame for ``patch_embed_img``.
        """
        image = self.modality(x) == "image"
        if image and x.dim() == 4:
            x = x.unsqueeze(2)
        elif self.is_video and x.dim() == 4:
            x = x.unsqueeze(2).expand(-1, -1, self.tubelet_size, -1, -1)
        elif not self.is_video and x.dim() == 5 and x.shape[2] == 1:
            x = x.squeeze(2)
        expected = 5 if self.is_video else 4
        if x.dim() != expected:
            kind = "video [B, C, T, H, W]" if self.is_video else "image [B, C, H, W]"
            raise ValueError(f"this encoder takes {kind} inputs, got shape {tuple(x.shape)}")
        grid = self.input_grid(x)
        tokens = self.patch_embed_img(x) if image and self.patch_embed_img is not None else self.patch_embed(x)
        if self.modality_embedding:
            tokens = tokens + (self.img_mod_embed if image else self.video_mod_embed)
        if self.pos_embed is not None:
            tokens = tokens + interpolate_pos_embed(self.pos_embed, self.grid, grid, self.is_video)
        return tokens, grid

    def rope(self, ids: Tensor, grid: Grid) -> Rope3D:
        """Rotary angles for tokens ``ids`` of an input whose token grid is ``grid``."""
        # Without handle_nonsquare_inputs the released code decodes positions on the square grid it was built for.
        grid_hw = grid[1:] if self.handle_nonsquare_inputs else (self.grid[1], self.grid[1])
        reference = rope_reference_grid(self.patch_size) if self.interpolate_rope else None
        return Rope3D.from_ids(ids, grid_hw, self.head_dim, self.rope_layout, reference)

    @property
    def final_norm(self) -> nn.Module:
        """The norm of the last-layer tokens: ``norm``, or with deep supervision the last level's ``norms_block``."""
        if self.norms_block is not None:
            return self.norms_block[-1]
        return self.norm

    def block_norm(self, i: int) -> nn.Module:
        """The norm of block ``i``'s output (0-based): ``norm``, or with deep supervision that level's norm (only
        the :attr:`hierarchical_layers` have one)."""
        if self.hierarchical_layers is None or self.norms_block is None:
            return self.norm
        if i not in self.hierarchical_layers:
            raise ValueError(
                f"block {i} has no norm of its own: this deep-supervised encoder normalises the outputs of blocks "
                f"{self.hierarchical_layers} only"
            )
        return self.norms_block[self.hierarchical_layers.index(i)]

    def forward(self, x: Tensor, masks: Masks | None = None, training: bool = False) -> Tensor | list[Tensor]:
        """Encode ``x`` (``[B, C, H, W]`` or ``[B, C, T, H, W]``).

        Args:
            masks: indices of the tokens to keep, ``[B, K]`` or a list of ``M`` such tensors; with a list the
                kept tokens of each mask are stacked along the batch (``[M * B, K, D]``), as the official code does.
            training: V-JEPA 2.1's switch (the official keyword): with ``deep_supervision`` return the levels
                ``[B, N, n_output_distillation * D]`` that pretraining regresses and predicts from; without it
                there is one level and this changes nothing.

        Returns:
            Normalised tokens ``[B, N, D]`` (``[M * B, K, D]`` with masks; ``[B, N, L * D]`` for ``L`` levels as
            above), or, when ``out_layers`` is set, the list of normalised outputs of those blocks.
        """
        x, rope = self.embed(x, masks)
        if self.out_layers is None and self.deep_supervision and (training or self.return_hierarchical):
            assert self.hierarchical_layers is not None
            levels = self.hierarchical_layers[len(self.hierarchical_layers) - self.n_output_distillation :]
            return torch.cat(self._block_outputs(x, rope, set(levels), norm=True), dim=-1)
        return self.run_blocks(x, rope)

    def embed(self, x: Tensor, masks: Masks | None = None) -> tuple[Tensor, Rope3D | None]:
        """Pixels -> position-encoded tokens, with only the kept ones when ``masks`` is given (see :meth:`forward`),
        and their rotary angles when the model uses RoPE (else None)."""
        x, grid = self.prepare_tokens(x)
        ids = None
        if masks is not None:
            masks = [masks] if isinstance(masks, Tensor) else list(masks)
            x = apply_masks(x, masks)
            ids = torch.cat(masks, dim=0)
        rope = None
        if self.use_rope:
            rope = self.rope(ids if ids is not None else torch.arange(x.shape[1], device=x.device), grid)
        return x, rope

    def run_blocks(self, x: Tensor, rope: Rope3D | None) -> Tensor | list[Tensor]:
        """Blocks and final norm over prepared tokens; with ``out_layers`` (negative indices count from the end)
        the normalised outputs of those blocks, in block order."""
        if self.out_layers is None:
            return self._last_block(x, rope)
        depth = len(self.blocks)
        return self._block_outputs(x, rope, {i % depth for i in self.out_layers} if depth else set(), norm=True)

    def _last_block(self, x: Tensor, rope: Rope3D | None) -> Tensor:
        """All blocks then the final norm."""
        return self.final_norm(run_blocks(self.blocks, x, rope, self.use_activation_checkpointing))

    def _block_outputs(self, x: Tensor, rope: Rope3D | None, keep: set[int], norm: bool) -> list[Tensor]:
        """The outputs of blocks ``keep`` (each through its norm, :meth:`block_norm`, when ``norm``), in block
        order; blocks after the last kept one are not run."""
        ckpt = self.use_activation_checkpointing
        if not norm:
            return collect_block_outputs(self.blocks, x, keep, rope, ckpt)
        if self.norms_block is None:
            return collect_block_outputs(self.blocks, x, keep, rope, ckpt, self.final_norm)
        outs = collect_block_outputs(self.blocks, x, keep, rope, ckpt)
        return [self.block_norm(i)(o) for i, o in zip(sorted(keep), outs, strict=True)]

    def forward_features(self, x: Tensor, masks: Masks | None = None) -> Tensor:
        """Normalised last-layer tokens ``[B, N, D]`` of ``x`` (``[B, C, H, W]`` or ``[B, C, T, H, W]``), whatever
        ``out_layers`` is set to.

        ``N = T * H * W`` over the input's token grid (:meth:`input_grid`), in (t, h, w) row-major order; an image
        given to a video model is a static clip with ``T == 1``. Other resolutions and frame counts than the model
        was built for resample the position table (or use RoPE positions). ``masks`` keeps only some tokens, as in
        :meth:`forward`.
        """
        x, rope = self.embed(x, masks)
        return self._last_block(x, rope)

    @overload
    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = ...,
        norm: bool = ...,
        stop_early: bool = ...,
        output_fmt: str = ...,
        *,
        intermediates_only: Literal[True],
        masks: Masks | None = ...,
    ) -> list[Tensor]: ...

    @overload
    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = ...,
        norm: bool = ...,
        stop_early: bool = ...,
        output_fmt: str = ...,
        intermediates_only: Literal[False] = ...,
        masks: Masks | None = ...,
    ) -> tuple[Tensor, list[Tensor]]: ...

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NLC",
        intermediates_only: bool = False,
        masks: Masks | None = None,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Outputs of several blocks, in block order, with timm's signature and return convention.

        Args:
            x: ``[B, C, H, W]`` or ``[B, C, T, H, W]``.
            indices: as in timm: None takes every block, an int ``n`` the last ``n`` blocks, a sequence block indices
                (0 is the first block, negative ones count from the end; repeats count once).
            norm: apply the encoder's final LayerNorm to each intermediate (what the frozen evaluations and
                ``out_layers`` read; with deep supervision each level's own norm, so only its blocks can be asked
                for); False (timm's default) returns the raw residual stream.
            stop_early: run no block after the last one asked for (the final tokens are then those of that block).
            output_fmt: ``"NLC"`` tokens ``[B, N, D]``; ``"NCHW"`` feature maps ``[B, D, H, W]`` (images) or
                ``[B, D, T, H, W]`` (clips), not with ``masks``.
            intermediates_only: return the list alone (blocks after the last one asked for are not run).
            masks: keep only some tokens, as in :meth:`forward`.

        Returns:
            ``(final, intermediates)``: the normalised last-layer tokens (as :meth:`forward_features`) and the list;
            or the list alone with ``intermediates_only``.
        """
        if output_fmt not in ("NLC", "NCHW"):
            raise ValueError(f"output_fmt must be 'NLC' or 'NCHW', got {output_fmt!r}")
        if output_fmt == "NCHW" and masks is not None:
            raise ValueError("output_fmt='NCHW' needs every token: it cannot be combined with masks")
        depth = len(self.blocks)
        if indices is None:
            keep = set(range(depth))
        elif isinstance(indices, int):
            if not 1 <= indices <= depth:
                raise ValueError(f"indices={indices}: asks for the last n blocks, n must lie in [1, {depth}]")
            keep = set(range(depth - indices, depth))
        else:
            keep = set()
            for i in indices:
                if not -depth <= int(i) < depth:
                    raise IndexError(f"block index {i} is out of range for an encoder of depth {depth}")
                keep.add(int(i) % depth)
            if not keep:
                raise ValueError("indices lists no blocks")
        grid = self.input_grid(x)
        x, rope = self.embed(x, masks)
        last = max(keep) if stop_early or intermediates_only else depth - 1
        run = sorted(keep | {last})
        outputs = dict(zip(run, self._block_outputs(x, rope, set(run), norm=False), strict=True))
        inter = [self.block_norm(i)(outputs[i]) if norm else outputs[i] for i in sorted(keep)]
        if output_fmt == "NCHW":
            t, h, w = grid
            shape = (t, h, w) if self.is_video else (h, w)
            inter = [o.transpose(1, 2).reshape(o.shape[0], o.shape[2], *shape) for o in inter]
        if intermediates_only:
            return inter
        return self.final_norm(outputs[last]), inter

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """timm's head step: the encoder has no classifier, so both ways it mean-pools tokens ``[B, N, D]`` to
        ``[B, D]`` (``pre_logits`` is accepted for timm's signature)."""
        return x.mean(dim=1)


def _check_levels(levels: Sequence[int], depth: int, n_output_distillation: int) -> None:
    if not levels or list(levels) != sorted(set(levels)) or not all(0 <= i < depth for i in levels):
        raise ValueError(f"hierarchical_layers {list(levels)}: expected increasing block indices in [0, {depth})")
    if not 1 <= n_output_distillation <= len(levels):
        raise ValueError(f"n_output_distillation={n_output_distillation}: expected 1 .. {len(levels)} levels")


# Released sizes (the table lives in the torch-free jepa.config.spec). Every factory also sets patch 16, qkv bias and
# LayerNorm eps 1e-6, as the official ones do.
VIT_EMBED_DIMS = {name: cfg["embed_dim"] for name, cfg in VIT_SIZES.items()}
FACTORY_DEFAULTS = dict(patch_size=16, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))


def build_vit(model_name: str, **kwargs) -> VisionTransformer:
    """Build a released size by name (``"vit_large"``, ...); ``kwargs`` set everything but the size."""
    if model_name not in VIT_SIZES:
        raise ValueError(f"unknown model_name {model_name!r}; known: {', '.join(VIT_SIZES)}")
    fixed = VIT_SIZES[model_name]
    clash = sorted(set(kwargs) & set(fixed))
    if clash:
        raise TypeError(f"{model_name} fixes {', '.join(clash)}; build VisionTransformer directly to change them")
    return VisionTransformer(**{**FACTORY_DEFAULTS, **fixed, **kwargs})


def _factory(model_name: str):
    def make(**kwargs) -> VisionTransformer:
        return build_vit(model_name, **kwargs)

    cfg = VIT_SIZES[model_name]
    make.__name__ = make.__qualname__ = model_name
    make.__doc__ = (
        f"ViT of width {cfg['embed_dim']}, depth {cfg['depth']}, {cfg['num_heads']} heads, MLP ratio "
        f"{cfg['mlp_ratio']:.4g}; other keywords go to :class:`VisionTransformer`."
    )
    return make


vit_tiny = _factory("vit_tiny")
vit_small = _factory("vit_small")
vit_base = _factory("vit_base")
vit_large = _factory("vit_large")
vit_huge = _factory("vit_huge")
vit_giant = _factory("vit_giant")
vit_giant_xformers = _factory("vit_giant_xformers")
vit_gigantic = _factory("vit_gigantic")
vit_gigantic_xformers = _factory("vit_gigantic_xformers")


def build_encoder(model_name: str | None, **kwargs) -> VisionTransformer:
    """A released size by name, or, with ``model_name=None``, a custom size from ``kwargs`` (``embed_dim``,
    ``depth``, ``num_heads`` ...) with the factories' other settings (qkv bias, LayerNorm eps 1e-6)."""
    if model_name is not None:
        return build_vit(model_name, **kwargs)
    return VisionTransformer(**{**FACTORY_DEFAULTS, **kwargs})
