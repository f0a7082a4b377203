"""The feature API of the encoder (forward_features, forward_intermediates), the token-grid and pooling helpers,
and the reusable evaluation preprocessing."""

import numpy as np
import pytest
import torch
from conftest import (
    EMBED_DIM,
    FRAMES,
    IMG,
    NUM_HEADS,
    PATCH,
    TUBELET,
    grid_of,
    make_classifier,
    make_encoder,
    make_input,
    num_tokens,
    perturb_,
    random_mask,
)
from PIL import Image

from jepa.features import attentive_pool, mean_pool, pool, tokens_to_grid
from jepa.image.transforms import make_eval_transforms
from jepa.models import AttentivePooler
from jepa.preprocess import Preprocess
from jepa.video.transforms import VideoEvalTransform, images_as_clips

pytestmark = pytest.mark.usefixtures("one_thread")

# (num_frames, use_rope): images, video with a sine-cosine table, video with RoPE.
VARIANTS = [
    pytest.param(1, False, id="2d"),
    pytest.param(FRAMES, False, id="3d"),
    pytest.param(FRAMES, True, id="rope"),
]


def encoder(num_frames: int, use_rope: bool = False, **kwargs):
    return perturb_(make_encoder(num_frames, depth=3, use_rope=use_rope, **kwargs)).eval()


@pytest.mark.parametrize("num_frames, use_rope", VARIANTS)
def test_forward_features_is_forward_whatever_out_layers(num_frames, use_rope):
    enc = encoder(num_frames, use_rope)
    x = make_input(num_frames)
    with torch.no_grad():
        ref = enc(x)
        assert ref.shape == (2, num_tokens(num_frames), EMBED_DIM)
        torch.testing.assert_close(enc.forward_features(x), ref, atol=0, rtol=0)
        enc.out_layers = [0]
        torch.testing.assert_close(enc.forward_features(x), ref, atol=0, rtol=0)


@pytest.mark.parametrize("num_frames, use_rope", VARIANTS)
def test_forward_intermediates_equals_out_layers(num_frames, use_rope):
    enc = encoder(num_frames, use_rope)
    x = make_input(num_frames)
    with torch.no_grad():
        enc.out_layers = [0, 2]
        ref = enc(x)
        enc.out_layers = None
        got = enc.forward_intermediates(x, [0, -1], norm=True, intermediates_only=True)
        assert len(got) == 2 and all(g.shape == (2, num_tokens(num_frames), EMBED_DIM) for g in got)
        for g, r in zip(got, ref):
            torch.testing.assert_close(g, r, atol=0, rtol=0)
        # An int n is the last n blocks; the last block's normalised output is forward_features.
        last_two = enc.forward_intermediates(x, 2, norm=True, intermediates_only=True)
        torch.testing.assert_close(last_two[1], enc.forward_features(x), atol=0, rtol=0)
        assert not torch.allclose(last_two[0], last_two[1])
        # Repeats and order do not matter: outputs come in block order.
        again = enc.forward_intermediates(x, [2, 0, 0], norm=True, intermediates_only=True)
        for g, r in zip(again, ref):
            torch.testing.assert_close(g, r, atol=0, rtol=0)


