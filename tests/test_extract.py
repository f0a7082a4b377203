"""Feature extraction (`python -m jepa.extract`): rows, sidecar index, sliding windows, skipped files, resuming."""

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import jepa
from jepa import extract
from jepa.extract import ImageItems, VideoClipDataset, extract_features, sidecar_paths
from jepa.models import VisionTransformer
from jepa.preprocess import Preprocess
from jepa.video.datasets import sliding_clip_indices
from jepa.video.decoding import make_decoder
from jepa.video.moving_digits import make_moving_digits

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTH = 48
VIDEO_FRAMES = 12  # each clip: 4 frames every 2 -> spans 8 frames; sliding windows start at 0 and 4


def tiny_encoder(num_frames: int) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=32, patch_size=8, num_frames=num_frames, tubelet_size=2, embed_dim=WIDTH, depth=2, num_heads=3
    ).eval()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    return make_moving_digits(root / "md", num_videos=4, num_frames=VIDEO_FRAMES, size=32, source="digits")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    enc = tiny_encoder(4)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth.tar"
    state = {f"module.{k}": v for k, v in enc.state_dict().items()}
    return jepa.save_checkpoint({"encoder": state, "target_encoder": state, "epoch": 1}, path)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for cls, n in (("cat", 2), ("dog", 3)):
        (root / cls).mkdir()
        for k in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / cls / f"{k}.png")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def read_index(out: Path) -> list[dict]:
    with open(sidecar_paths(out)[0], newline="") as f:
        return list(csv.DictReader(f))


def run_cli(*args) -> None:
    assert extract.main([str(a) for a in args]) == 0


def test_sliding_clip_indices_cover_the_whole_video():
    clips = sliding_clip_indices(20, frames_per_clip=4, frame_step=2)  # span 8: starts 0, 8, then 12 flush with end
    assert [int(c[0]) for c in clips] == [0, 8, 12]
    np.testing.assert_array_equal(clips[-1], [12, 14, 16, 18])
    covered = set()
    for c in clips:
        covered |= set(range(int(c[0]), int(c[0]) + 8))
    assert covered == set(range(20))
    assert [int(c[0]) for c in sliding_clip_indices(20, 4, 2, stride=4)] == [0, 4, 8, 12]
    assert [int(c[0]) for c in sliding_clip_indices(16, 4, 2)] == [0, 8]  # exact fit: no extra clip
    np.testing.assert_array_equal(sliding_clip_indices(5, 4, 2)[0], [0, 2, 4, 4])  # short: padded with the last
    with pytest.raises(ValueError, match="stride must be >= 1"):
        sliding_clip_indices(20, 4, 2, stride=0)


def test_video_csv_rows_index_and_values(videos, checkpoint, tmp_path):
    out = tmp_path / "feats.npy"
    run_cli("--checkpoint", checkpoint, "--num-heads", 3, "--num-frames", 4, "--data", videos, "--out", out,
            "--frames-per-clip", 4, "--frame-step", 2, "--chunk-size", 3, "--batch-size", 3)  # fmt: skip
    feats = np.load(out)
    assert feats.shape == (8, WIDTH) and feats.dtype == np.float32  # 4 videos x 2 sliding windows
    rows = read_index(out)
    listed = [line.rsplit(maxsplit=1) for line in videos.read_text().splitlines()]
    assert [r["row"] for r in rows] == [str(i) for i in range(8)]
    assert [(r["path"], r["label"]) for r in rows] == [(p, lab) for p, lab in listed for _ in range(2)]
    assert [(r["clip"], r["start_frame"]) for r in rows[:2]] == [("0", "0"), ("1", "4")]
    summary = json.loads(sidecar_paths(out)[1].read_text())
    assert summary["rows"] == 8 and summary["skipped"] == [] and summary["feature_shape"] == [8, WIDTH]
    assert summary["settings"]["frame_step"] == 2 and summary["settings"]["pool"] == "mean"
    assert not sidecar_paths(out)[2].exists()  # partial chunks are removed once the file is complete

    # Row 3 by hand: video 1, frames 4, 6, 8, 10, eval preprocessing, mean of the tokens.
    frames = make_decoder("pyav").read(listed[1][0], [4, 6, 8, 10])
    x = Preprocess(crop_size=32)(frames).unsqueeze(0)
    with torch.no_grad():
        expected = tiny_encoder(4).forward_features(x).mean(1)[0].numpy()
    np.testing.assert_allclose(feats[3], expected, atol=1e-5)


