"""The action-conditioned predictor of V-JEPA 2-AC: a world model in the frozen encoder's token space.

Per time step ``t`` the predictor reads the encoder tokens of frame ``t`` (``H * W`` of them: each frame was encoded
on its own as a static 2-frame tubelet) together with the step's action ``a_t``, the robot state ``s_t`` and,
optionally, the camera extrinsics ``e_t``, each embedded by its own linear layer. The sequence is laid out step by
step as ``[a_0, s_0, (e_0), patches_0, a_1, s_1, ...]`` and attention is block-causal in time: a token of step ``t``
sees every token of the steps ``<= t`` and none after (:func:`action_block_causal_mask`). The output at the patch
tokens of step ``t`` is the prediction of frame ``t + 1``.

Positions: frame tokens get V-JEPA 2's 3D RoPE (:mod:`jepa.models.rope`); the action / state / extrinsics tokens get
the time part only (their height and width channels are left unrotated), as the released model does.

Constructor keywords and ``state_dict()`` keys equal the official ``VisionTransformerPredictorAC`` ones
(``predictor_embed``, ``action_encoder``, ``state_encoder``, ``extrinsics_encoder``, ``predictor_blocks.{i}.*``,
``predictor_norm``, ``predictor_proj``), so the released ``vjepa2_ac_vit_giant`` predictor loads strictly. The
official class always builds ``extrinsics_encoder`` (also with ``use_extrinsics=False``), so its files carry it and
so does this one.
"""

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn

from jepa.models.layers import Block, NormLayer
from jepa.models.rope import Rope3D, rope_axis_dim
from jepa.models.trunk import build_blocks, init_trunk, run_block
from jepa.models.vision_transformer import to_hw

__all__ = ["VisionTransformerPredictorAC", "action_block_causal_mask", "ac_rope", "vit_ac_predictor"]


def action_block_causal_mask(num_steps: int, grid_h: int, grid_w: int, cond_tokens: int) -> Tensor:
    """Boolean attention mask ``[N, N]`` (``True``: may attend) of ``num_steps`` steps of ``cond_tokens + grid_h *
    grid_w`` tokens each, ``N = num_steps * (cond_tokens + grid_h * grid_w)``: query ``i`` of step ``t_i`` may attend
    key ``j`` of step ``t_j`` iff ``t_j <= t_i`` (full attention within a step, none to later steps)."""
    per_step = cond_tokens + grid_h * grid_w
    step = torch.arange(num_steps).repeat_interleave(per_step)
    return step.unsqueeze(1) >= step.unsqueeze(0)


def _axis_angles(pos: Tensor, dim: int) -> Tensor:
    # V-JEPA 2's angle layout (jepa.models.rope, "duplicated") for real-valued positions, which Rope3D.from_ids
    # (integer token indices) cannot take: float32, the released order of operations.
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0))
    freq = pos.to(torch.float32).unsqueeze(-1) * omega
    return torch.cat([freq, freq], dim=-1)


