"""Class-mean recall@k, the EPIC-KITCHENS-100 anticipation metric, for several probes at once.

For each class ``c`` with at least one sample: ``recall_c = hits_c / samples_c``, where a sample of class ``c`` is
a hit when ``c`` is among the probe's ``k`` highest scores. The metric is the mean of ``recall_c`` over the classes
that have samples in the split (the official ``ClassMeanRecall``: classes without samples do not count). The
counts are sums over the split and over ranks (:meth:`ClassMeanRecall.reduce` all-reduces them), so the result
is the metric of the whole split, not a mean of per-rank or per-batch means.
"""

import torch
from torch import Tensor

from jepa.runtime.distributed import all_reduce_sum


class ClassMeanRecall:
    """Per probe and class: samples and top-``k`` hits of one head over a split.

    Args:
        num_probes: ``K``, probes scored together.
        num_classes: the head's classes.
        device: where the counts live (the backend's device for the all-reduce).
        k: the ``k`` of recall@k (capped at ``num_classes``).
    """

    def __init__(self, num_probes: int, num_classes: int, device: torch.device | str, k: int = 5) -> None:
        self.k = min(k, num_classes)
        self.counts = torch.zeros(2, num_probes, num_classes, dtype=torch.float64, device=device)  # samples, hits

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Count a batch: logits ``[K, B, C]`` (any monotone score: the official code ranks sigmoids), labels
        ``[B]``. Ties are broken by ``torch.topk``."""
        top = logits.topk(self.k, dim=-1).indices  # [K, B, k]
        hit = (top == labels.view(1, -1, 1)).any(dim=-1).double()  # [K, B]
        index = labels.view(1, -1).expand_as(hit)
        self.counts[0].scatter_add_(1, index, torch.ones_like(hit))
        self.counts[1].scatter_add_(1, index, hit)

    def reduce(self) -> "ClassMeanRecall":
        """Sum the counts over all ranks (in place)."""
        all_reduce_sum(self.counts)
        return self

    @property
    def samples(self) -> int:
        return int(self.counts[0, 0].sum())

    def recall(self) -> Tensor:
        """Per probe, the class-mean recall@k in percent over the classes with samples: ``[K]`` (0 without any)."""
        samples, hits = self.counts
        present = samples[0] > 0
        per_class = hits[:, present] / samples[:, present]
        if not present.any():
            return torch.zeros(samples.shape[0], dtype=torch.float64, device=samples.device)
        return 100.0 * per_class.mean(dim=1)

    def accuracy(self) -> Tensor:
        """Per probe, the share of samples with their class among the top ``k``, in percent: ``[K]``."""
        samples, hits = self.counts
        return 100.0 * hits.sum(dim=1) / samples.sum(dim=1).clamp(min=1)