def test_forward_intermediates_without_norm_is_the_residual_stream():
    enc = encoder(FRAMES)
    x = make_input(FRAMES)
    with torch.no_grad():
        raw = enc.forward_intermediates(x, [1, 2], intermediates_only=True)
        normed = enc.forward_intermediates(x, [1, 2], norm=True, intermediates_only=True)
        for r, n in zip(raw, normed):
            torch.testing.assert_close(enc.norm(r), n, atol=0, rtol=0)
            assert not torch.allclose(r, n)
        # By hand: the tokens through the first two blocks.
        tokens, _ = enc.prepare_tokens(x)
        torch.testing.assert_close(raw[0], enc.blocks[1](enc.blocks[0](tokens)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("num_frames, use_rope", VARIANTS)
def test_forward_intermediates_with_masks(num_frames, use_rope):
    enc = encoder(num_frames, use_rope)
    x = make_input(num_frames)
    mask = random_mask(2, num_tokens(num_frames), 5)
    with torch.no_grad():
        enc.out_layers = [1]
        ref = enc(x, masks=mask)[0]
        enc.out_layers = None
        (got,) = enc.forward_intermediates(x, [1], norm=True, intermediates_only=True, masks=mask)
    assert got.shape == (2, 5, EMBED_DIM)
    torch.testing.assert_close(got, ref, atol=0, rtol=0)


@pytest.mark.parametrize("indices, error", [(0, ValueError), (4, ValueError), ([3], IndexError), ([-4], IndexError),
                                            ([], ValueError)])  # fmt: skip
def test_forward_intermediates_rejects_bad_indices(indices, error):
    enc = encoder(1)
    with pytest.raises(error, match="depth 3|\\[1, 3\\]|no blocks"):
        enc.forward_intermediates(make_input(1), indices)


def test_forward_intermediates_stops_after_the_last_block_asked_for():
    enc = encoder(1)
    calls = []
    for i, blk in enumerate(enc.blocks):
        blk.register_forward_hook(lambda *_, i=i: calls.append(i))
    with torch.no_grad():
        enc.forward_intermediates(make_input(1), [0], intermediates_only=True)
    assert calls == [0]


@pytest.mark.parametrize("num_frames, use_rope", VARIANTS)
def test_tokens_to_grid_places_every_token(num_frames, use_rope):
    enc = encoder(num_frames, use_rope)
    x = make_input(num_frames)
    with torch.no_grad():
        tokens = enc.forward_features(x)
    grid = enc.input_grid(x)
    assert grid == grid_of(num_frames)
    out = tokens_to_grid(tokens, grid)
    t_, h_, w_ = grid
    assert out.shape == (2, t_, h_, w_, EMBED_DIM)
    for t, h, w in [(0, 0, 0), (t_ - 1, 1, 2), (t_ - 1, h_ - 1, w_ - 1)]:
        torch.testing.assert_close(out[:, t, h, w], tokens[:, (t * h_ + h) * w_ + w], atol=0, rtol=0)
    # A 2D grid is a single time step.
    if num_frames == 1:
        assert tokens_to_grid(tokens, grid[1:]).shape == (2, 1, h_, w_, EMBED_DIM)


def test_tokens_to_grid_errors():
    tokens = torch.zeros(2, 16, 8)
    with pytest.raises(ValueError, match="16 tokens do not fill the grid \\(2, 4, 4\\)"):
        tokens_to_grid(tokens, (2, 4, 4))
    with pytest.raises(ValueError, match="\\[B, N, D\\]"):
        tokens_to_grid(torch.zeros(16, 8), (1, 4, 4))


def test_mean_pool_shapes_and_values():
    tokens = torch.randn(2, 2 * 3 * 4, 8)
    torch.testing.assert_close(mean_pool(tokens), tokens.mean(1))
    assert mean_pool(tokens).shape == (2, 8)
    per_time = mean_pool(tokens, grid=(2, 3, 4), keep_time=True)
    assert per_time.shape == (2, 2, 8)
    torch.testing.assert_close(per_time[:, 1], tokens[:, 12:].mean(1))
    with pytest.raises(ValueError, match="needs the token grid"):
        mean_pool(tokens, keep_time=True)
    assert pool(tokens, "none") is tokens
    torch.testing.assert_close(pool(tokens, "mean"), tokens.mean(1))
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(tokens, "max")


def test_attentive_pool_with_a_trained_classifier_and_a_pooler():
    tokens = torch.randn(2, 16, EMBED_DIM)
    probe = perturb_(make_classifier()).eval()
    pooled = attentive_pool(tokens, probe)
    assert pooled.shape == (2, EMBED_DIM) and not pooled.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(probe.linear(pooled), probe(tokens), atol=1e-6, rtol=0)
    pooler = perturb_(AttentivePooler(num_queries=3, embed_dim=EMBED_DIM, num_heads=NUM_HEADS, depth=2)).eval()
    many = attentive_pool(tokens, pooler)
    assert many.shape == (2, 3, EMBED_DIM)
    with pytest.raises(ValueError, match="tokens are 32 wide but the probe was built for width 48"):
        attentive_pool(torch.randn(2, 16, 32), probe)
    with pytest.raises(TypeError, match="AttentivePooler or AttentiveClassifier"):
        attentive_pool(tokens, torch.nn.Linear(EMBED_DIM, 2))


@pytest.mark.parametrize("use_rope", [False, True], ids=["table", "rope"])
def test_images_into_a_video_encoder(use_rope):
    enc = encoder(FRAMES, use_rope)
    images = make_input(1)
    with torch.no_grad():
        direct = enc.forward_features(images)  # a static clip of one tubelet
        assert direct.shape == (2, num_tokens(1), EMBED_DIM)
        assert enc.input_grid(images) == (1, IMG // PATCH, IMG // PATCH)
        torch.testing.assert_close(direct, enc.forward_features(images_as_clips(images, TUBELET)), atol=1e-6, rtol=0)
        # A static clip of the model's frame count gives T = FRAMES / TUBELET steps of the same grid.
        clip = enc.forward_features(images_as_clips(images, FRAMES))
        assert clip.shape == (2, num_tokens(FRAMES), EMBED_DIM)


@pytest.mark.parametrize("use_rope", [False, True], ids=["table", "rope"])
@pytest.mark.parametrize("frames, size", [(8, (48, 40)), (2, (24, 32)), (FRAMES, (IMG, IMG))])
def test_other_frame_counts_and_resolutions(use_rope, frames, size):
    enc = encoder(FRAMES, use_rope)
    x = make_input(frames, img_size=size)
    with torch.no_grad():
        tokens = enc.forward_features(x)
        inter = enc.forward_intermediates(x, 2, norm=True, intermediates_only=True)
    grid = enc.input_grid(x)
    assert grid == (frames // TUBELET, size[0] // PATCH, size[1] // PATCH)
    assert tokens.shape == (2, grid[0] * grid[1] * grid[2], EMBED_DIM)
    assert torch.isfinite(tokens).all()
    torch.testing.assert_close(inter[-1], tokens, atol=0, rtol=0)
    assert tokens_to_grid(tokens, grid).shape == (2, *grid, EMBED_DIM)
    assert mean_pool(tokens, grid, keep_time=True).shape == (2, grid[0], EMBED_DIM)


def test_other_resolution_resamples_the_table():
    # 48 px input to a 32 px model: the same as a 48 px model whose table is the 32 px one resampled.
    enc = encoder(FRAMES)
    big = make_encoder(FRAMES, depth=3, img_size=48).eval()
    state = {k: v for k, v in enc.state_dict().items() if k != "pos_embed"}
    big.load_state_dict(state, strict=False)
    from jepa.models.pos_embed import interpolate_pos_embed

    big.pos_embed.data = interpolate_pos_embed(enc.pos_embed, enc.grid, big.grid, True)
    x = make_input(FRAMES, img_size=48)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_features(x), big.forward_features(x), atol=1e-6, rtol=0)


def _clip(t=4, h=40, w=56, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


def test_preprocess_clips_match_the_eval_transform():
    pre = Preprocess(crop_size=32)
    clip = _clip()
    out = pre(clip)
    assert out.shape == (3, 4, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, VideoEvalTransform(crop_size=32)(clip), atol=0, rtol=0)
    torch.testing.assert_close(pre(torch.from_numpy(clip)), out, atol=0, rtol=0)
    batch = pre.batch([clip, _clip(seed=1)])
    assert batch.shape == (2, 3, 4, 32, 32)
    torch.testing.assert_close(batch[0], out, atol=0, rtol=0)


def test_preprocess_images_match_the_eval_transform():
    pre = Preprocess(crop_size=32, resize_ratio=1.0)
    array = _clip()[0]
    image = Image.fromarray(array)
    out = pre(image)
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out, make_eval_transforms(32, resize_ratio=1.0)(image), atol=0, rtol=0)
    torch.testing.assert_close(pre(array), out, atol=0, rtol=0)
    torch.testing.assert_close(pre(torch.from_numpy(array)), out, atol=0, rtol=0)
    torch.testing.assert_close(pre(image.convert("L")), pre(image.convert("L").convert("RGB")), atol=0, rtol=0)
    assert pre.batch([image, array]).shape == (2, 3, 32, 32)


def test_preprocess_output_feeds_the_encoder():
    enc = encoder(FRAMES)
    pre = Preprocess.for_encoder(enc)
    assert pre.crop_size == IMG
    with torch.no_grad():
        assert enc.forward_features(pre.batch([_clip(), _clip(seed=2)])).shape == (2, num_tokens(FRAMES), EMBED_DIM)
        assert enc.forward_features(pre.batch([_clip()[0]])).shape == (1, num_tokens(1), EMBED_DIM)


def test_preprocess_errors():
    pre = Preprocess(crop_size=32)
    with pytest.raises(TypeError, match="expected uint8 pixels"):
        pre(np.zeros((4, 40, 40, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="RGB last, got \\(3, 40, 40\\)"):
        pre(np.zeros((3, 40, 40), dtype=np.uint8))
    with pytest.raises(TypeError, match="PIL image"):
        pre([1, 2, 3])
    with pytest.raises(ValueError, match="different shapes"):
        pre.batch([_clip(t=4), _clip(t=6)])
    with pytest.raises(ValueError, match="no inputs"):
        pre.batch([])
