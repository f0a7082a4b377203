"""Procedurally textured shapes: a generated data set unlike digits, to check that a recipe transfers.

Ten shape classes (circle, ellipse, triangle, square, pentagon, star, cross, ring, crescent, arrow), each drawn at a
random position, size and rotation, filled with a random texture (stripes at a random angle and frequency, a
checkerboard, or blotchy noise) over a textured background of random brightness, in grey. Nothing here comes from
a download: numpy and PIL draw it, deterministically from a seed.

    python -m jepa.data.shapes images --out data/shapes --train 5000 --val 1000 --size 32
        # ImageFolder layout: data/shapes/{train,val}/<class>/<k>.png (data.root_path=data data.image_folder=shapes)
    python -m jepa.data.shapes clips --out data/shape_clips --train 2000 --val 500 --frames 16 --size 32
        # MP4 clips of a shape moving in one of 4 directions; {train,val}_shape.csv (appearance label) and
        # {train,val}_motion.csv (0 right, 1 left, 2 down, 3 up), the same clips in the same order
    python -m jepa.data.shapes clips --out data/flat_clips --style flat   # the same clips with flat fills

``--style flat`` draws the same shapes, positions and motions with flat fills instead of textures (one grey level
for the shape, another for the background, plus the same pixel noise): the same classes without textures, to check
whether the textures are what a recipe fails on (for the tiny ViT's attentive probe they were not: README).

Train and val use disjoint random streams (the split is part of the seed).
"""

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

Style = Literal["textured", "flat"]

SHAPES = ("circle", "ellipse", "triangle", "square", "pentagon", "star", "cross", "ring", "crescent", "arrow")
_SPLIT_CODE = {"train": 0, "val": 1}
_SUPERSAMPLE = 4
_UNIT_STEPS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx) per motion label: right, left, down, up


def _polygon(n: int, radius: float, rotation: float, inner: float | None = None) -> list[tuple[float, float]]:
    """Vertices around the origin: a regular ``n``-gon, or a star alternating ``radius`` and ``inner``."""
    points = []
    count = 2 * n if inner is not None else n
    for k in range(count):
        r = radius if inner is None or k % 2 == 0 else inner
        a = rotation + 2 * math.pi * k / count
        points.append((r * math.cos(a), r * math.sin(a)))
    return points


def _rotate(points: list[tuple[float, float]], rotation: float) -> list[tuple[float, float]]:
    c, s = math.cos(rotation), math.sin(rotation)
    return [(x * c - y * s, x * s + y * c) for x, y in points]