def test_clips_per_video_and_tokens_to_pt(videos, checkpoint, tmp_path):
    out = tmp_path / "tokens.pt"
    run_cli("--checkpoint", checkpoint, "--num-heads", 3, "--num-frames", 4, "--data", videos, "--out", out,
            "--frame-step", 2, "--clips-per-video", 3, "--pool", "none")  # fmt: skip
    tokens = torch.load(out)
    assert tokens.shape == (12, 2 * 4 * 4, WIDTH)  # 4 videos x 3 clips, tokens [T*H*W, D]
    rows = read_index(out)
    assert [r["clip"] for r in rows[:3]] == ["0", "1", "2"]
    # Three clips of span 8 in 12 frames, centred in three segments of 4 frames: starts 0, 2, 4.
    assert [r["start_frame"] for r in rows[:3]] == ["0", "2", "4"]


def test_unreadable_videos_are_skipped_counted_and_listed(videos, checkpoint, tmp_path, caplog):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video" * 4)
    lines = videos.read_text().splitlines()
    data = tmp_path / "with_bad.csv"
    data.write_text("\n".join([lines[0], f"{tmp_path / 'missing.mp4'} 1", str(corrupt) + " 2", lines[1]]) + "\n")
    out = tmp_path / "f.npy"
    with caplog.at_level(logging.WARNING):
        run_cli("--checkpoint", checkpoint, "--num-heads", 3, "--num-frames", 4, "--data", data, "--out", out,
                "--frame-step", 2)  # fmt: skip
    assert np.load(out).shape == (4, WIDTH)
    assert {r["sample"] for r in read_index(out)} == {"0", "3"}
    skipped = json.loads(sidecar_paths(out)[1].read_text())["skipped"]
    assert [(s["sample"], Path(s["path"]).name) for s in skipped] == [(1, "missing.mp4"), (2, "corrupt.mp4")]
    assert "does not exist" in skipped[0]["error"]
    assert "missing.mp4" in caplog.text and "2 input(s) could not be read" in caplog.text


def test_image_folder(images, checkpoint, tmp_path):
    out = tmp_path / "img.npy"
    run_cli("--checkpoint", checkpoint, "--num-heads", 3, "--num-frames", 4, "--data", images, "--out", out,
            "--chunk-size", 2)  # fmt: skip
    feats = np.load(out)
    assert feats.shape == (5, WIDTH)  # a video encoder takes the images as static clips
    rows = read_index(out)
    assert [(Path(r["path"]).parent.name, r["label"], r["start_frame"]) for r in rows] == [
        ("cat", "0", ""), ("cat", "0", ""), ("dog", "1", ""), ("dog", "1", ""), ("dog", "1", "")
    ]  # fmt: skip
    skipped = json.loads(sidecar_paths(out)[1].read_text())["skipped"]
    assert [Path(s["path"]).name for s in skipped] == ["broken.png"]
    image = Image.open(rows[2]["path"])
    with torch.no_grad():
        expected = tiny_encoder(4).forward_features(Preprocess(crop_size=32)(image)[None]).mean(1)[0].numpy()
    np.testing.assert_allclose(feats[2], expected, atol=1e-5)


class CountingLoads(VideoClipDataset):
    """Records which files are loaded; raises KeyboardInterrupt (a kill) when loading ``stop_at``."""

    loaded: list[int]
    stop_at: int | None = None

    def load(self, index):
        if index == self.stop_at:
            raise KeyboardInterrupt
        self.loaded.append(index)
        return super().load(index)


def counting_dataset(videos: Path, stop_at: int | None = None) -> CountingLoads:
    ds = CountingLoads(videos, 4, 2, transform=Preprocess(crop_size=32).video, decoder="pyav")
    ds.loaded, ds.stop_at = [], stop_at
    return ds


