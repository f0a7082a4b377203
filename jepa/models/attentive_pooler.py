"""Attentive pooling and the attentive probe used for frozen evaluation."""

from functools import partial

import torch
from torch import Tensor, nn

from jepa.models.layers import Block, CrossAttention, CrossAttentionBlock, NormLayer
from jepa.models.trunk import build_blocks, init_trunk, rescale_residual_branches, run_blocks


class AttentivePooler(nn.Module):
    """Learned queries ``[1, num_queries, D]`` cross-attend to tokens ``[B, N, D]`` -> ``[B, num_queries, D]``.

    ``depth - 1`` extra self-attention blocks run, by default, over the input tokens before the cross-attention
    (V-JEPA 2; its released probes have depth 4). ``blocks_on_queries=True`` runs them over the pooled queries after
    the cross-attention instead, as V-JEPA 1's code did (its released probes have depth 1, where the two agree).
    """

    def __init__(
        self,
        num_queries: int = 1,
        embed_dim: int = 768,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        depth: int = 1,
        norm_layer: NormLayer = nn.LayerNorm,
        init_std: float = 0.02,
        qkv_bias: bool = True,
        complete_block: bool = True,
        use_activation_checkpointing: bool = False,
        use_sdpa: bool = True,
        blocks_on_queries: bool = False,
    ) -> None:
        super().__init__()
        self.blocks_on_queries = blocks_on_queries
        self.use_activation_checkpointing = use_activation_checkpointing
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
        self.cross_attention_block: CrossAttentionBlock | CrossAttention
        if complete_block:
            self.cross_attention_block = CrossAttentionBlock(
                embed_dim, num_heads, mlp_ratio, qkv_bias, norm_layer=norm_layer, use_sdpa=use_sdpa
            )
        else:
            self.cross_attention_block = CrossAttention(embed_dim, num_heads, qkv_bias, use_sdpa)
        self.blocks: nn.ModuleList | None = None
        if depth > 1:
            block = partial(
                Block, embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, norm_layer=norm_layer, use_sdpa=use_sdpa
            )
            self.blocks = build_blocks(depth - 1, 0.0, block)
        self.init_std = init_std
        nn.init.trunc_normal_(self.query_tokens, std=init_std, a=-2.0, b=2.0)
        blocks: list[nn.Module] = list(self.blocks or [])
        init_trunk(self, blocks, init_std)
        if isinstance(self.cross_attention_block, CrossAttentionBlock):
            # The official probe gives the pooling block the layer id of the last self-attention block (1 if none).
            rescale_residual_branches([self.cross_attention_block], first_layer_id=max(len(blocks), 1))

    def forward(self, x: Tensor) -> Tensor:
        """Tokens ``[B, N, D]`` -> pooled ``[B, num_queries, D]``."""
        ckpt = self.use_activation_checkpointing
        if self.blocks is not None and not self.blocks_on_queries:
            x = run_blocks(self.blocks, x, checkpointing=ckpt)
        q = self.query_tokens.expand(x.shape[0], -1, -1)
        q = self.cross_attention_block(q, x)
        if self.blocks is not None and self.blocks_on_queries:
            q = run_blocks(self.blocks, q, checkpointing=ckpt)
        return q


class AttentiveClassifier(nn.Module):
    """Attentive probe: one learned query pools the tokens, a linear layer classifies. ``[B, N, D] -> [B, C]``."""

    def __init__(
        self,
        embed_dim: int = 768,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        depth: int = 1,
        norm_layer: NormLayer = nn.LayerNorm,
        init_std: float = 0.02,
        qkv_bias: bool = True,
        num_classes: int = 1000,
        complete_block: bool = True,
        use_activation_checkpointing: bool = False,
        use_sdpa: bool = True,
        blocks_on_queries: bool = False,
    ) -> None:
        super().__init__()
        self.pooler = AttentivePooler(
            num_queries=1,
            embed_dim=embed_dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            depth=depth,
            norm_layer=norm_layer,
            init_std=init_std,
            qkv_bias=qkv_bias,
            complete_block=complete_block,
            use_activation_checkpointing=use_activation_checkpointing,
            use_sdpa=use_sdpa,
            blocks_on_queries=blocks_on_queries,
        )
        self.linear = nn.Linear(embed_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.pooler(x).squeeze(1))
