"""What a pretraining config builds: encoder and predictor, the training set and its mask collator, the mask sets a
batch feeds the JEPA module, the loss and the schedules. ``app.pretrain`` wires them into its trainer; the
benchmarks use them directly."""

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from jepa.config import ConfigError, PretrainConfig
from jepa.config.pretrain import ImageMaskConfig, OptimizationConfig
from jepa.config.spec import EncoderSpec
from jepa.data.sampling import MapDataset
from jepa.masks.collate import MaskCollator
from jepa.models import VisionTransformer, VisionTransformerPredictor
from jepa.models.builder import build_models_from_spec
from jepa.models.vision_transformer import Modality
from jepa.training.lejepa import LeJEPA, Projector, multiview_groups
from jepa.training.meta_arch import ClipGroup, MaskSet
from jepa.training.schedules import Schedules
from jepa.video.masks import LengthGroup, MultiLengthMaskCollator

if TYPE_CHECKING:
    from jepa.models.ac_predictor import VisionTransformerPredictorAC
    from jepa.worldmodel.model import WorldModel

logger = logging.getLogger(__name__)

# What a pretraining loader's collate_fn is: one mask collator (app vjepa_droid's draws no masks), or V-JEPA 2's
# grouping one for several clip lengths.
Collator = MaskCollator | MultiLengthMaskCollator

MOVING_DIGITS_VIDEOS = 2000  # clips generated for `dataset_type: moving_digits` (about 20 s, once)
MOVING_DIGITS_FPS = 8  # their frame rate (what data.fps is taken from)


def build_models(cfg: PretrainConfig) -> tuple[VisionTransformer, VisionTransformerPredictor]:
    """Encoder and predictor as the config describes them (its model spec, through the one builder)."""
    return build_models_from_spec(cfg.model_spec())


def jepa_objective_kwargs(cfg: PretrainConfig) -> dict[str, Any]:
    """The :class:`jepa.training.meta_arch.JEPA` keywords of app vjepa_2_1's objective (dense prediction and its
    weight schedule per modality, the target levels, normalised predictions); none for the other apps."""
    if not cfg.is_vjepa21:
        return {}
    m, loss = cfg.model, cfg.loss
    dense = bool(loss.predict_all)
    return dict(
        predict_all=dense,
        weight_distance_loss=dense and loss.weight_distance_loss,
        offset_context_loss=dense and loss.offset_context_loss,
        context_lambda={"image": m.lambda_value_img, "video": m.lambda_value_vid} if dense else {},
        lambda_progressive=m.lambda_progressive,
        lambda_start=m.lambda_start_iter,
        lambda_end=m.lambda_end_iter,
        levels=m.levels_predictor,
        normalize_predictor=m.normalize_predictor,
    )


def teacher_spec(cfg: PretrainConfig, checkpoint: Mapping[str, Any]) -> EncoderSpec:
    """The architecture of the distillation teacher in ``checkpoint`` (``cfg.distillation``): the hub release
    ``teacher_release``, else the config the file stores (a checkpoint of ours), run at this run's input size and
    with the student's number of levels (``model.levels_predictor``: the teacher's last levels are the targets)."""
    from jepa.config.pretrain import model_spec_from_config_dict

    d, levels = cfg.distillation, cfg.model.levels_predictor
    if d.teacher_release is not None:
        from jepa.hub import get_release

        try:
            release = get_release(d.teacher_release)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"distillation.teacher_release: {e}") from None
        spec = release.spec().encoder
    else:
        stored = checkpoint.get("config")
        if not isinstance(stored, Mapping):
            raise ConfigError(
                f"distillation.teacher_release: required, since {d.teacher_checkpoint} stores no config to read the "
                "teacher's architecture from (name a hub release, e.g. vjepa2_1_vit_gigantic_384)"
            )
        spec = model_spec_from_config_dict(stored).encoder
    if cfg.img_data is not None and spec.img_temporal_dim_size != 1:
        raise ConfigError(
            f"distillation: the teacher {d.teacher_release or d.teacher_checkpoint} has no image tokenizer "
            "(img_temporal_dim_size 1), but img_data trains on images: distil from a V-JEPA 2.1 encoder"
        )
    if levels > spec.levels and not spec.deep_supervision:
        raise ConfigError(
            f"model.levels_predictor: got {levels}, but the teacher {d.teacher_release or d.teacher_checkpoint} "
            "has one level (no deep supervision): set levels_predictor: 1"
        )
    run: dict[str, Any] = dict(img_size=cfg.data.crop_size, num_frames=cfg.data.num_frames, use_sdpa=cfg.meta.use_sdpa)
    if spec.deep_supervision:
        run["n_output_distillation"] = levels
    return dataclasses.replace(spec, **run)


