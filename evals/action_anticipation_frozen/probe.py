"""The anticipation probe (three queries, three linear heads) and its losses.

State-dict keys are the official ones: ``pooler.*`` (:class:`jepa.models.AttentivePooler` with three queries),
``verb_classifier.*``, ``noun_classifier.*``, ``action_classifier.*``, so official probe files load strictly.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepa.models import AttentivePooler

HEADS = ("verb", "noun", "action")
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # the official focal loss's (RetinaNet's)


class AnticipationClassifier(nn.Module):
    """Tokens ``[B, N, D]`` -> logits ``(verb [B, V], noun [B, Nn], action [B, A])``: three learned queries pool the
    tokens (query 0 for the verb, 1 the noun, 2 the action), each through its own linear head.

    ``depth`` is the pooler's: one cross-attention block after ``depth - 1`` self-attention blocks over the tokens
    (V-JEPA 2's layout), or before them, over the queries, with ``blocks_on_queries``.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        depth: int,
        num_verbs: int,
        num_nouns: int,
        num_actions: int,
        use_sdpa: bool = True,
        use_activation_checkpointing: bool = False,
        blocks_on_queries: bool = False,
    ) -> None:
        super().__init__()
        self.pooler = AttentivePooler(
            num_queries=len(HEADS), embed_dim=embed_dim, num_heads=num_heads, depth=depth, use_sdpa=use_sdpa,
            use_activation_checkpointing=use_activation_checkpointing, blocks_on_queries=blocks_on_queries,
        )  # fmt: skip
        self.verb_classifier = nn.Linear(embed_dim, num_verbs)
        self.noun_classifier = nn.Linear(embed_dim, num_nouns)
        self.action_classifier = nn.Linear(embed_dim, num_actions)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q = self.pooler(x)  # [B, 3, D]
        return self.verb_classifier(q[:, 0]), self.noun_classifier(q[:, 1]), self.action_classifier(q[:, 2])


def sigmoid_focal_loss(
    logits: Tensor, labels: Tensor, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA
) -> Tensor:
    """The sigmoid focal loss (Lin et al., 2017) of logits ``[..., B, C]`` against class indices ``[B]``, summed over
    the batch and the classes (the official reduction): ``[...]``.

    With one-hot targets ``y``, ``p = sigmoid(logit)`` and ``p_t = p`` where ``y = 1`` else ``1 - p``, each entry
    costs ``a_t * (1 - p_t) ** gamma * BCE(logit, y)``, ``a_t = alpha`` where ``y = 1`` else ``1 - alpha``.
    """
    target = F.one_hot(labels, logits.shape[-1]).to(logits.dtype).expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t) ** gamma * bce).sum(dim=(-2, -1))


def head_loss(logits: Tensor, labels: Tensor, focal: bool) -> Tensor:
    """Per probe, the loss of one head's logits ``[K, B, C]``: the focal loss summed over the batch (``focal``) or
    cross-entropy averaged over it, as the official eval reduces each; ``[K]``."""
    if focal:
        return sigmoid_focal_loss(logits.float(), labels)
    k, b, c = logits.shape
    ce = F.cross_entropy(logits.float().reshape(k * b, c), labels.repeat(k), reduction="none")
    return ce.view(k, b).mean(dim=1)
