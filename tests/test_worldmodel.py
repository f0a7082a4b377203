"""World model (V-JEPA 2-AC): the action-conditioned predictor, actions from states, the toy world and the DROID
loader, the teacher-forcing + rollout objective, app vjepa_droid training and resume, and CEM planning."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from jepa.config import ConfigError
from jepa.config.pretrain import load_pretrain_config
from jepa.models.ac_predictor import VisionTransformerPredictorAC, ac_rope, action_block_causal_mask, vit_ac_predictor
from jepa.planning import cem
from jepa.worldmodel.actions import apply_action, states_to_actions
from jepa.worldmodel.model import WorldModel, WSDSchedules, l1_term, warmup_stable_decay

OFFICIAL_DROID = Path("/work/shared/official_configs/vjepa2/configs/train/vitg16/droid-256px-8f.yaml")


def tiny_ac(**kwargs) -> VisionTransformerPredictorAC:
    defaults = dict(img_size=32, patch_size=16, num_frames=8, tubelet_size=2, embed_dim=32, predictor_embed_dim=48,
                    depth=2, num_heads=4)  # fmt: skip
    return vit_ac_predictor(**{**defaults, **kwargs})


# -- the block-causal mask -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cond", [2, 3])
def test_block_causal_mask_every_pair(cond):
    T, H, W = 3, 2, 2
    per = cond + H * W
    mask = action_block_causal_mask(T, H, W, cond)
    assert mask.shape == (T * per, T * per) and mask.dtype == torch.bool
    for i in range(T * per):
        for j in range(T * per):
            # A token of step t sees exactly the tokens of steps <= t (conditioning and patch tokens alike).
            assert bool(mask[i, j]) == (j // per <= i // per), (i, j)


def test_outputs_of_a_step_ignore_later_steps():
    model = tiny_ac().eval()
    hw = model.tokens_per_frame
    x, a, s = torch.randn(2, 3 * hw, 32), torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    x2, a2, s2 = x.clone(), a.clone(), s.clone()
    x2[:, 2 * hw :] += 1.0  # change frame 2 and step 2's action and state only
    a2[:, 2] += 1.0
    s2[:, 1:] += 1.0  # ... and step 1's state: steps 1 and 2 change, step 0 must not
    with torch.no_grad():
        y, y2 = model(x, a, s), model(x2, a2, s2)
    torch.testing.assert_close(y[:, :hw], y2[:, :hw], rtol=0, atol=1e-6)
    assert (y[:, hw:] - y2[:, hw:]).abs().max() > 1e-3
    # Without the mask (is_frame_causal=False) step 0 sees the future.
    full = tiny_ac(is_frame_causal=False).eval()
    full.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (full(x, a, s)[:, :hw] - full(x2, a2, s2)[:, :hw]).abs().max() > 1e-4


def test_action_tokens_get_time_only_rope():
    rope = ac_rope(2, 2, 3, 2, head_dim=12)
    per, d = 2 + 6, 4  # tokens per step; channels per axis for a head of 12
    assert rope.cos.shape == (2 * per, 3 * d)
    for t in range(2):
        cond = slice(t * per, t * per + 2)
        # Height and width channels of the conditioning tokens do not turn (cos 1, sin 0) ...
        assert torch.equal(rope.cos[cond, d:], torch.ones(2, 2 * d))
        assert torch.equal(rope.sin[cond, d:], torch.zeros(2, 2 * d))
        # ... their time channels turn like the frame tokens of the same step.
        torch.testing.assert_close(rope.cos[cond, :d], rope.cos[t * per + 2 : t * per + 3, :d].expand(2, -1))
    assert not torch.equal(rope.cos[2:8, d : 2 * d], torch.ones(6, d))  # frame tokens do turn by height


# -- official names, strict loading -----------------------------------------------------------------------------------
def official_keys(depth: int, silu: bool = False) -> set[str]:
    keys = {f"{m}.{p}" for m in ("predictor_embed", "action_encoder", "state_encoder", "extrinsics_encoder",
                                 "predictor_norm", "predictor_proj") for p in ("weight", "bias")}  # fmt: skip
    mlp = ("fc1", "fc2", "fc3") if silu else ("fc1", "fc2")
    for i in range(depth):
        for m in ("norm1", "attn.qkv", "attn.proj", "norm2", *(f"mlp.{f}" for f in mlp)):
            keys |= {f"predictor_blocks.{i}.{m}.weight", f"predictor_blocks.{i}.{m}.bias"}
    return keys


@pytest.mark.parametrize("silu", [False, True])
def test_state_dict_has_the_official_names_and_loads_strictly(silu):
    model = tiny_ac(use_silu=silu)
    assert set(model.state_dict()) == official_keys(2, silu)
    state = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    other = tiny_ac(use_silu=silu)
    other.load_state_dict(state, strict=True)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(RuntimeError, match="Missing key"):
        other.load_state_dict({k: v for k, v in state.items() if "state_encoder" not in k})


def test_released_size_defaults_and_no_kwargs_sink():
    model = VisionTransformerPredictorAC(img_size=32, embed_dim=32, depth=1)
    assert (model.predictor_embed_dim, model.num_heads, model.action_embed_dim) == (1024, 16, 7)
    assert model.extrinsics_encoder.in_features == 6
    with pytest.raises(TypeError):
        VisionTransformerPredictorAC(predictor_embd_dim=64)  # type: ignore[call-arg]


def test_forward_shapes_and_extrinsics():
    model = tiny_ac(use_extrinsics=True).eval()
    x = torch.randn(2, 2 * model.tokens_per_frame, 32)
    out = model(x, torch.randn(2, 2, 7), torch.randn(2, 2, 7), torch.randn(2, 2, 6))
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="extrinsics"):
        model(x, torch.randn(2, 2, 7), torch.randn(2, 2, 7))
    with pytest.raises(ValueError, match="actions"):
        model(x, torch.randn(2, 3, 7), torch.randn(2, 2, 7), torch.randn(2, 2, 6))


def test_load_ac_predictor_reads_shapes_from_weights(tmp_path):
    from jepa.worldmodel.load import load_ac_predictor

    model = tiny_ac(depth=3, use_silu=True)
    path = tmp_path / "ac.pt"
    torch.save({"predictor": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = load_ac_predictor(path, num_heads=4, img_size=32, patch_size=16)
    assert not loaded.training and len(loaded.predictor_blocks) == 3 and loaded.predictor_embed_dim == 48
    x = torch.randn(1, 2 * 4, 32)
    a, s = torch.randn(1, 2, 7), torch.randn(1, 2, 7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, a, s), model.eval()(x, a, s))


# -- actions from states ----------------------------------------------------------------------------------------------
def rz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rx(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def test_actions_match_a_hand_computed_rotation():
    # State 0: rotated 90 degrees about x. State 1: then rotated 90 degrees about the world z axis, so
    # R_1 = Rz(90) Rx(90) and the delta R_1 R_0^T is Rz(90): Euler xyz (0, 0, pi/2). The rotations do not commute,
    # so R_0^T R_1 (the body-frame delta) would give another answer.
    s0 = [0.1, 0.2, 0.3, math.pi / 2, 0.0, 0.0, 0.25]
    r1 = rz(90) @ rx(90)
    # Euler xyz of r1 by hand: R = Rz(c) Ry(b) Rx(a) with a = atan2(R21, R22), b = -asin(R20), c = atan2(R10, R00).
    a, b, c = math.atan2(r1[2, 1], r1[2, 2]), -math.asin(r1[2, 0]), math.atan2(r1[1, 0], r1[0, 0])
    s1 = [0.4, 0.0, 0.3, a, b, c, 1.0]
    actions = states_to_actions(np.array([s0, s1]))
    np.testing.assert_allclose(actions[0, :3], [0.3, -0.2, 0.0], atol=1e-12)
    np.testing.assert_allclose(actions[0, 3:6], [0.0, 0.0, math.pi / 2], atol=1e-9)
    np.testing.assert_allclose(actions[0, 6], 0.75)
    np.testing.assert_allclose(apply_action(np.array(s0), actions[0])[:3], s1[:3], atol=1e-12)


def test_actions_about_one_axis_are_angle_differences():
    s = np.zeros((3, 7))
    s[:, 5] = np.radians([10.0, 40.0, 25.0])  # yaw only
    np.testing.assert_allclose(states_to_actions(s)[:, 5], np.radians([30.0, -15.0]), atol=1e-12)
    with pytest.raises(ValueError, match=r"\[T, 7\]"):
        states_to_actions(np.zeros((3, 6)))


# -- toy world and the DROID loader -----------------------------------------------------------------------------------
def test_toy_world_dynamics_and_rendering():
    from jepa.worldmodel.toyworld import ToyWorld

    world = ToyWorld(size=32, max_step=0.1, obstacles=((0.45, 0.0, 0.55, 1.0),))
    np.testing.assert_allclose(world.step(np.array([0.2, 0.5]), np.array([0.5, -0.05])), [0.3, 0.45])  # clipped
    assert world.step(np.array([0.4, 0.5]), np.array([0.1, 0.0]))[0] == pytest.approx(0.4)  # wall: stays
    np.testing.assert_allclose(world.step(np.array([0.98, 0.5]), np.array([0.1, 0.0])), [1.0, 0.5])  # edge
    a, b = world.render(np.array([0.2, 0.3])), world.render(np.array([0.25, 0.3]))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8 and (a != b).any()
    # The saturated pixels are centred on the blob.
    ys, xs = np.nonzero(a[..., 0] == 255)
    assert abs((xs.mean() + 0.5) / 32 - 0.2) < 0.02 and abs((ys.mean() + 0.5) / 32 - 0.3) < 0.02


def test_generator_to_loader_round_trip(tmp_path):
    from jepa.worldmodel.data import TrajectoryDataset
    from jepa.worldmodel.toyworld import ToyWorld, write_toy_trajectories

    world = ToyWorld(size=32)
    csv = write_toy_trajectories(tmp_path, num_trajectories=2, length=8, world=world, fps=4, seed=3)
    folders = csv.read_text().split()
    assert len(folders) == 2 and (Path(folders[0]) / "trajectory.h5").is_file()
    ds = TrajectoryDataset([csv], frames_per_clip=4, fps=2, crop_size=32)  # every 2nd frame of the 4 fps videos
    torch.manual_seed(0)
    clip, actions, states, extrinsics, index = ds[1]
    assert clip.shape == (3, 4, 32, 32) and actions.shape == (3, 7) and states.shape == (4, 7)
    assert extrinsics.shape == (4, 6) and index == 1
    # States are the positions, actions their differences; the other five numbers are 0.
    torch.testing.assert_close(actions[:, :2], states[1:, :2] - states[:-1, :2])
    assert states[:, 2:].abs().max() == 0 and actions[:, 2:].abs().max() == 0
    # The decoded frames show the blob where the states say it is (the video survived the MP4 round trip).
    import h5py

    with h5py.File(Path(folders[1]) / "trajectory.h5") as f:
        all_pos = np.asarray(f["observation/robot_state/cartesian_position"])[:, :2]
    start = int(np.argmin(np.abs(all_pos[:, 0] - states[0, 0].item()) + np.abs(all_pos[:, 1] - states[0, 1].item())))
    np.testing.assert_allclose(all_pos[start : start + 8 : 2], states[:, :2].numpy(), atol=1e-6)
    rendered = torch.from_numpy(world.render(all_pos[start])).float().mean(-1) / 255
    std, mean = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1), torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    decoded = clip[:, 0] * std + mean
    assert (decoded.mean(0) - rendered).abs().mean() < 0.05


# -- the objective ----------------------------------------------------------------------------------------------------
class ShiftPredictor(nn.Module):
    """A stand-in predictor with a known function: next frame = frame + mean action (broadcast), per step."""

    tokens_per_frame = 2
    use_extrinsics = False

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x, actions, states, extrinsics=None):
        B, N, D = x.shape
        step = (actions.mean(-1) + states.mean(-1) * 0).repeat_interleave(self.tokens_per_frame, dim=1)
        return self.scale * x + step.unsqueeze(-1)


def test_teacher_forcing_and_rollout_against_a_hand_computation():
    wm = WorldModel(nn.Identity(), ShiftPredictor(), auto_steps=3, normalize_reps=False)
    B, T, n, D = 2, 4, 2, 3
    z = torch.randn(B, T * n, D)
    actions, states = torch.randn(B, T - 1, 7), torch.randn(B, T, 7)
    loss_tf, loss_ar = wm.losses(z, actions, states)
    frames = z.view(B, T, n, D)
    shift = actions.mean(-1)  # [B, T - 1]
    # Teacher forcing: frame t + 1 predicted from the true frame t.
    tf = frames[:, :-1] + shift[:, :, None, None]
    assert torch.allclose(loss_tf, (tf - frames[:, 1:]).abs().mean())
    # Rollout: frame 1 from the true frame 0, frame 2 from predicted frame 1, frame 3 from predicted frame 2.
    p1 = frames[:, 0] + shift[:, 0, None, None]
    p2 = p1 + shift[:, 1, None, None]
    p3 = p2 + shift[:, 2, None, None]
    ar = torch.stack([p1, p2, p3], dim=1)
    assert torch.allclose(loss_ar, (ar - frames[:, 1:4]).abs().mean())
    # One optimiser step on the sum moves the predictor (gradients flow through the rollout).
    (loss_tf + loss_ar).backward()
    assert wm.predictor.scale.grad is not None and wm.predictor.scale.grad.abs() > 0


def test_rollout_of_one_step_equals_teacher_forcing_on_two_frames():
    wm = WorldModel(nn.Identity(), tiny_ac(), auto_steps=1)
    z = torch.randn(2, 2 * 4, 32)
    tf, ar = wm.losses(z, torch.randn(2, 1, 7), torch.randn(2, 2, 7))
    torch.testing.assert_close(tf, ar)
    assert l1_term(torch.ones(3), torch.zeros(3), 2.0) == pytest.approx(0.5)


def test_encoder_sees_each_frame_as_a_static_tubelet():
    from jepa.models import VisionTransformer

    enc = VisionTransformer(img_size=32, patch_size=16, num_frames=2, tubelet_size=2, embed_dim=32, depth=1,
                            num_heads=4, use_rope=True)  # fmt: skip
    wm = WorldModel(enc, tiny_ac())
    clips = torch.randn(2, 3, 3, 32, 32)
    z = wm.encode_frames(clips)
    assert z.shape == (2, 3 * 4, 32)
    one = enc(clips[:1, :, 1:2].expand(-1, -1, 2, -1, -1))
    torch.testing.assert_close(z[:1, 4:8], torch.nn.functional.layer_norm(one, (32,)))
    assert not any(p.requires_grad for p in wm.encoder.parameters())


def test_wsd_schedule_is_the_official_one():
    # Official WSDSchedule: warmup 10 steps, decay over the last 20 of 100.
    values = [warmup_stable_decay(s, 10, 20, 100, 0.1, 1.0, 0.0) for s in range(101)]
    assert values[0] == pytest.approx(0.1) and values[5] == pytest.approx(0.55) and values[10] == 1.0
    assert values[79] == 1.0 and values[80] == 1.0 and values[90] == pytest.approx(0.5) and values[100] == 0.0
    s = WSDSchedules(ipe=10, epochs=10, ipe_scale=1.0, warmup_epochs=1, start_lr=0.1, lr=1.0, final_lr=0.0,
                     weight_decay=0.04, final_weight_decay=0.04, ema=(1.0, 1.0), anneal_epochs=2)  # fmt: skip
    assert [s.lr_at(i) for i in (0, 9, 50, 89, 98)] == pytest.approx([values[i + 1] for i in (0, 9, 50, 89, 98)])


# -- configs and training ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(not OFFICIAL_DROID.is_file(), reason="official V-JEPA 2 configs not present")
def test_official_droid_config_validates():
    cfg = load_pretrain_config(OFFICIAL_DROID)
    assert cfg.app == "vjepa_droid" and cfg.is_world_model and cfg.data.dataset_type == "droid"
    assert cfg.loss.auto_steps == 2 and cfg.meta.pretrain_checkpoint == "/your_vjepa2_checkpoints/vitg.pt"
    assert cfg.optimization.anneal == 15 and cfg.data.num_frames == 8
    assert cfg.model_spec().encoder.num_frames == 2 and cfg.model_spec().predictor is None


def tiny_wm_config(folder: Path, data: Path, *overrides: str):
    raw = yaml.safe_load(Path("configs/pretrain/tiny_vjepa_droid_cpu.yaml").read_text())
    raw["logging"]["folder"] = str(folder)
    raw["data"].update(root_path=str(data), batch_size=4, num_workers=0)
    raw["toy_world"].update(num_trajectories=8, length=8)
    raw["model"].update(embed_dim=32, pred_embed_dim=24, pred_depth=1, num_heads=4, pred_num_heads=2)
    raw["optimization"].update(epochs=3, ipe=2, warmup=1, anneal=1)
    raw["meta"]["log_freq"] = 1
    path = folder.parent / f"{folder.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_pretrain_config(path, list(overrides))


def test_world_model_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="toy_world generates"):
        tiny_wm_config(tmp_path / "a", tmp_path / "d", "data.datasets=[x.csv]")
    with pytest.raises(ConfigError, match="auto_steps"):
        tiny_wm_config(tmp_path / "a", tmp_path / "d", "loss.auto_steps=0")
    with pytest.raises(ConfigError, match="load_predictor"):
        tiny_wm_config(tmp_path / "a", tmp_path / "d", "meta.load_predictor=true")


def test_vjepa_droid_trains_and_resumes_bit_identically(tmp_path):
    from app.pretrain import Pretrainer
    from tests.test_engine import assert_same, read_csv

    data = tmp_path / "data"
    a = Pretrainer(tiny_wm_config(tmp_path / "a", data))
    assert isinstance(a.model, WorldModel)
    a.train(max_steps=5)
    Pretrainer(tiny_wm_config(tmp_path / "b", data)).train(max_steps=3)
    b = Pretrainer(tiny_wm_config(tmp_path / "b", data, "meta.load_checkpoint=true"))
    b.train(max_steps=5)
    assert a.step == b.step == 5
    for name in ("encoder", "predictor"):
        assert_same(getattr(a.model, name).state_dict(), getattr(b.model, name).state_dict(), name)
    assert_same(a.optimizer.state_dict(), b.optimizer.state_dict(), "opt")
    header, rows_a = read_csv(tmp_path / "a" / "jepa_r0.csv")
    _, rows_b = read_csv(tmp_path / "b" / "jepa_r0.csv")
    assert header.endswith("loss_rollout")
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert [r["loss_rollout"] for r in rows_a] == [r["loss_rollout"] for r in rows_b]
    # The frozen encoder did not move; the predictor did.
    from jepa.worldmodel.load import load_world_model

    model, cfg = load_world_model(a.latest_path)
    assert cfg.app == "vjepa_droid"
    assert_same(model.encoder.state_dict(), a.model.encoder.state_dict(), "encoder")


# -- planning ---------------------------------------------------------------------------------------------------------
def test_cem_converges_to_the_minimum_of_a_quadratic():
    target = torch.tensor([[0.3, -0.2, 0.0], [-0.1, 0.4, 0.0]])  # [H=2, A=3]; the last dimension is held at 0

    def energy(actions):
        return ((actions - target) ** 2).sum(dim=(1, 2))

    low, high = torch.tensor([-1.0, -1.0, 0.0]), torch.tensor([1.0, 1.0, 0.0])
    out = cem(energy, horizon=2, low=low, high=high, samples=200, iterations=30, topk=20, momentum_mean=0.15,
              momentum_std=0.15, generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(out.actions, target, atol=5e-3, rtol=0)
    assert out.best_energy < 1e-4
    # A minimum outside the bounds: the plan sits on the bound.
    far = cem(lambda a: ((a - 3.0) ** 2).sum(dim=(1, 2)), horizon=1, low=low, high=high, samples=50, iterations=10,
              topk=5, generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(far.actions[0, :2], torch.ones(2), atol=1e-3, rtol=0)


def test_cem_argument_errors():
    low, high = torch.zeros(2), torch.ones(2)
    with pytest.raises(ValueError, match="topk"):
        cem(lambda a: a.sum((1, 2)), horizon=1, low=low, high=high, samples=4, topk=5)
    with pytest.raises(ValueError, match="low"):
        cem(lambda a: a.sum((1, 2)), horizon=1, low=high, high=low)


def test_world_model_energy_rolls_out_the_predictor():
    from jepa.planning import WorldModelEnergy

    wm = WorldModel(nn.Identity(), ShiftPredictor(), normalize_reps=False)
    context, goal = torch.zeros(1, 2, 3), torch.full((1, 2, 3), 1.0)
    energy = WorldModelEnergy(wm, context, torch.zeros(7), goal)
    actions = torch.zeros(2, 2, 7)
    actions[0] = torch.full((2, 7), 0.5)  # mean 0.5 per step: two steps reach the goal exactly
    values = energy(actions)
    assert values[0].item() == pytest.approx(0.0, abs=1e-6) and values[1].item() == pytest.approx(1.0)



def test_planning_eval_end_to_end(tmp_path, capsys, monkeypatch):
    import json

    import evals.main
    from app.pretrain import Pretrainer

    trainer = Pretrainer(tiny_wm_config(tmp_path / "wm", tmp_path / "data"))
    trainer.train(max_steps=2)
    raw = yaml.safe_load(Path("configs/evals/tiny_planning_cpu.yaml").read_text())
    raw.update(checkpoint=str(trainer.latest_path), folder=str(tmp_path / "plan"), episodes=2, steps=2, strips=1)
    raw["cem"].update(samples=8, iterations=2, topk=2)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(evals.main, "setup_logging", lambda **_: None)
    assert evals.main.main(["--fname", str(path), "--devices", "cpu"]) == 0
    assert "done: planning (tiny), 2 episodes of 2 steps" in capsys.readouterr().out
    out = tmp_path / "plan" / "tiny"
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"planner", "random", "oracle"}
    assert (out / "strip_000.png").is_file() and not (out / "strip_001.png").exists()
    for ep in results["episodes_detail"]["oracle"]:  # the oracle moves straight at the goal
        start, goal, end = np.array(ep["start"]), np.array(ep["goal"]), np.array(ep["positions"][-1])
        assert np.hypot(*(end - goal)) < np.hypot(*(start - goal)) - 0.1
    planner = results["episodes_detail"]["planner"][0]
    assert len(planner["predicted_energy"]) == len(planner["actual_energy"]) == 2


def test_load_predictor_routes_ac_files_to_the_ac_predictor():
    from jepa.checkpoint import CheckpointError, load_predictor
    from jepa.models.ac_predictor import VisionTransformerPredictorAC, vit_ac_predictor

    grid = {"img_size": (64, 64), "patch_size": 16, "num_frames": 4, "tubelet_size": 2}
    made = vit_ac_predictor(**grid, embed_dim=64, predictor_embed_dim=32, depth=2, num_heads=4)
    loaded = load_predictor({"predictor": made.state_dict()}, num_heads=4, **grid)
    assert isinstance(loaded, VisionTransformerPredictorAC) and not loaded.training
    for (name, a), (other, b) in zip(made.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert name == other and torch.equal(a, b)
    with pytest.raises(CheckpointError, match="num_heads"):
        load_predictor(made.state_dict(), **grid)