def build_teacher(cfg: PretrainConfig) -> VisionTransformer | None:
    """The frozen distillation teacher of ``cfg.distillation`` (None without one), loaded strictly from
    ``teacher_checkpoint[teacher_key]``; sets ``cfg.distillation.teacher_embed_dim`` to the width of its targets
    (levels x width), the student predictor's output width, and refuses another value given in the config."""
    d = cfg.distillation
    if d.teacher_checkpoint is None:
        return None
    from jepa.checkpoint import load_encoder, read_checkpoint

    checkpoint = read_checkpoint(d.teacher_checkpoint, mmap=True)
    spec = teacher_spec(cfg, checkpoint)
    teacher = load_encoder(checkpoint, which=d.teacher_key, spec=spec)
    width = spec.embed_dim * spec.levels
    if d.teacher_embed_dim is not None and d.teacher_embed_dim != width:
        raise ConfigError(
            f"distillation.teacher_embed_dim: got {d.teacher_embed_dim}, but the teacher's targets are {width} wide "
            f"({spec.levels} level(s) of {spec.embed_dim}): remove the key"
        )
    d.teacher_embed_dim = width
    logger.info("distillation teacher: %s [%s], %s, targets %d wide", d.teacher_checkpoint, d.teacher_key,
                d.teacher_release or "architecture from its stored config", width)  # fmt: skip
    return teacher


def build_lejepa(cfg: PretrainConfig, encoder: VisionTransformer) -> LeJEPA:
    """``app: lejepa``: ``encoder`` with the projector head and the loss of ``cfg.lejepa`` / ``cfg.loss``."""
    lj = cfg.lejepa
    return LeJEPA(
        encoder,
        Projector(encoder.embed_dim, lj.projector_dims, lj.projector_norm),
        global_views=lj.global_views,
        local_views=lj.local_views,
        lejepa_lambda=cfg.loss.lejepa_lambda,
        sigreg_directions=lj.sigreg_directions,
        seed=cfg.meta.seed,
    )


def ac_predictor_kwargs(cfg: PretrainConfig, embed_dim: int) -> dict[str, Any]:
    """The :func:`jepa.models.ac_predictor.vit_ac_predictor` keywords of an ``app: vjepa_droid`` config over an
    encoder of width ``embed_dim`` (the official ``init_video_model``'s mapping; 7-number actions and states)."""
    d, m = cfg.data, cfg.model
    return dict(
        img_size=d.crop_size, patch_size=d.patch_size, num_frames=d.num_frames, tubelet_size=d.tubelet_size,
        embed_dim=embed_dim, predictor_embed_dim=m.pred_embed_dim, depth=m.pred_depth, num_heads=m.predictor_heads,
        uniform_power=m.uniform_power, use_rope=m.use_rope, is_frame_causal=m.pred_is_frame_causal,
        use_extrinsics=m.use_extrinsics, use_sdpa=cfg.meta.use_sdpa,
        use_activation_checkpointing=m.use_activation_checkpointing, action_embed_dim=7,
        square_rope_grid=False,  # trained here: true positions (the square grid is a release quirk)
    )  # fmt: skip


