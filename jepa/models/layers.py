"""Transformer building blocks shared by the encoder, the predictor and the attentive probe.

Parameter names follow the official JEPA releases (``attn.qkv``, ``attn.proj``, ``mlp.fc1`` ...), so their
checkpoints load without renaming.
"""

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from jepa.models.rope import Rope3D

logger = logging.getLogger(__name__)

NormLayer = Callable[[int], nn.Module]


class SwiGLUFFN(nn.Module):
    """Gated MLP used by V-JEPA 2 when ``use_silu=True``: ``fc3(silu(fc1(x)) * fc2(x))``.

    With ``wide_silu`` the hidden width is ``2/3`` of the nominal one, rounded up to a multiple of 8.
    """

    def __init__(self, in_features: int, hidden_features: int, wide_silu: bool = True, drop: float = 0.0) -> None:
        super().__init__()
        if wide_silu:
            hidden_features = (int(2 * hidden_features / 3) + 7) // 8 * 8
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(in_features, hidden_features)
        self.fc3 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc3(F.silu(self.fc1(x)) * self.fc2(x)))


def _attend(
    q: Tensor, k: Tensor, v: Tensor, scale: float, use_sdpa: bool, drop_p: float = 0.0, attn_mask: Tensor | None = None
) -> Tensor:
    """Softmax attention ``[B, h, n, d] x [B, h, N, d] -> [B, h, n, d]`` through SDPA or written out.

    Both paths compute the same function (the explicit one exists for attention maps and as a reference).
    ``drop_p`` is the attention dropout to apply now (pass 0 outside training); ``attn_mask`` a boolean ``[n, N]``
    (``True``: may attend; None: every pair), e.g. the world model's block-causal mask.
    """
    if use_sdpa:
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # torch's CPU attention backward is several times slower in bf16 than in float32 (measured with
            # benchmarks/train_step.py --profile: 413 vs 64 ms per ViT-tiny step), which cancels what bf16 matrix
            # products gain: attend in float32 and hand back bf16.
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), attn_mask=attn_mask, dropout_p=drop_p, scale=scale
                )
            return out.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop_p, scale=scale)
    logits = (q @ k.transpose(-2, -1)) * scale
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf"))
    attn = logits.softmax(dim=-1)
    return F.dropout(attn, drop_p) @ v if drop_p > 0 else attn @ v


class Attention(nn.Module):
    """Multi-head self-attention with an optional 3D rotary embedding of queries and keys."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.use_sdpa = use_sdpa
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, rope: Rope3D | None = None, attn_mask: Tensor | None = None) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = rope.rotate(q), rope.rotate(k)
        x = _attend(q, k, v, self.scale, self.use_sdpa, self.attn_drop.p if self.training else 0.0, attn_mask)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``, with stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: NormLayer = nn.LayerNorm,
        use_sdpa: bool = True,
        use_silu: bool = False,
        wide_silu: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop, use_sdpa)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp: SwiGLUFFN | Mlp
        if use_silu:
            self.mlp = SwiGLUFFN(dim, hidden, wide_silu=wide_silu, drop=drop)
        else:
            self.mlp = Mlp(dim, hidden, act_layer=act_layer, drop=drop)

    def forward(self, x: Tensor, rope: Rope3D | None = None, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), rope, attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossAttention(nn.Module):
    """Queries ``[B, n, D]`` attend to tokens ``[B, N, D]``; there is no output projection.

    V-JEPA 1 built an ``proj`` layer here but never applied it, so its probe checkpoints carry
    ``xattn.proj.{weight,bias}`` that played no part in any reported result. Loading such a file drops those two
    tensors (with a log line) instead of failing, and the projection stays unapplied, as in the released probes.
    """

    def __init__(self, dim: int, num_heads: int = 12, qkv_bias: bool = False, use_sdpa: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.use_sdpa = use_sdpa
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.register_load_state_dict_pre_hook(_drop_unapplied_vjepa1_proj)

    def forward(self, q: Tensor, x: Tensor) -> Tensor:
        B, n, C = q.shape
        N = x.shape[1]
        q = self.q(q).reshape(B, n, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = _attend(q, k, v, self.scale, self.use_sdpa)
        return q.transpose(1, 2).reshape(B, n, C)


def _drop_unapplied_vjepa1_proj(module, state_dict, prefix, *args) -> None:
    dropped = [k for k in (prefix + "proj.weight", prefix + "proj.bias") if state_dict.pop(k, None) is not None]
    if dropped:
        logger.info("ignoring %s: V-JEPA 1 probes stored this projection but never applied it", ", ".join(dropped))


class CrossAttentionBlock(nn.Module):
    """``q + xattn(q, norm1(x))`` then ``q + mlp(norm2(q))``: the pooling block of the attentive probe."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: NormLayer = nn.LayerNorm,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias, use_sdpa)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)

    def forward(self, q: Tensor, x: Tensor) -> Tensor:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class PatchEmbed(nn.Module):
    """Pixels to tokens: 2D patches (``[B, C, H, W]``) or, with ``tubelet_size``, 3D tubelets (``[B, C, T, H, W]``).

    Returns ``[B, N, D]`` tokens in (t, h, w) row-major order.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, tubelet_size: int | None = None) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.proj: nn.Conv2d | nn.Conv3d
        if tubelet_size is None:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        else:
            kernel = (tubelet_size, patch_size, patch_size)
            self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def init_weights(module: nn.Module, std: float) -> None:
    """Truncated-normal linear/conv weights, zero biases, unit LayerNorms (the official initialisation)."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
        nn.init.trunc_normal_(module.weight, std=std, a=-2.0, b=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
