"""The JEPA predictor: context tokens plus mask tokens at the target positions -> predicted target features."""

import math
from collections.abc import Sequence
from functools import partial
from typing import Literal, overload

import torch
from torch import Tensor, nn

from jepa.masks import apply_masks, repeat_interleave_batch
from jepa.models.layers import Block, NormLayer
from jepa.models.rope import Rope3D, RopeLayout, check_rope_layout, rope_reference_grid
from jepa.models.trunk import build_blocks, init_trunk, run_blocks
from jepa.models.vision_transformer import Masks, Modality, frozen_sincos_embed, to_hw, token_grid


class VisionTransformerPredictor(nn.Module):
    """Narrow ViT that predicts target-token features from context tokens (I-JEPA, V-JEPA, V-JEPA 2).

    The token grid is given as the official V-JEPA code does (``img_size``, ``patch_size``, ``num_frames``,
    ``tubelet_size``) or as I-JEPA does (``num_patches`` of a square 2D grid). There is one learned mask token per
    mask configuration (``num_mask_tokens``); I-JEPA checkpoints' single ``mask_token`` loads as ``mask_tokens.0``.

    With RoPE the released V-JEPA 2 predictor decodes token positions on a square grid of the construction height,
    whatever the width (it never receives the input grid). ``square_rope_grid=True`` (the default) keeps that so
    released weights and outputs match; set it to ``False`` to train on non-square grids with correct positions.

    V-JEPA 2.1's options (off by default, so a V-JEPA 2 predictor is unchanged):

    * ``n_output_distillation > 1``: the context comes as that many levels concatenated (``[.., n * embed_dim]``,
      the deep-supervised encoder's training output) and is embedded by ``predictor_embed`` =
      ``Linear(n * embed_dim, embed_dim) -> GELU (SiLU with use_silu) -> Linear(embed_dim, predictor_embed_dim)``
      (keys ``predictor_embed.{0,2}``); predictions are ``n * out_embed_dim`` wide, where ``out_embed_dim``
      defaults to ``teacher_embed_dim // n`` when a (distillation) teacher's width is given, else ``embed_dim``.
    * ``return_all_tokens``: dense prediction; ``predictor_proj_context`` maps the context tokens' outputs to
      predictions of the target encoder's features at the context positions (``forward(..., return_context=True)``).
    * ``img_temporal_dim_size`` with ``modality_embedding``: learned ``img_mod_embed`` / ``video_mod_embed`` added
      to every token, chosen by ``forward``'s ``mod`` (the predictor is told which modality it predicts).
    * ``rope_layout`` and ``interpolate_rope`` as in the encoder; positions are rescaled from the grid they are
      decoded on.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        num_frames: int = 1,
        tubelet_size: int = 2,
        embed_dim: int = 768,
        predictor_embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: NormLayer = nn.LayerNorm,
        init_std: float = 0.02,
        uniform_power: bool = False,
        use_mask_tokens: bool = True,
        num_mask_tokens: int = 1,
        zero_init_mask_tokens: bool = True,
        use_silu: bool = False,
        wide_silu: bool = True,
        use_sdpa: bool = True,
        use_activation_checkpointing: bool = False,
        use_rope: bool = False,
        square_rope_grid: bool = True,
        num_patches: int | None = None,
        n_output_distillation: int = 1,
        out_embed_dim: int | None = None,
        teacher_embed_dim: int | None = None,
        return_all_tokens: bool = False,
        img_temporal_dim_size: int | None = None,
        modality_embedding: bool = False,
        rope_layout: RopeLayout = "duplicated",
        interpolate_rope: bool = False,
    ) -> None:
        super().__init__()
        _check_mask_tokens(use_mask_tokens, num_mask_tokens)
        check_rope_layout(rope_layout)
        if n_output_distillation < 1:
            raise ValueError(f"n_output_distillation must be >= 1, got {n_output_distillation}")
        if interpolate_rope:
            if not use_rope:
                raise ValueError("interpolate_rope rescales RoPE positions: it needs use_rope=True")
            rope_reference_grid(patch_size)
        if num_patches is not None:
            img_size, num_frames = _square_img_size(num_patches, patch_size), 1
        self.img_height, self.img_width = to_hw(img_size)
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.is_video = num_frames > 1
        self.embed_dim = embed_dim
        self.predictor_embed_dim = predictor_embed_dim
        self.num_heads = num_heads
        self.use_rope = use_rope
        self.square_rope_grid = square_rope_grid
        self.use_activation_checkpointing = use_activation_checkpointing
        self.rope_layout = rope_layout
        self.interpolate_rope = interpolate_rope
        self.return_all_tokens = return_all_tokens
        self.n_output_distillation = n_output_distillation
        self.grid = token_grid((self.img_height, self.img_width), patch_size, num_frames, tubelet_size)
        self.num_patches = self.grid[0] * self.grid[1] * self.grid[2]
        if out_embed_dim is None:
            out_embed_dim = embed_dim if teacher_embed_dim is None else teacher_embed_dim // n_output_distillation
        self.out_embed_dim = out_embed_dim

        self.predictor_embed: nn.Linear | nn.Sequential
        if n_output_distillation == 1:
            self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim)
        else:
            act = nn.SiLU if use_silu else nn.GELU
            width = n_output_distillation * embed_dim
            self.predictor_embed = nn.Sequential(
                nn.Linear(width, embed_dim), act(), nn.Linear(embed_dim, predictor_embed_dim)
            )
        self.num_mask_tokens = num_mask_tokens
        self.mask_tokens = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 1, predictor_embed_dim)) for _ in range(num_mask_tokens)
        )
        self.predictor_pos_embed = (
            None if use_rope else frozen_sincos_embed(predictor_embed_dim, self.grid, self.is_video, uniform_power)
        )
        block = partial(
            Block,
            predictor_embed_dim,
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
        self.modality_embedding = modality_embedding and img_temporal_dim_size is not None  # as officially
        if self.modality_embedding:
            self.video_mod_embed = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
            self.img_mod_embed = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
        self.predictor_blocks = build_blocks(depth, drop_path_rate, block)
        self.predictor_norm = norm_layer(predictor_embed_dim)
        self.predictor_proj = nn.Linear(predictor_embed_dim, n_output_distillation * out_embed_dim)
        if return_all_tokens:
            self.predictor_proj_context = nn.Linear(predictor_embed_dim, n_output_distillation * out_embed_dim)

        self.init_std = init_std
        if not zero_init_mask_tokens:
            for token in self.mask_tokens:
                nn.init.trunc_normal_(token, std=init_std, a=-2.0, b=2.0)
        init_trunk(self, self.predictor_blocks, init_std)
        if self.modality_embedding:
            nn.init.normal_(self.video_mod_embed, std=1e-6)  # the official initialisation: next to zero
            nn.init.normal_(self.img_mod_embed, std=1e-6)
        self.register_load_state_dict_pre_hook(_ijepa_mask_token)

    @overload
    def forward(
        self,
        ctxt: Tensor,
        masks_ctxt: Masks,
        masks_tgt: Masks,
        mask_index: int = ...,
        mod: Modality = ...,
        return_context: Literal[False] = ...,
        grid_hw: tuple[int, int] | None = ...,
    ) -> Tensor: ...

    @overload
    def forward(
        self,
        ctxt: Tensor,
        masks_ctxt: Masks,
        masks_tgt: Masks,
        mask_index: int = ...,
        mod: Modality = ...,
        *,
        return_context: Literal[True],
        grid_hw: tuple[int, int] | None = ...,
    ) -> tuple[Tensor, Tensor]: ...

    def forward(
        self,
        ctxt: Tensor,
        masks_ctxt: Masks,
        masks_tgt: Masks,
        mask_index: int = 0,
        mod: Modality = "video",
        return_context: bool = False,
        grid_hw: tuple[int, int] | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Predict the target tokens.

        Args:
            ctxt: encoder outputs for the context, ``[M_c * B, K_c, n * embed_dim]`` (one chunk of ``B`` per context
                mask, as the encoder returns them for a list of masks; ``n = n_output_distillation`` levels).
            masks_ctxt: ``M_c`` LongTensors ``[B, K_c]``: grid indices of the context tokens.
            masks_tgt: ``M_t`` LongTensors ``[B, K_t]``: grid indices of the tokens to predict.
            mask_index: which mask token to use (taken modulo ``num_mask_tokens``); V-JEPA uses one per mask config,
                V-JEPA 2 one per clip length (:meth:`jepa.config.PretrainConfig.mask_token_index`).
            mod: ``"image"`` or ``"video"``: the modality embedding to add (with ``modality_embedding``; the
                official keyword and values).
            return_context: also return the predictions for the context tokens (needs ``return_all_tokens``).
            grid_hw: the token grid ``(H, W)`` the indices refer to, for RoPE (None: the grid built for; with
                ``square_rope_grid`` the square of its height, as the released predictors decode positions). Give
                it when the batch's crop differs from the construction one (images next to video in one process).

        Returns:
            ``[M_t * M_c * B, K_t, n * out_embed_dim]``: for target mask 0 every context chunk, then target mask 1,
            ... (I-JEPA's order for several targets per context; ``[B, K_t, D]`` for one pair); with
            ``return_context`` also the context predictions ``[M_t * M_c * B, K_c, n * out_embed_dim]``.
        """
        if mod not in ("image", "video"):
            raise ValueError(f"mod must be 'image' or 'video', got {mod!r}")
        if return_context and not self.return_all_tokens:
            raise ValueError("return_context=True needs a predictor built with return_all_tokens=True")
        masks_ctxt = [masks_ctxt] if isinstance(masks_ctxt, Tensor) else list(masks_ctxt)
        masks_tgt = [masks_tgt] if isinstance(masks_tgt, Tensor) else list(masks_tgt)
        n_ctxt, n_tgt = len(masks_ctxt), len(masks_tgt)
        B = ctxt.shape[0] // n_ctxt

        x = self.predictor_embed(ctxt)
        n_ctxt_tokens = x.shape[1]
        if self.predictor_pos_embed is not None:
            x = x + apply_masks(self.predictor_pos_embed.expand(B, -1, -1), masks_ctxt)

        token = self.mask_tokens[mask_index % self.num_mask_tokens]
        tgt_ids = repeat_interleave_batch(torch.cat(masks_tgt, dim=0), B, repeat=n_ctxt)
        pred = token.expand(tgt_ids.shape[0], tgt_ids.shape[1], -1)
        if self.predictor_pos_embed is not None:
            pos = apply_masks(self.predictor_pos_embed.expand(B, -1, -1), masks_tgt)
            pred = pred + repeat_interleave_batch(pos, B, repeat=n_ctxt)

        x = torch.cat([x.repeat(n_tgt, 1, 1), pred], dim=1)
        if self.modality_embedding:
            x = x + (self.img_mod_embed if mod == "image" else self.video_mod_embed)
        rope = None
        if self.use_rope:
            ids = torch.cat([torch.cat(masks_ctxt, dim=0).repeat(n_tgt, 1), tgt_ids], dim=1)
            rope = self.rope(ids, self.grid[1:] if grid_hw is None else grid_hw)

        x = run_blocks(self.predictor_blocks, x, rope, self.use_activation_checkpointing)
        x = self.predictor_norm(x)
        out = self.predictor_proj(x[:, n_ctxt_tokens:])
        if return_context:
            return out, self.predictor_proj_context(x[:, :n_ctxt_tokens])
        return out

    def rope(self, ids: Tensor, grid_hw: tuple[int, int]) -> Rope3D:
        """Rotary angles of tokens ``ids`` ``[B, N]`` on a token grid ``grid_hw`` (read as the square of its height
        with ``square_rope_grid``)."""
        hw = (grid_hw[0], grid_hw[0]) if self.square_rope_grid else (grid_hw[0], grid_hw[1])
        reference = rope_reference_grid(self.patch_size) if self.interpolate_rope else None
        head_dim = self.predictor_embed_dim // self.num_heads
        return Rope3D.from_ids(ids, hw, head_dim, self.rope_layout, reference)