def build_world_model(cfg: PretrainConfig) -> "WorldModel":
    """``app: vjepa_droid``: the frozen encoder (``meta.pretrain_checkpoint``'s ``meta.target_encoder_key`` entry,
    loaded strictly, or a random one when no checkpoint is given: logged), the AC predictor (from that file's
    ``predictor`` with ``meta.load_predictor``) and the objective of ``cfg.loss``."""
    from jepa.checkpoint import extract_state_dict, load_encoder, load_strict
    from jepa.models.ac_predictor import vit_ac_predictor
    from jepa.models.builder import build_encoder_from_spec
    from jepa.worldmodel.model import WorldModel

    meta, spec = cfg.meta, cfg.model_spec()
    if meta.pretrain_checkpoint:
        encoder = load_encoder(meta.pretrain_checkpoint, which=meta.target_encoder_key, spec=spec)
        logger.info("frozen encoder: %s [%s]", meta.pretrain_checkpoint, meta.target_encoder_key)
    else:
        encoder = build_encoder_from_spec(spec)
        logger.warning("meta.pretrain_checkpoint is null: the frozen encoder is randomly initialised")
    predictor: VisionTransformerPredictorAC = vit_ac_predictor(**ac_predictor_kwargs(cfg, encoder.embed_dim))
    if meta.load_predictor:
        assert meta.pretrain_checkpoint is not None  # PretrainConfig checks it
        state = extract_state_dict(meta.pretrain_checkpoint, ("predictor",))
        load_strict(predictor, state, f"{meta.pretrain_checkpoint} [predictor]")
    return WorldModel(encoder, predictor, auto_steps=cfg.loss.auto_steps, loss_exp=cfg.loss.loss_exp,
                      normalize_reps=cfg.loss.normalize_reps)  # fmt: skip


def toy_world_of(cfg: PretrainConfig) -> Any:
    """The :class:`jepa.worldmodel.toyworld.ToyWorld` of a config's ``toy_world`` section (frames of
    ``data.crop_size`` pixels)."""
    from jepa.worldmodel.toyworld import ToyWorld

    t = cfg.toy_world
    return ToyWorld(size=cfg.data.crop_size, radius=t.radius, max_step=t.max_step, halo=t.halo,
                    obstacles=tuple(tuple(b) for b in t.obstacles))  # type: ignore[misc]  # fmt: skip


def trajectory_csvs(cfg: PretrainConfig) -> list[str]:
    """The trajectory CSVs of an ``app: vjepa_droid`` config; ``toy_world`` generates its trajectories (once)
    under ``data.root_path``."""
    d = cfg.data
    if d.dataset_type.lower() != "toy_world":
        return list(d.datasets)
    from jepa.worldmodel.toyworld import write_toy_trajectories

    t = cfg.toy_world
    # One folder per world and generator setting, so that changing one of them generates afresh.
    key = json.dumps([d.crop_size, t.length, t.fps, t.radius, t.max_step, t.halo, t.obstacles, cfg.meta.seed])
    root = Path(d.root_path or "runs/data/toy_world") / f"{d.crop_size}px_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    csv = write_toy_trajectories(root, num_trajectories=t.num_trajectories, length=t.length, world=toy_world_of(cfg),
                                 fps=t.fps, seed=cfg.meta.seed)  # fmt: skip
    return [str(csv)]


def _trajectory_data(cfg: PretrainConfig, seed: int) -> tuple[MapDataset, Collator]:
    from jepa.worldmodel.data import NoMasks, TrajectoryDataset

    d = cfg.data
    dataset = TrajectoryDataset(
        trajectory_csvs(cfg), frames_per_clip=d.num_frames, fps=d.fps, crop_size=d.crop_size,
        camera_views=d.camera_views, decoder=d.decoder, on_error="random", max_bad_fraction=d.max_bad_fraction,
        seed=seed,
    )  # fmt: skip
    return dataset, NoMasks(seed)


