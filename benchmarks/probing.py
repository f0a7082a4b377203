"""Probes on frozen features, shared by the learning-check benchmarks."""

import numpy as np
import torch

from jepa.models import AttentiveClassifier


@torch.no_grad()
def extract(encoder, dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Last-layer tokens ``[N, T, D]``, per-block mean-pooled features ``[N, depth * D]`` and labels."""
    encoder.eval()
    encoder.out_layers = list(range(len(encoder.blocks)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    tokens, layers, labels = [], [], []
    for x, y, _ in loader:
        outs = encoder(x)
        tokens.append(outs[-1])
        layers.append(torch.cat([o.mean(dim=1) for o in outs], dim=1))
        labels.append(y)
    encoder.out_layers = None
    return torch.cat(tokens), torch.cat(layers), torch.cat(labels).numpy()


def logistic_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(train_x, train_y)
    return float((clf.predict(val_x) == val_y).mean())


def attentive_probe(
    train_t, train_y, val_t, val_y, num_heads: int, epochs: int = 50, lr: float = 3e-3, seed: int = 0
) -> float:
    """Val accuracy of an attentive probe (one query, depth 1) trained on frozen tokens ``[N, T, D]``."""
    torch.manual_seed(seed)
    n_cls = int(max(train_y.max(), val_y.max())) + 1
    probe = AttentiveClassifier(embed_dim=train_t.shape[-1], num_heads=num_heads, depth=1, num_classes=n_cls)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=0.01)
    ty = torch.as_tensor(train_y)
    steps = epochs * ((len(train_t) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    for _ in range(epochs):
        perm = torch.randperm(len(train_t))
        for i in range(0, len(perm), 128):
            idx = perm[i : i + 128]
            loss = torch.nn.functional.cross_entropy(probe(train_t[idx]), ty[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    probe.eval()
    with torch.no_grad():
        pred = torch.cat([probe(val_t[i : i + 512]).argmax(1) for i in range(0, len(val_t), 512)])
    return float((pred.numpy() == val_y).mean())
