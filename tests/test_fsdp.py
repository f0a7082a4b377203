"""FSDP2 sharding (``meta.sharding: fsdp``, :func:`jepa.training.ddp.shard_fsdp`): two gloo processes on the CPU
train a tiny V-JEPA exactly as DDP does (losses and weights within 1e-5 after a few steps, EMA target included),
and the gathered state dicts have the unsharded layout."""

import pytest
import torch

import jepa.runtime.distributed as jd
from jepa.config import PretrainConfig
from jepa.config.strict import from_dict
from jepa.training.builders import build_models, loss_type_for, mask_sets
from jepa.training.ddp import (
    full_optimizer_state_dict,
    full_state_dict,
    load_full_optimizer_state_dict,
    load_full_state_dict,
    shard_fsdp,
    wrap_ddp,
)
from jepa.training.meta_arch import JEPA
from jepa.training.optim import clip_per_module, make_adamw
from jepa.video.masks import MultiblockMaskCollator3D

fsdp = pytest.importorskip("torch.distributed.fsdp")
if not hasattr(fsdp, "fully_shard"):
    pytest.skip(f"torch {torch.__version__} has no FSDP2 (torch.distributed.fsdp.fully_shard)", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_thread")

RAW = {
    "app": "vjepa",
    "data": {"dataset_type": "VideoDataset", "datasets": ["unused.csv"], "batch_size": 2, "num_frames": 4,
             "tubelet_size": 2, "crop_size": 32, "patch_size": 8, "num_workers": 0},
    "mask": [
        {"aspect_ratio": [0.75, 1.5], "num_blocks": 2, "spatial_scale": [0.15, 0.15], "temporal_scale": [1.0, 1.0]},
        {"aspect_ratio": [0.75, 1.5], "num_blocks": 1, "spatial_scale": [0.5, 0.5], "temporal_scale": [1.0, 1.0]},
    ],
    "meta": {"seed": 0, "dtype": "float32"},
    "model": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "pred_depth": 2, "pred_embed_dim": 24},
}  # fmt: skip
STEPS = 4
NETWORKS = ("encoder", "predictor", "target_encoder")