def build_dataset_and_collator(
    cfg: PretrainConfig, seed: int, *, moving_digits_videos: int = MOVING_DIGITS_VIDEOS
) -> tuple[MapDataset, Collator]:
    """The training set (samples end with their index) and the mask collator of the config's modality (with clips
    of several lengths, ``data.dataset_fpcs``, a :class:`MultiLengthMaskCollator`); ``moving_digits_videos``: the
    clips a ``moving_digits`` data set generates (see :func:`video_annotation_files`). ``app: lejepa``: each sample
    (image or clip) is its multi-crop views (:mod:`jepa.image.multiview`)."""
    if cfg.app == "lejepa":
        return _multiview_data(cfg, seed, moving_digits_videos)
    if cfg.is_world_model:
        return _trajectory_data(cfg, seed)
    if cfg.is_video:
        return _video_data(cfg, seed, moving_digits_videos)
    return _image_data(cfg, seed)


def _image_data(cfg: PretrainConfig, seed: int) -> tuple[MapDataset, MaskCollator]:
    from jepa.image.masks import MultiblockMaskCollator2D

    d = cfg.data
    transform = _image_crop(cfg, d.crop_size, d.crop_scale)
    assert isinstance(cfg.mask, ImageMaskConfig)  # an ijepa config holds one mask mapping (PretrainConfig checks it)
    collator = MultiblockMaskCollator2D(cfg.mask, input_size=d.crop_size, patch_size=d.patch_size, seed=seed)
    return _image_dataset(cfg, seed, transform), collator


@dataclasses.dataclass(frozen=True)
class RankSplit:
    """App vjepa_2_1's ``ranks`` mix on ``world_size`` processes: ranks ``0 .. image_ranks - 1`` train on images
    (``image_batch`` each), the others on video (``video_batch`` each, so that the global video batch stays
    ``data.batch_size * world_size``)."""

    image_ranks: int
    video_ranks: int
    image_batch: int
    video_batch: int