def test_an_interrupted_run_resumes_without_recomputing(videos, tmp_path):
    enc = tiny_encoder(4)
    reference = extract_features(enc, counting_dataset(videos), tmp_path / "ref.npy", chunk_size=1)
    assert reference.computed_chunks == 4

    out = tmp_path / "f.npy"
    killed = counting_dataset(videos, stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        extract_features(enc, killed, out, chunk_size=1, settings={"model": "tiny"})
    assert killed.loaded == [0, 1] and not out.exists()
    partial = sidecar_paths(out)[2]
    assert sorted(p.name for p in partial.glob("chunk-*.pt")) == ["chunk-000000.pt", "chunk-000001.pt"]
    assert not list(partial.glob("*.tmp"))  # chunks are written atomically

    resumed = counting_dataset(videos)
    result = extract_features(enc, resumed, out, chunk_size=1, settings={"model": "tiny"})
    assert resumed.loaded == [2, 3]  # the saved chunks are not recomputed
    assert (result.computed_chunks, result.reused_chunks, result.rows) == (2, 2, 8)
    np.testing.assert_array_equal(np.load(out), np.load(tmp_path / "ref.npy"))
    assert read_index(out) == read_index(tmp_path / "ref.npy")

    # A rerun of a complete extraction does nothing.
    again = counting_dataset(videos)
    assert extract_features(enc, again, out, chunk_size=1, settings={"model": "tiny"}).rows == 8
    assert again.loaded == []


def test_resuming_with_other_settings_is_an_error(videos, tmp_path):
    enc = tiny_encoder(4)
    out = tmp_path / "f.npy"
    with pytest.raises(KeyboardInterrupt):
        extract_features(enc, counting_dataset(videos, stop_at=1), out, chunk_size=1, settings={"frame_step": 2})
    with pytest.raises(ValueError, match="frame_step: 2 there, 4 now.*--overwrite"):
        extract_features(enc, counting_dataset(videos), out, chunk_size=1, settings={"frame_step": 4})
    fresh = counting_dataset(videos)
    extract_features(enc, fresh, out, chunk_size=1, settings={"frame_step": 4}, overwrite=True)
    assert fresh.loaded == [0, 1, 2, 3]


def test_bad_arguments_give_clear_errors(videos, checkpoint, tmp_path):
    with pytest.raises(ValueError, match="image encoder"):
        extract_features(tiny_encoder(1), counting_dataset(videos), tmp_path / "f.npy")
    with pytest.raises(ValueError, match="must end in .npy or .pt"):
        extract_features(tiny_encoder(4), counting_dataset(videos), tmp_path / "f.csv")
    with pytest.raises(SystemExit, match="neither an annotation CSV file nor an image folder"):
        extract.main(["--checkpoint", str(checkpoint), "--num-heads", "3", "--num-frames", "4",
                      "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "f.npy")])  # fmt: skip
    with pytest.raises(SystemExit):
        extract.main(["--data", str(videos), "--out", str(tmp_path / "f.npy")])  # no model given


def test_image_items_and_video_clips_share_one_layout(videos, images):
    clips, label, starts = VideoClipDataset(videos, 4, 2, transform=Preprocess(crop_size=32).video).load(0)
    assert clips.shape == (2, 3, 4, 32, 32) and starts == [0, 4] and isinstance(label, int)
    image, label, starts = ImageItems(images, transform=Preprocess(crop_size=32)).load(0)
    assert image.shape == (1, 3, 32, 32) and starts == [-1] and label == 0


def test_hub_release_with_a_local_checkpoint(videos, tmp_path, monkeypatch):
    import dataclasses

    import jepa.hub

    release = dataclasses.replace(
        jepa.hub.RELEASES["vjepa_vitl16"], model_name=None, encoder_extra=dict(embed_dim=WIDTH, depth=2, num_heads=3),
        img_size=32, num_frames=4,
    )  # fmt: skip
    monkeypatch.setitem(jepa.hub.RELEASES, "vjepa_vitl16", release)
    encoder = jepa.hub.load("vjepa_vitl16", pretrained=False)
    path = jepa.save_checkpoint({"target_encoder": encoder.state_dict()}, tmp_path / "release.pth.tar")
    out = tmp_path / "f.npy"
    run_cli("--hub", "vjepa_vitl16", "--checkpoint", path, "--data", videos, "--out", out, "--frame-step", 2,
            "--clips-per-video", 1)  # fmt: skip
    feats = np.load(out)
    assert feats.shape == (4, WIDTH)
    settings = json.loads(sidecar_paths(out)[1].read_text())["settings"]
    assert settings["hub"] == "vjepa_vitl16" and settings["frames_per_clip"] == 4 and settings["crop_size"] == 32
    clips, _, _ = VideoClipDataset(videos, 4, 2, clips_per_video=1, transform=Preprocess(crop_size=32).video).load(0)
    with torch.no_grad():
        np.testing.assert_allclose(feats[0], encoder.forward_features(clips).mean(1)[0].numpy(), atol=1e-5)