def shape_mask(shape: str, side: int, radius: float, rotation: float, center: tuple[float, float]) -> np.ndarray:
    """A float mask ``[side, side]`` in [0, 1] of ``shape`` (antialiased by supersampling)."""
    big = side * _SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    r = radius * _SUPERSAMPLE
    cx, cy = center[0] * _SUPERSAMPLE, center[1] * _SUPERSAMPLE

    def poly(points: list[tuple[float, float]]) -> None:
        draw.polygon([(cx + x, cy + y) for x, y in points], fill=255)

    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "ellipse":
        poly(_rotate([(r * math.cos(a), 0.45 * r * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 48)], rotation))
    elif shape == "triangle":
        poly(_polygon(3, r, rotation))
    elif shape == "square":
        poly(_polygon(4, r, rotation))
    elif shape == "pentagon":
        poly(_polygon(5, r, rotation))
    elif shape == "star":
        poly(_polygon(5, r, rotation, inner=0.42 * r))
    elif shape == "cross":
        w = 0.3 * r
        arm = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w)]
        poly(_rotate([*arm, (-w, -w)], rotation))
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        q = 0.55 * r
        draw.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
    elif shape == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        ox, oy = 0.45 * r * math.cos(rotation), 0.45 * r * math.sin(rotation)
        q = 0.85 * r
        draw.ellipse([cx + ox - q, cy + oy - q, cx + ox + q, cy + oy + q], fill=0)
    elif shape == "arrow":
        w = 0.28 * r
        poly(_rotate([(-r, -w), (0.1 * r, -w), (0.1 * r, -0.7 * r), (r, 0), (0.1 * r, 0.7 * r), (0.1 * r, w), (-r, w)],
                     rotation))  # fmt: skip
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    small = img.resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def texture(side: int, rng: np.random.Generator) -> np.ndarray:
    """A random texture ``[side, side]`` in [0, 1]: stripes, a checkerboard or smoothed noise."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:
        angle, period = rng.uniform(0, math.pi), rng.uniform(3.0, 8.0)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
    elif kind == 1:
        cell = int(rng.integers(2, 6))
        t = (((yy // cell) + (xx // cell)) % 2).astype(np.float32)
    else:
        coarse = rng.uniform(size=(side // 4 + 2, side // 4 + 2)).astype(np.float32)
        t = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC))
        t = t.astype(np.float32) / 255.0
    return t


def _fill(side: int, rng: np.random.Generator, style: Style) -> np.ndarray:
    """The texture of one surface: :func:`texture` when ``style`` is ``"textured"``, zeros (the low level of the
    palette) when ``"flat"``."""
    if style == "textured":
        return texture(side, rng)
    if style == "flat":
        return np.zeros((side, side), dtype=np.float32)
    raise ValueError(f"shapes style: expected 'textured' or 'flat', got {style!r}")


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background texture levels ``(lo, hi)``: the shape lighter or darker than its background."""
    fg = np.sort(rng.uniform(0.0, 1.0, size=2))
    bg = np.sort(rng.uniform(0.0, 1.0, size=2))
    if rng.uniform() < 0.5:
        fg, bg = 0.55 + 0.45 * fg, 0.45 * bg
    else:
        fg, bg = 0.45 * fg, 0.55 + 0.45 * bg
    return fg, bg


def image_shape_mask(label: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """The mask of one image's shape: its size, position and rotation, the first draws from the image's ``rng``
    (before its fills, so both styles put the same shape in the same place)."""
    radius = rng.uniform(0.22, 0.38) * side
    margin = radius * 0.9
    center = (rng.uniform(margin, side - margin), rng.uniform(margin, side - margin))
    return shape_mask(SHAPES[label], side, radius, rng.uniform(0, 2 * math.pi), center)


def render_shape(label: int, side: int, rng: np.random.Generator, style: Style = "textured") -> np.ndarray:
    """One uint8 grey image ``[side, side]`` of shape class ``label``."""
    mask = image_shape_mask(label, side, rng)
    return _compose(mask, _fill(side, rng, style), _fill(side, rng, style), *_palette(rng), rng)


def _compose(mask, fg_tex, bg_tex, fg, bg, rng: np.random.Generator) -> np.ndarray:
    fg_img = fg[0] + (fg[1] - fg[0]) * fg_tex
    bg_img = bg[0] + (bg[1] - bg[0]) * bg_tex
    img = mask * fg_img + (1 - mask) * bg_img + rng.normal(0.0, 0.03, size=mask.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODE[split], index])


def make_shape_images(
    out_dir: str | Path, *, num_train: int, num_val: int, size: int = 32, seed: int = 0, style: Style = "textured",
) -> Path:  # fmt: skip
    """Write ``out_dir/{train,val}/<class>/<k:06d>.png`` (balanced classes); returns ``out_dir``."""
    out = Path(out_dir)
    for split, count in (("train", num_train), ("val", num_val)):
        for name in SHAPES:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            label = k % len(SHAPES)
            img = render_shape(label, size, _rng(seed, split, k), style)
            Image.fromarray(img, mode="L").save(out / split / SHAPES[label] / f"{k:06d}.png")
    (out / "manifest.json").write_text(json.dumps(dict(kind="images", train=num_train, val=num_val, size=size,
                                                       seed=seed, style=style, classes=list(SHAPES))))  # fmt: skip
    return out


