"""Render one batch of V-JEPA multiblock 3D masks over real clips to a PNG, to see what the masks look like.

The masks are the paper's default pair of mask configs (8 blocks at spatial scale 0.15 and 2 at 0.7, aspect ratio
0.75-1.5, spanning all time steps) on the paper's 16-frame 224 px clips with 16 px patches and tubelets of 2 frames,
as the trainer receives them (after equal-length truncation). The clips are moving digits, written to a temporary
folder as MP4 and decoded back with PyAV, upscaled to 224 px.

Rows: sample 0 with mask config 0, sample 0 with mask config 1, sample 1 with mask config 0, ...; columns: the
token time steps (each shows the first frame of its tubelet). Context tokens are shown as they are, target tokens
tinted red, tokens in neither (cut by the truncation) darkened.

    python benchmarks/render_video_masks.py --out masks.png

Prints one JSON line with the output path, the token grid and, per mask config, the context and target lengths.
"""

import argparse
import json
import tempfile
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageDraw

from jepa.config.pretrain import VideoMaskConfig
from jepa.masks import masks_to_grid
from jepa.video.masks import MultiblockMaskCollator3D
from jepa.video.moving_digits import make_moving_digits

PAPER_MASKS = [
    VideoMaskConfig(aspect_ratio=(0.75, 1.5), num_blocks=8, spatial_scale=(0.15, 0.15), temporal_scale=(1.0, 1.0)),
    VideoMaskConfig(aspect_ratio=(0.75, 1.5), num_blocks=2, spatial_scale=(0.7, 0.7), temporal_scale=(1.0, 1.0)),
]
CROP, FRAMES, PATCH, TUBELET = 224, 16, 16, 2
TARGET_TINT = np.array([255, 40, 40], dtype=np.float32)
LABEL_WIDTH, HEADER_HEIGHT, GAP = 150, 20, 4


def decode_rgb(path: str) -> np.ndarray:
    """All frames of a video as uint8 ``[T, H, W, 3]``."""
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def load_clips(num: int, seed: int) -> list[torch.Tensor]:
    """``num`` moving-digit clips, uint8 ``[FRAMES, CROP, CROP, 3]`` (nearest-neighbour upscaled)."""
    with tempfile.TemporaryDirectory() as tmp:
        csv = make_moving_digits(tmp, num_videos=num, num_frames=FRAMES, size=32, seed=seed)
        paths = [line.split(" ")[0] for line in csv.read_text().splitlines()]
        clips = [decode_rgb(p) for p in paths]
    scale = CROP // clips[0].shape[1]
    return [torch.from_numpy(c.repeat(scale, axis=1).repeat(scale, axis=2)) for c in clips]


def render_cell(frame: np.ndarray, context: np.ndarray, target: np.ndarray, cell: int) -> Image.Image:
    """One frame ``[CROP, CROP, 3]`` with its tokens shaded: context ``[H, W]`` as is, target tinted, rest dark."""
    token = CROP // context.shape[0]
    up = np.ones((CROP, CROP, 1), dtype=bool)
    ctx = context.repeat(token, 0).repeat(token, 1)[..., None] & up
    tgt = target.repeat(token, 0).repeat(token, 1)[..., None] & up
    img = frame.astype(np.float32)
    img = np.where(tgt, 0.45 * img + 0.55 * TARGET_TINT, img)
    img = np.where(ctx | tgt, img, 0.2 * img + 20)
    # Token grid lines, faint, so that token boundaries read.
    img[::token] = 0.7 * img[::token] + 0.3 * 128
    img[:, ::token] = 0.7 * img[:, ::token] + 0.3 * 128
    return Image.fromarray(img.clip(0, 255).astype(np.uint8)).resize((cell, cell), Image.Resampling.NEAREST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("masks.png"), help="PNG to write")
    parser.add_argument("--samples", type=int, default=2, help="samples (clips) in the batch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clips and of the masks")
    parser.add_argument("--cell", type=int, default=112, help="side of one rendered frame, in pixels")
    args = parser.parse_args()

    clips = load_clips(args.samples, args.seed)
    collator = MultiblockMaskCollator3D(
        PAPER_MASKS, crop_size=CROP, num_frames=FRAMES, patch_size=PATCH, tubelet_size=TUBELET, seed=args.seed
    )
    grid = collator.grid_size
    _, masks_enc, masks_pred = collator([(clip, 0, i) for i, clip in enumerate(clips)])

    rows = [(b, i) for b in range(args.samples) for i in range(len(PAPER_MASKS))]
    width = LABEL_WIDTH + grid[0] * (args.cell + GAP)
    height = HEADER_HEIGHT + len(rows) * (args.cell + GAP)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for t in range(grid[0]):
        draw.text((LABEL_WIDTH + t * (args.cell + GAP) + 4, 4), f"t={t} (frame {t * TUBELET})", fill="black")
    for r, (b, i) in enumerate(rows):
        y = HEADER_HEIGHT + r * (args.cell + GAP)
        cfg = PAPER_MASKS[i]
        label = f"sample {b}\nmask {i}: {cfg.num_blocks} x {cfg.spatial_scale[0]}"
        label += f"\nctx {masks_enc[i].shape[1]}, tgt {masks_pred[i].shape[1]}"
        draw.multiline_text((4, y + 4), label, fill="black")
        context = masks_to_grid(masks_enc[i][b], grid).numpy()
        target = masks_to_grid(masks_pred[i][b], grid).numpy()
        for t in range(grid[0]):
            frame = clips[b][t * TUBELET].numpy()
            canvas.paste(render_cell(frame, context[t], target[t], args.cell), (LABEL_WIDTH + t * (args.cell + GAP), y))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)

    report = dict(
        case="paper_multiblock_3d",
        out=str(args.out.resolve()),
        grid=list(grid),
        context_tokens=[m.shape[1] for m in masks_enc],
        target_tokens=[m.shape[1] for m in masks_pred],
        tokens=int(np.prod(grid)),
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