def _check_mask_tokens(use_mask_tokens: bool, num_mask_tokens: int) -> None:
    if not use_mask_tokens:
        raise ValueError(
            "use_mask_tokens=False selects V-JEPA's unused diffusion variant of the predictor, which this toolkit "
            "does not implement; every released model uses mask tokens"
        )
    if num_mask_tokens < 1:
        raise ValueError(f"num_mask_tokens must be >= 1, got {num_mask_tokens}")


def _square_img_size(num_patches: int, patch_size: int) -> int:
    """Side in pixels of I-JEPA's square 2D grid of ``num_patches`` tokens."""
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"num_patches={num_patches} is not a square grid; pass img_size and patch_size")
    return side * patch_size


def _ijepa_mask_token(module, state_dict, prefix, *args) -> None:
    # I-JEPA saved its one mask token as `mask_token`; here it is the first entry of `mask_tokens`.
    key = prefix + "mask_token"
    if key in state_dict:
        state_dict[prefix + "mask_tokens.0"] = state_dict.pop(key)


def vit_predictor(**kwargs) -> VisionTransformerPredictor:
    """The official predictor factory: MLP ratio 4, qkv bias, LayerNorm eps 1e-6; ``kwargs`` set the rest."""
    defaults = dict(mlp_ratio=4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    return VisionTransformerPredictor(**{**defaults, **kwargs})