def _train(cfg: PretrainConfig, sharding: str, rank: int, world_size: int) -> tuple[list[float], dict, dict]:
    """``STEPS`` updates of a freshly built JEPA (seed 0 on every rank) on this rank's half of fixed batches."""
    torch.manual_seed(0)
    encoder, predictor = build_models(cfg)
    model = JEPA(encoder, predictor, loss_type_for(cfg))
    if sharding == "fsdp":
        forward = shard_fsdp(model)
    else:
        forward = wrap_ddp(model, torch.device("cpu"), world_size, sync_buffers=False)
    optimizer = make_adamw([model.encoder, model.predictor])
    for group in optimizer.param_groups:
        group["lr"] = 1e-3
    collator = MultiblockMaskCollator3D(cfg.mask, num_frames=4, crop_size=32, patch_size=8, tubelet_size=2, seed=0)
    data = torch.Generator().manual_seed(1)
    losses = []
    for step in range(STEPS):
        x = torch.randn(2 * world_size, 3, 4, 32, 32, generator=data)[2 * rank : 2 * rank + 2]
        _, masks_enc, masks_pred = collator([(clip, 0, 100 * step + 10 * rank + i) for i, clip in enumerate(x)])
        out = forward(x, mask_sets(cfg, masks_enc, masks_pred), step=step)
        out.loss.backward()
        clip_per_module([model.encoder, model.predictor], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.update_target(0.9)
        losses.append(float(jd.all_reduce_sum(out.loss.detach().clone())) / world_size)
    states = {name: full_state_dict(getattr(model, name)) for name in NETWORKS}
    return losses, states, full_optimizer_state_dict(optimizer)


def _ranks(rank: int, world_size: int, device: torch.device) -> dict:
    cfg = from_dict(PretrainConfig, RAW)
    ddp_losses, ddp_state, ddp_opt = _train(cfg, "ddp", rank, world_size)
    fsdp_losses, fsdp_state, fsdp_opt = _train(cfg, "fsdp", rank, world_size)
    # A full state dict loads back into a sharded model and gathers to the same tensors.
    torch.manual_seed(0)
    encoder, predictor = build_models(cfg)
    reloaded = shard_fsdp(JEPA(encoder, predictor, loss_type_for(cfg)))
    for name in NETWORKS:
        load_full_state_dict(getattr(reloaded, name), fsdp_state[name])
    again = {name: full_state_dict(getattr(reloaded, name)) for name in NETWORKS}
    optimizer = make_adamw([reloaded.encoder, reloaded.predictor])
    load_full_optimizer_state_dict(optimizer, fsdp_opt)
    opt_again = full_optimizer_state_dict(optimizer)
    unsharded = {name: {k: tuple(v.shape) for k, v in getattr(JEPA(*build_models(cfg)), name).state_dict().items()}
                 for name in NETWORKS}  # fmt: skip
    return dict(ddp=(ddp_losses, ddp_state), fsdp=(fsdp_losses, fsdp_state), again=again, unsharded=unsharded,
                ddp_opt=ddp_opt, fsdp_opt=fsdp_opt, opt_again=opt_again)  # fmt: skip


@pytest.fixture(scope="module")
def two_ranks() -> list[dict]:
    return jd.spawn(_ranks, ["cpu", "cpu"])


def test_fsdp_trains_like_ddp_on_two_gloo_processes(two_ranks):
    for result in two_ranks:
        (ddp_losses, ddp_state), (fsdp_losses, fsdp_state) = result["ddp"], result["fsdp"]
        assert len(set(ddp_losses)) == STEPS  # it trains: the loss moves
        torch.testing.assert_close(torch.tensor(fsdp_losses), torch.tensor(ddp_losses), rtol=0, atol=1e-5)
        for name in NETWORKS:
            for key, value in ddp_state[name].items():
                torch.testing.assert_close(fsdp_state[name][key], value, rtol=0, atol=1e-5, msg=f"{name}.{key}")


def test_the_ema_target_moves_and_ranks_agree(two_ranks):
    (_, first), (_, second) = two_ranks[0]["fsdp"], two_ranks[1]["fsdp"]
    for key, value in first["target_encoder"].items():
        assert torch.equal(value, second["target_encoder"][key]), key  # gathered: the same everywhere
    assert any(not torch.equal(first["target_encoder"][k], first["encoder"][k]) for k in first["encoder"])


def test_full_state_dicts_have_the_unsharded_layout_and_load_back(two_ranks):
    result = two_ranks[0]
    _, state = result["fsdp"]
    for name in NETWORKS:
        assert {k: tuple(v.shape) for k, v in state[name].items()} == result["unsharded"][name], name
        assert all(v.device.type == "cpu" for v in state[name].values())
        for key, value in state[name].items():
            assert torch.equal(result["again"][name][key], value), f"{name}.{key}"


def test_sharding_needs_a_process_group():
    cfg = from_dict(PretrainConfig, RAW)
    with pytest.raises(RuntimeError, match="needs a process group"):
        shard_fsdp(JEPA(*build_models(cfg)))


def test_the_gathered_optimizer_state_is_ddps_and_loads_back(two_ranks):
    result = two_ranks[0]
    ddp, fsdp, again = result["ddp_opt"]["state"], result["fsdp_opt"]["state"], result["opt_again"]["state"]
    assert ddp.keys() == fsdp.keys() == again.keys() and len(ddp) > 0
    for i in ddp:
        for key in ("exp_avg", "exp_avg_sq"):
            assert fsdp[i][key].shape == ddp[i][key].shape
            torch.testing.assert_close(fsdp[i][key], ddp[i][key], rtol=0, atol=1e-5, msg=f"{i}.{key}")
            assert torch.equal(again[i][key], fsdp[i][key])
        assert float(fsdp[i]["step"]) == float(ddp[i]["step"]) == STEPS