def ac_rope(
    num_steps: int, grid_h: int, grid_w: int, cond_tokens: int, head_dim: int, *, square_rope_grid: bool = True,
    device: torch.device | str | None = None,
) -> Rope3D:  # fmt: skip
    """Rotary angles of the predictor's token sequence (see the module docstring), ``cos``/``sin`` of
    ``[N, 3 * rope_axis_dim(head_dim)]`` in sequence order.

    Frame tokens of step ``t`` at grid cell ``(h, w)`` turn by ``(t, h, w)``; the conditioning tokens of step ``t``
    by ``(t, 0, 0)``, i.e. their height and width channels by angle 0 (cosine 1, sine 0: left as they are, exactly).
    ``square_rope_grid``: the released model scales width positions by ``grid_h / grid_w`` (it snaps them onto a
    square grid of the height); keep it for released weights, set False for true positions on non-square grids.
    """
    dim = rope_axis_dim(head_dim)
    if dim == 0:
        raise ValueError(f"head width {head_dim} is too small for 3D RoPE (needs at least 6 channels)")
    hw = grid_h * grid_w
    t = torch.arange(num_steps, device=device).repeat_interleave(cond_tokens + hw).float()
    cell = torch.arange(hw, device=device)
    h_frame = (cell // grid_w).float()
    w_frame = (cell % grid_w).float()
    if square_rope_grid:
        w_frame = w_frame * (grid_h / grid_w)
    zeros = torch.zeros(cond_tokens, device=device)
    h = torch.cat([zeros, h_frame]).repeat(num_steps)
    w = torch.cat([zeros, w_frame]).repeat(num_steps)
    angles = torch.cat([_axis_angles(p, dim) for p in (t, h, w)], dim=-1)
    return Rope3D(cos=angles.cos(), sin=angles.sin())


class VisionTransformerPredictorAC(nn.Module):
    """Action-conditioned ViT predictor (V-JEPA 2-AC), with the official keywords and parameter names.

    ``img_size`` / ``patch_size`` fix the frame token grid ``(H, W)``; ``num_frames // tubelet_size`` is the longest
    sequence the official class builds its mask for (any number of steps works here). ``action_embed_dim`` is the
    width of actions and states (7 for DROID: position, Euler angles, gripper); extrinsics have one channel less.
    ``uniform_power`` is accepted for the official signature and unused (there is no position table: RoPE, or no
    positions at all with ``use_rope=False``, as officially). ``square_rope_grid``: see :func:`ac_rope`.

    The official attention applies ``drop_rate`` as attention dropout in eval mode too; here dropout (``drop_rate``
    on the projections, ``attn_drop_rate`` on attention weights) acts in training only. All released models use 0.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = (224, 224),
        patch_size: int = 16,
        num_frames: int = 1,
        tubelet_size: int = 2,
        embed_dim: int = 768,
        predictor_embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: NormLayer = nn.LayerNorm,
        init_std: float = 0.02,
        uniform_power: bool = True,
        use_silu: bool = False,
        wide_silu: bool = True,
        is_frame_causal: bool = True,
        use_activation_checkpointing: bool = False,
        use_rope: bool = True,
        action_embed_dim: int = 7,
        use_extrinsics: bool = False,
        use_sdpa: bool = True,
        square_rope_grid: bool = True,
    ) -> None:
        super().__init__()
        if action_embed_dim < 2:
            raise ValueError(
                f"action_embed_dim must be >= 2 (extrinsics have one channel less), got {action_embed_dim}"
            )
        self.img_height, self.img_width = to_hw(img_size)
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.grid_height = self.img_height // patch_size
        self.grid_width = self.img_width // patch_size
        self.embed_dim = embed_dim
        self.predictor_embed_dim = predictor_embed_dim
        self.num_heads = num_heads
        self.action_embed_dim = action_embed_dim
        self.is_frame_causal = is_frame_causal
        self.use_extrinsics = use_extrinsics
        self.use_rope = use_rope
        self.square_rope_grid = square_rope_grid
        self.uniform_power = uniform_power
        self.use_activation_checkpointing = use_activation_checkpointing
        self.cond_tokens = 3 if use_extrinsics else 2

        # Registered in the official order, so that a seeded initialisation draws the same weights.
        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim)
        self.action_encoder = nn.Linear(action_embed_dim, predictor_embed_dim)
        self.state_encoder = nn.Linear(action_embed_dim, predictor_embed_dim)
        self.extrinsics_encoder = nn.Linear(action_embed_dim - 1, predictor_embed_dim)
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
        self.predictor_blocks = build_blocks(depth, drop_path_rate, block)
        self.predictor_norm = norm_layer(predictor_embed_dim)
        self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim)
        self.init_std = init_std
        init_trunk(self, self.predictor_blocks, init_std)

    @property
    def tokens_per_frame(self) -> int:
        return self.grid_height * self.grid_width

    def forward(self, x: Tensor, actions: Tensor, states: Tensor, extrinsics: Tensor | None = None) -> Tensor:
        """Predict the next frame's tokens at every step.

        Args:
            x: encoder tokens of ``T`` frames ``[B, T * H * W, embed_dim]``, frame-major ((t, h, w) row-major).
            actions: ``[B, T, action_embed_dim]``: ``actions[:, t]`` moves frame ``t`` to frame ``t + 1``.
            states: ``[B, T, action_embed_dim]``: the state at frame ``t``.
            extrinsics: ``[B, T, action_embed_dim - 1]``, required with ``use_extrinsics`` (else ignored).

        Returns:
            ``[B, T * H * W, embed_dim]``: at step ``t`` the prediction of frame ``t + 1``'s tokens.
        """
        B, N, _ = x.shape
        hw = self.tokens_per_frame
        if N % hw:
            raise ValueError(f"x has {N} tokens, not a whole number of frames of {self.grid_height}x{self.grid_width}")
        T = N // hw
        cond = [("actions", actions, self.action_encoder), ("states", states, self.state_encoder)]
        if self.use_extrinsics:
            if extrinsics is None:
                raise ValueError("use_extrinsics=True: forward needs extrinsics [B, T, action_embed_dim - 1]")
            cond.append(("extrinsics", extrinsics, self.extrinsics_encoder))
        tokens = []
        for name, value, encoder in cond:
            if value.shape[:2] != (B, T) or value.shape[-1] != encoder.in_features:
                raise ValueError(
                    f"{name}: got shape {tuple(value.shape)}, expected [{B}, {T}, {encoder.in_features}] "
                    f"(one row per frame of x)"
                )
            tokens.append(encoder(value).unsqueeze(2))
        z = self.predictor_embed(x).view(B, T, hw, -1)
        z = torch.cat([*tokens, z], dim=2).flatten(1, 2)  # [B, T * (K + H * W), D]

        K = self.cond_tokens
        mask = action_block_causal_mask(T, self.grid_height, self.grid_width, K).to(z.device) \
            if self.is_frame_causal else None  # fmt: skip
        rope = None
        if self.use_rope:
            rope = ac_rope(T, self.grid_height, self.grid_width, K, self.predictor_embed_dim // self.num_heads,
                           square_rope_grid=self.square_rope_grid, device=z.device)  # fmt: skip
        for blk in self.predictor_blocks:
            z = run_block(blk, z, rope, self.use_activation_checkpointing, attn_mask=mask)
        z = z.view(B, T, K + hw, -1)[:, :, K:].flatten(1, 2)
        return self.predictor_proj(self.predictor_norm(z))


def vit_ac_predictor(**kwargs) -> VisionTransformerPredictorAC:
    """The official factory: MLP ratio 4, qkv bias, LayerNorm eps 1e-6; ``kwargs`` set the rest."""
    defaults = dict(mlp_ratio=4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    return VisionTransformerPredictorAC(**{**defaults, **kwargs})
