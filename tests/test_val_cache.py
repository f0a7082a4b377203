"""Validation features are encoded once and reused by every epoch (issue 15, item 5): the metrics equal those of
encoding every epoch, the encoder runs over the validation split once, unreadable samples are still reported."""

import pytest
import torch
from test_evals import TokenBatches, probe_config

from evals.probing import ProbeTrainer
from jepa.config.strict import from_dict, to_dict
from jepa.data import PartialBatch, SkippedSample


class Counting:
    """An ``encode`` that passes token batches through and counts the batches of each split it saw."""

    def __init__(self, val: TokenBatches) -> None:
        self.val_ids = {id(t) for t, _ in val.batches}
        self.val_calls = 0

    def __call__(self, batch):
        self.val_calls += id(batch[0]) in self.val_ids
        return batch


class WithUnreadable(TokenBatches):
    """Validation batches, the first of which also lists one unreadable sample."""

    def __iter__(self):
        for i, batch in enumerate(self.batches):
            yield PartialBatch(batch, [SkippedSample(7, "/data/bad.mp4", "EOFError: truncated")] if i == 0 else [])


def run(tmp_path, cache, epochs: int = 3):
    cfg = probe_config(tmp_path / str(cache), epochs=epochs)
    raw = to_dict(cfg)
    raw["optimization"]["cache_val_features"] = cache
    cfg = from_dict(type(cfg), raw)
    val = WithUnreadable(2, 1)
    encode = Counting(val)
    torch.manual_seed(0)
    trainer = ProbeTrainer(
        cfg, encode, TokenBatches(3, 0), val, embed_dim=48, num_heads=3, num_classes=10, device=torch.device("cpu")
    )
    trainer.run()
    return trainer, encode


@pytest.mark.parametrize("cache", ["auto", True])
def test_cached_validation_features_give_the_same_metrics_with_one_encoder_pass(tmp_path, cache):
    cached, cached_encode = run(tmp_path, cache)
    fresh, fresh_encode = run(tmp_path, False)
    assert fresh_encode.val_calls == 3 * 2  # every epoch encodes both validation batches
    assert cached_encode.val_calls == 2  # once
    assert cached.val_cache.complete and not fresh.val_cache.complete
    for a, b in zip(cached.history, fresh.history, strict=True):
        assert a.val == b.val and a.train == b.train
    # the unreadable sample is reported by every epoch, cached or not
    assert all(r.val[0]["unreadable"] == 1 for r in cached.history)
    assert cached.skipped_files == fresh.skipped_files == {"/data/bad.mp4": "EOFError: truncated"}


def test_auto_does_not_cache_features_that_do_not_fit(tmp_path, monkeypatch):
    monkeypatch.setattr("evals.probing.os.sysconf", lambda name: 1)  # almost no free memory
    trainer, encode = run(tmp_path, "auto", epochs=2)
    assert encode.val_calls == 2 * 2 and not trainer.val_cache.complete and not trainer.val_cache.batches


def test_auto_assumes_4_gib_where_free_memory_cannot_be_queried(tmp_path, monkeypatch):
    def no_such_query(name):
        raise ValueError(f"unrecognized configuration name {name}")

    monkeypatch.setattr("evals.probing.os.sysconf", no_such_query)  # as on macOS for SC_AVPHYS_PAGES
    trainer, encode = run(tmp_path, "auto", epochs=2)
    assert encode.val_calls == 2 and trainer.val_cache.complete