def render_moving_shape(
    label: int, direction: int, frames: int, side: int, rng: np.random.Generator, style: Style = "textured",
) -> np.ndarray:  # fmt: skip
    """uint8 grey frames ``[frames, side, side]``: a textured shape (its texture moves with it) travelling 25-50%
    of the canvas in ``direction`` over a static textured background."""
    radius = rng.uniform(0.2, 0.3) * side
    travel = rng.uniform(0.25, 0.5) * side
    dy, dx = _UNIT_STEPS[direction]
    margin = radius * 0.9
    # Start so that the whole path stays on the canvas.
    lo_x = margin + (travel if dx < 0 else 0)
    hi_x = side - margin - (travel if dx > 0 else 0)
    lo_y = margin + (travel if dy < 0 else 0)
    hi_y = side - margin - (travel if dy > 0 else 0)
    x0, y0 = rng.uniform(lo_x, max(lo_x, hi_x)), rng.uniform(lo_y, max(lo_y, hi_y))
    rotation = rng.uniform(0, 2 * math.pi)
    pad = int(math.ceil(travel)) + 1
    fg_tex_big = _fill(side + 2 * pad, rng, style)
    bg_tex = _fill(side, rng, style)
    fg, bg = _palette(rng)
    out = np.empty((frames, side, side), dtype=np.uint8)
    for t in range(frames):
        shift = travel * t / max(frames - 1, 1)
        cx, cy = x0 + dx * shift, y0 + dy * shift
        mask = shape_mask(SHAPES[label], side, radius, rotation, (cx, cy))
        oy, ox = pad - int(round(dy * shift)), pad - int(round(dx * shift))
        out[t] = _compose(mask, fg_tex_big[oy : oy + side, ox : ox + side], bg_tex, fg, bg, rng)
    return out


def make_shape_clips(
    out_dir: str | Path, *, num_train: int, num_val: int, frames: int = 16, size: int = 32, seed: int = 0,
    fps: int = 8, codec: Literal["libx264", "mpeg4"] = "libx264", style: Style = "textured",
) -> Path:  # fmt: skip
    """Write MP4 clips ``out_dir/<split>/<k:06d>.mp4`` and ``out_dir/<split>_{shape,motion}.csv`` (absolute paths,
    ``<path> <label>`` lines as the official annotation CSVs); shape and direction balanced and independent."""
    from jepa.video.moving_digits import _write_mp4

    out = Path(out_dir).resolve()
    for split, count in (("train", num_train), ("val", num_val)):
        (out / split).mkdir(parents=True, exist_ok=True)
        shape_rows, motion_rows = [], []
        for k in range(count):
            label, direction = k % len(SHAPES), (k // len(SHAPES)) % len(_UNIT_STEPS)
            clip = render_moving_shape(label, direction, frames, size, _rng(seed, split, k), style)
            path = out / split / f"{k:06d}.mp4"
            _write_mp4(path, clip, fps, codec)
            shape_rows.append(f"{path} {label}")
            motion_rows.append(f"{path} {direction}")
        (out / f"{split}_shape.csv").write_text("\n".join(shape_rows) + "\n")
        (out / f"{split}_motion.csv").write_text("\n".join(motion_rows) + "\n")
    manifest = dict(kind="clips", train=num_train, val=num_val, frames=frames, size=size, seed=seed, fps=fps,
                    style=style)  # fmt: skip
    (out / "manifest.json").write_text(json.dumps({**manifest, "classes": list(SHAPES)}))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("images", "clips"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--style", choices=("textured", "flat"), default="textured")
    args = parser.parse_args(argv)
    if args.kind == "images":
        make_shape_images(args.out, num_train=args.train, num_val=args.val, size=args.size, seed=args.seed,
                          style=args.style)  # fmt: skip
    else:
        make_shape_clips(args.out, num_train=args.train, num_val=args.val, frames=args.frames, size=args.size,
                         seed=args.seed, style=args.style)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