def rank_split(cfg: PretrainConfig, world_size: int) -> RankSplit:
    """The image and video ranks of a ``ranks`` mix and their per-rank batches, as the official run splits them;
    a :class:`ConfigError` naming the batch size when a global batch does not divide over its ranks."""
    img, batch = cfg.img_data, cfg.data.batch_size
    if img is None:
        raise ValueError("the config has no img_data section")
    image_ranks = int(world_size * img.rank_ratio)
    video_ranks = world_size - image_ranks
    for key, per_rank, ranks, kind in (("img_data.batch_size", img.batch_size, image_ranks, "image"),
                                       ("data.batch_size", batch, video_ranks, "video")):  # fmt: skip
        if ranks < 1 or per_rank * world_size % ranks:
            raise ConfigError(
                f"{key}: {per_rank} x {world_size} ranks = {per_rank * world_size} does not divide over the {ranks} "
                f"{kind} rank(s) of img_data.rank_ratio {img.rank_ratio} (the official rule for splitting the global "
                "batch)"
            )
    return RankSplit(image_ranks, video_ranks, img.batch_size, batch * world_size // video_ranks)


def build_image_data(cfg: PretrainConfig, seed: int, mask_seed: int | None = None) -> tuple[MapDataset, MaskCollator]:
    """App vjepa_2_1's images (``img_data``) and their masks: random resized crops of ``img_data.crop_size``
    (area ``crop_scale``, horizontal flips, as the official transform of its image ranks), and V-JEPA's multiblock
    masks of ``cfg.image_masks`` on the 1-frame grid with tubelets of 1 (the collator gives ``[B, C, H, W]``;
    :func:`clip_groups` makes them 1-frame clips). ``seed`` seeds the data set (the built-in digits' train / val
    split, as the probes read it), ``mask_seed`` (default ``seed``) the masks."""
    from jepa.image.transforms import make_pretrain_transforms
    from jepa.video.masks import MultiblockMaskCollator3D

    img = cfg.img_data
    if img is None:
        raise ValueError("the config has no img_data section")
    transform = make_pretrain_transforms(crop_size=img.crop_size, crop_scale=img.crop_scale, horizontal_flip=True)
    dataset = _image_dataset(cfg, seed, transform, source=img)
    collator = MultiblockMaskCollator3D(cfg.image_masks, crop_size=img.crop_size, num_frames=1,
                                        patch_size=cfg.data.patch_size, tubelet_size=1,
                                        seed=seed if mask_seed is None else mask_seed)  # fmt: skip
    return dataset, collator


def _multiview_data(cfg: PretrainConfig, seed: int, moving_digits_videos: int) -> tuple[MapDataset, MaskCollator]:
    """App lejepa: each image, or each clip of a video data set (:attr:`PretrainConfig.video_data`), as its global
    and local views (:mod:`jepa.image.multiview`): the pretraining crop of its modality at two sizes and scales."""
    from jepa.image.multiview import MultiViewCollator, MultiViewTransform

    d, lj, video = cfg.data, cfg.lejepa, cfg.video_data

    def crop(size: int, scale: tuple[float, float]) -> Callable[[Any], Any]:
        return _clip_crop(cfg, size, scale, d.use_horizontal_flip) if video else _image_crop(cfg, size, scale)

    transform = MultiViewTransform(crop(d.crop_size, d.crop_scale), crop(lj.local_crop_size, lj.local_crop_scale),
                                   global_views=lj.global_views, local_views=lj.local_views)  # fmt: skip
    sizes = [d.crop_size] + ([lj.local_crop_size] if lj.local_views else [])
    collator = MultiViewCollator(sizes, d.patch_size, seed=seed, num_frames=d.num_frames if video else 1,
                                 tubelet_size=d.tubelet_size)  # fmt: skip
    if video:
        return _clip_dataset(cfg, seed, transform, moving_digits_videos), collator
    return _image_dataset(cfg, seed, transform), collator


def _image_crop(cfg: PretrainConfig, size: int, scale: tuple[float, float]) -> Any:
    """The image pretraining crop: a random resized crop of side ``size`` and area ``scale``, with ``data``'s flip,
    colour and blur switches."""
    from jepa.image.transforms import make_pretrain_transforms

    d = cfg.data
    return make_pretrain_transforms(
        crop_size=size,
        crop_scale=scale,
        horizontal_flip=d.use_horizontal_flip,
        color_distortion=d.use_color_distortion,
        color_jitter=d.color_jitter_strength,
        gaussian_blur=d.use_gaussian_blur,
    )


def _clip_crop(cfg: PretrainConfig, size: int, scale: tuple[float, float], horizontal_flip: bool) -> Any:
    """The clip pretraining crop (:class:`jepa.video.transforms.VideoTrainTransform`): one box of side ``size`` and
    area ``scale`` for the clip, with ``data_aug``'s aspect ratios, motion shift, RandAugment and erasing."""
    from jepa.video.transforms import VideoTrainTransform

    aug = cfg.data_aug
    return VideoTrainTransform(
        crop_size=size,
        random_resize_scale=scale,
        random_resize_aspect_ratio=aug.random_resize_aspect_ratio,
        horizontal_flip=horizontal_flip,
        motion_shift=aug.motion_shift,
        auto_augment=aug.auto_augment,
        reprob=aug.reprob,
    )


def _image_dataset(
    cfg: PretrainConfig, seed: int, transform: Callable[[Any], object], source: Any = None
) -> MapDataset:
    """The config's training images, each passed through ``transform`` (a crop, or all of a sample's views), from
    ``source``: the ``data`` section (default) or app vjepa_2_1's ``img_data`` (same source keys)."""
    from jepa.image.datasets import make_image_dataset

    d = cfg.data if source is None else source
    return make_image_dataset(
        d.dataset_type,
        root_path=d.root_path,
        image_folder=d.image_folder,
        split="train",
        transform=transform,
        image_size=d.crop_size,
        seed=seed,
        on_error="random",  # a random stand-in, not the neighbour, which would get double weight
        max_bad_fraction=cfg.data.max_bad_fraction,
    )


def video_annotation_files(
    cfg: PretrainConfig, split: Literal["train", "val"] = "train", *, moving_digits_videos: int = MOVING_DIGITS_VIDEOS
) -> list[str]:
    """The annotation CSVs of a video config; ``moving_digits`` generates its clips (once) under ``root_path``:
    ``moving_digits_videos`` for the train split, a quarter of them for the val split, listed once per entry of
    ``data.dataset_fpcs`` (each reads them at its length)."""
    d = cfg.data
    if d.dataset_type.lower() != "moving_digits":
        if not d.datasets:
            raise ValueError("data.datasets lists no annotation CSV files")
        return list(d.datasets)
    from jepa.video.datasets import frame_step_for
    from jepa.video.moving_digits import make_moving_digits

    # Long enough for a clip of the longest length at the frame step the config asks for.
    step = d.frame_step or frame_step_for(
        MOVING_DIGITS_FPS, frames_per_clip=d.num_frames, fps=d.fps, duration=d.clip_duration
    )
    frames = d.num_frames * step
    root = Path(d.root_path or "runs/data/moving_digits") / f"{frames}f_{d.crop_size}px"
    videos = moving_digits_videos if split == "train" else moving_digits_videos // 4
    csv = make_moving_digits(
        root, num_videos=videos, num_frames=frames, size=d.crop_size, split=split, fps=MOVING_DIGITS_FPS
    )
    return [str(csv)] * len(d.dataset_fpcs or [d.num_frames])


def _clip_dataset(
    cfg: PretrainConfig, seed: int, transform: Callable[[Any], object], moving_digits_videos: int
) -> MapDataset:
    """The config's training clips (``data.datasets``, or generated moving digits), each through ``transform``."""
    from jepa.video.datasets import VideoDataset

    d = cfg.data
    return VideoDataset(
        video_annotation_files(cfg, moving_digits_videos=moving_digits_videos),
        datasets_weights=d.datasets_weights,
        frames_per_clip=d.num_frames,
        dataset_fpcs=d.dataset_fpcs,
        frame_step=d.frame_step or 1,  # unused: fps or clip_duration picks the step of each video
        fps=d.fps,
        duration=d.clip_duration,
        num_clips=d.num_clips,
        random_clip_sampling=True,
        filter_short_videos=d.filter_short_videos,
        transform=transform,
        decoder=d.decoder,
        seed=seed,
        on_error="random",  # a random stand-in, not the neighbour, which would get double weight
        max_bad_fraction=d.max_bad_fraction,
    )


def _video_data(cfg: PretrainConfig, seed: int, moving_digits_videos: int) -> tuple[MapDataset, Collator]:
    from jepa.video.masks import MultiblockMaskCollator3D

    d = cfg.data
    transform = _clip_crop(cfg, d.crop_size, cfg.data_aug.random_resize_scale, horizontal_flip=True)
    dataset = _clip_dataset(cfg, seed, transform, moving_digits_videos)
    assert isinstance(cfg.mask, list)  # a vjepa config holds a list of mask configs (PretrainConfig checks it)
    grid = dict(crop_size=d.crop_size, patch_size=d.patch_size, tubelet_size=d.tubelet_size, seed=seed)
    if len(d.clip_lengths) > 1:
        return dataset, MultiLengthMaskCollator(cfg.mask, d.clip_lengths, **grid)
    return dataset, MultiblockMaskCollator3D(cfg.mask, num_frames=d.num_frames, **grid)


def mask_sets(cfg: PretrainConfig, masks_enc: list[Tensor], masks_pred: list[Tensor]) -> list[MaskSet]:
    """Pair a batch's masks as the JEPA module takes them: I-JEPA has one set (its context masks with all its
    target masks); V-JEPA has one (context, target) pair per mask config (its mask token: see
    :func:`mask_token_indices`)."""
    if cfg.is_video:
        return [([e], [p]) for e, p in zip(masks_enc, masks_pred, strict=True)]
    return [(masks_enc, masks_pred)]


def mask_token_indices(cfg: PretrainConfig, length_index: int, count: int) -> list[int]:
    """The predictor mask token of each of ``count`` mask sets of the clips of length group ``length_index``
    (:meth:`jepa.config.PretrainConfig.mask_token_index`; I-JEPA's one set uses token 0)."""
    return [cfg.mask_token_index(length_index, i) for i in range(count)]


def spare_mask_tokens(cfg: PretrainConfig) -> int:
    """How many of the predictor's mask tokens no mask set ever uses (V-JEPA 2 builds one per (mask config,
    ``dataset_fpcs`` entry) and uses one per distinct length); they get no gradient, which DDP must be told."""
    configs = len(cfg.mask) if isinstance(cfg.mask, list) else 1
    used = {cfg.mask_token_index(g, i) for g in range(len(cfg.data.clip_lengths)) for i in range(configs)}
    return cfg.num_mask_tokens - len(used)


def clip_groups(
    cfg: PretrainConfig, batch: Any, device: torch.device | str = "cpu", modality: Modality = "video"
) -> list[ClipGroup]:
    """A loader batch as the JEPA module takes it, on ``device``: one :class:`ClipGroup` per clip length.

    ``batch`` is what the config's collator returns: ``((x, labels, seeds), masks_enc, masks_pred)``, or with
    several clip lengths a list of :class:`LengthGroup`; for ``app: lejepa`` one group per view kind
    (:func:`jepa.training.lejepa.multiview_groups`). ``modality="image"`` (app vjepa_2_1, a batch of
    :func:`build_image_data`): the images ``[B, C, H, W]`` become 1-frame clips ``[B, C, 1, H, W]``, and the groups
    are marked as images.
    """
    if cfg.app == "lejepa":
        return multiview_groups(batch, device)
    if cfg.is_world_model:
        from jepa.worldmodel.model import trajectory_batch

        return [trajectory_batch(batch, device)]
    parts: Sequence[tuple[int, Any, list[Tensor], list[Tensor]]]
    if isinstance(batch, list) and all(isinstance(g, LengthGroup) for g in batch):
        parts = batch
    else:
        collated, masks_enc, masks_pred = batch
        parts = [(0, collated, masks_enc, masks_pred)]
    groups = []
    for length_index, collated, masks_enc, masks_pred in parts:
        x = collated[0].to(device, non_blocking=True)
        if modality == "image" and x.dim() == 4:
            x = x.unsqueeze(2)  # the encoder's image tokenizer reads img_temporal_dim_size (1) frames
        sets = mask_sets(
            cfg,
            [m.to(device, non_blocking=True) for m in masks_enc],
            [m.to(device, non_blocking=True) for m in masks_pred],
        )
        groups.append(ClipGroup(x, sets, mask_token_indices(cfg, length_index, len(sets)), modality))
    return groups


def loss_type_for(cfg: PretrainConfig) -> str:
    """The prediction loss: the config's, or for ``auto`` the paper's (``l1`` for V-JEPA, ``smooth_l1`` for
    I-JEPA)."""
    if cfg.loss.loss_type != "auto":
        return cfg.loss.loss_type
    return "l1" if cfg.is_video else "smooth_l1"


def pretrain_schedules(opt: OptimizationConfig, ipe: int, *, world_model: bool = False) -> Schedules:
    """The LR, weight-decay and EMA schedules of ``optimization`` for epochs of ``ipe`` iterations; with
    ``world_model`` (app vjepa_droid) the official warmup-stable-decay LR, decaying over ``optimization.anneal``
    epochs (:class:`jepa.worldmodel.model.WSDSchedules`)."""
    if world_model:
        from jepa.worldmodel.model import WSDSchedules

        return WSDSchedules(
            ipe=ipe, epochs=opt.epochs, ipe_scale=opt.ipe_scale, warmup_epochs=opt.warmup, start_lr=opt.start_lr,
            lr=opt.lr, final_lr=opt.final_lr, weight_decay=opt.weight_decay,
            final_weight_decay=opt.final_weight_decay, ema=opt.ema, anneal_epochs=opt.anneal,
        )  # fmt: skip
    return Schedules(
        ipe=ipe,
        epochs=opt.epochs,
        ipe_scale=opt.ipe_scale,
        warmup_epochs=opt.warmup,
        start_lr=opt.start_lr,
        lr=opt.lr,
        final_lr=opt.final_lr,
        weight_decay=opt.weight_decay,
        final_weight_decay=opt.final_weight_decay,
        ema=opt.ema,
        anneal=opt.is_anneal,
    )
