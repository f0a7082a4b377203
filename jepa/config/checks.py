"""What a valid config points at on this machine: data, checkpoints and output folders, checked before set-up.

The schema rules live with their keys (:mod:`jepa.config.pretrain`, :mod:`jepa.config.evals`) and need nothing but
the config; these need the file system, so they are a separate step, which ``app.main`` and ``evals.main`` run
(through :func:`jepa.runtime.launch.resolve_config`) for ``--validate`` and before a run builds anything. A problem is a
:class:`~jepa.config.ConfigError` naming the key, the path and what is wrong; all problems are reported at once.

``--validate`` may check a config written for another machine (a cluster's file under ``/datasets01`` or a
placeholder such as ``/path/to/...``): an absolute path whose top-level folder this machine lacks is then logged as
not checked instead of refused. A run checks strictly.
"""

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from jepa.config.anticipation import AnticipationConfig
from jepa.config.evals import EvalConfig, checkpoint_disagreements
from jepa.config.pretrain import BUILTIN_IMAGES, PretrainConfig, model_spec_from_config_dict
from jepa.config.strict import ConfigError
from jepa.video.annotations import annotation_lines

logger = logging.getLogger(__name__)

CSV_LINES_CHECKED = 5  # lines of each annotation CSV parsed up front (the data set reads them all later)


class _Problems:
    def __init__(self, validate_only: bool) -> None:
        self.validate_only = validate_only
        self.messages: list[str] = []

    def add(self, key: str, path: str | Path, message: str) -> None:
        top = _missing_top_level(Path(path))
        if self.validate_only and top is not None:
            logger.warning(
                "%s: %s not checked: %s does not exist on this machine (a path of another machine, or a "
                "placeholder); a run here refuses it", key, path, top,
            )  # fmt: skip
        else:
            self.messages.append(f"{key}: {message}")


def _missing_top_level(path: Path) -> Path | None:
    """``/a`` for an absolute path ``/a/...`` when ``/a`` does not exist here (another machine's file system)."""
    path = path.expanduser()
    if not path.is_absolute() or len(path.parts) < 2:
        return None
    top = Path(path.parts[0], path.parts[1])
    return None if top.exists() else top


def check_paths(
    cfg: PretrainConfig | EvalConfig | AnticipationConfig, *, resume: bool = False, validate_only: bool = False
) -> None:
    """Refuse, as one :class:`ConfigError`, every path of ``cfg`` that a run here would fail on.

    Pretraining: each annotation CSV of ``data.datasets`` exists and its first lines parse as ``<path> <int
    label>``; an ImageFolder's ``root_path / image_folder / train`` holds class folders; ``meta.read_checkpoint``
    (relative: to ``logging.folder``) exists when ``meta.load_checkpoint`` reads it; ``logging.folder`` can be
    created and written. Evals: the same for ``data.dataset_train`` / ``dataset_val`` (labels below
    ``num_classes``) or the image folder's ``train`` and ``val``, ``pretrain.checkpoint`` exists and the
    architecture its stored config records (our checkpoints keep one) agrees with ``pretrain``, and the output
    folder can be written.

    Args:
        resume: the run was asked to resume from ``latest`` (``--resume``), which then replaces ``read_checkpoint``.
        validate_only: checking a config (``--validate``), not starting a run: paths on a file system this machine
            lacks are logged instead of refused, and folders made to test writing are removed again.
    """
    problems = _Problems(validate_only)
    if isinstance(cfg, PretrainConfig):
        _check_pretrain(cfg, problems, resume)
    elif isinstance(cfg, EvalConfig):
        _check_eval(cfg, problems)
    elif isinstance(cfg, AnticipationConfig):  # its input paths: AnticipationConfig.path_problems
        for key, path, message in cfg.path_problems():
            problems.add(key, path, message)
        _check_writable("folder (the eval's outputs)", cfg.output_folder, problems)
    else:
        raise TypeError(f"check_paths takes a pretrain or an eval config, got {type(cfg).__name__}")
    if len(problems.messages) == 1:
        raise ConfigError(problems.messages[0])
    if problems.messages:
        raise ConfigError(
            f"{len(problems.messages)} problems with the paths it names:\n  " + "\n  ".join(problems.messages)
        )


def _check_pretrain(cfg: PretrainConfig, problems: _Problems, resume: bool) -> None:
    d = cfg.data
    kind = d.dataset_type.lower()
    if cfg.is_world_model:  # app vjepa_droid: trajectory CSVs (toy_world generates its own)
        if kind == "droid":
            for i, csv in enumerate(d.datasets):
                if not Path(csv).is_file():
                    problems.add(f"data.datasets[{i}]", csv, f"trajectory list {csv} does not exist")
        if cfg.meta.pretrain_checkpoint and not Path(cfg.meta.pretrain_checkpoint).is_file():
            ckpt = cfg.meta.pretrain_checkpoint
            problems.add("meta.pretrain_checkpoint", ckpt, f"{ckpt} does not exist (the frozen encoder's checkpoint)")
    elif cfg.video_data and kind != "moving_digits":  # moving_digits generates its clips
        for i, csv in enumerate(d.datasets):
            _check_csv(f"data.datasets[{i}]", Path(csv), problems)
        for i, csv in enumerate(d.val_datasets or []):
            _check_csv(f"data.val_datasets[{i}]", Path(csv), problems)
    elif not cfg.video_data and kind not in BUILTIN_IMAGES:
        _check_image_split(d.root_path, d.image_folder, "train", problems)
    img = cfg.img_data  # app vjepa_2_1's images
    if img is not None and img.dataset_type.lower() not in BUILTIN_IMAGES:
        _check_image_split(img.root_path, img.image_folder, "train", problems, section="img_data")
    if cfg.distillation.teacher_checkpoint and not Path(cfg.distillation.teacher_checkpoint).is_file():
        ckpt = cfg.distillation.teacher_checkpoint
        problems.add("distillation.teacher_checkpoint", ckpt, f"{ckpt} does not exist (the teacher's checkpoint)")
    folder = Path(cfg.logging.folder)
    meta = cfg.meta
    latest = folder / f"{cfg.logging.write_tag}-latest.pth.tar"
    if meta.load_checkpoint and meta.read_checkpoint and not (resume and latest.is_file()):
        path = Path(meta.read_checkpoint)
        path = path if path.is_absolute() else folder / path  # as app.pretrain.Pretrainer.maybe_resume reads it
        if not path.is_file():
            problems.add("meta.read_checkpoint", path, f"{path} does not exist (relative paths are in logging.folder)")
    _check_writable("logging.folder", folder, problems)


def _check_eval(cfg: EvalConfig, problems: _Problems) -> None:
    d = cfg.data
    splits = ("val",) if cfg.val_only else ("train", "val")  # val_only reads no training data
    if cfg.is_video:
        if d.dataset_type.lower() != "moving_digits":
            for key in (f"dataset_{split}" for split in splits):
                paths = getattr(d, key)
                paths = [paths] if isinstance(paths, str) else list(paths)
                for i, csv in enumerate(paths):
                    where = f"data.{key}" if len(paths) == 1 else f"data.{key}[{i}]"
                    _check_csv(where, Path(csv), problems, d.num_classes)
    elif d.image_dataset.lower() not in BUILTIN_IMAGES:
        classes = [_check_image_split(d.root_path, d.image_folder, split, problems) for split in splits]
        if len(classes) == 2 and None not in classes and classes[0] != classes[1]:
            problems.messages.append(
                f"data.root_path / data.image_folder: train has {classes[0]} class folders but val has {classes[1]}"
            )
    path = cfg.pretrain.checkpoint_path
    if path is not None:
        if path.is_file():
            _check_checkpoint_config(cfg, path, problems)
        else:
            problems.add("pretrain.checkpoint", path, f"{path} does not exist (pretrain.folder / pretrain.checkpoint)")
    if cfg.val_only:
        try:
            cfg.find_probe_checkpoint()
        except FileNotFoundError as e:
            problems.add("probe_checkpoint" if cfg.probe_checkpoint else "val_only", cfg.probe_checkpoint_paths()[0],
                         str(e).partition(": ")[2])  # fmt: skip
    _check_writable("folder (the eval's outputs)", cfg.output_folder, problems)


def _check_csv(key: str, path: Path, problems: _Problems, num_classes: int | None = None) -> None:
    """An annotation CSV as :func:`jepa.video.datasets.read_annotation_csv` reads it: ``<path> <int label>`` per
    non-blank line, the label the last white-space separated field."""
    if not path.is_file():
        problems.add(key, path, f"annotation file {path} does not exist")
        return
    lines = 0
    try:
        for lineno, _, label in annotation_lines(path):
            if num_classes is not None and not 0 <= label < num_classes:
                problems.add(key, path, f"{path}:{lineno}: label {label} is outside [0, num_classes={num_classes})")
                return
            lines += 1
            if lines == CSV_LINES_CHECKED:
                break
    except (OSError, UnicodeDecodeError) as e:
        problems.add(key, path, f"annotation file {path} is unreadable: {e}")
        return
    except ValueError as e:  # a line that is not '<path> <label>' (the message names it)
        problems.add(key, path, str(e))
        return
    if not lines:
        problems.add(key, path, f"annotation file {path} lists no videos")


def _check_image_split(root_path: str | None, image_folder: str | None, split: str, problems: _Problems,
                       section: str = "data") -> int | None:  # fmt: skip
    """``root_path / image_folder / split`` holds class folders (:func:`jepa.image.datasets.imagenet_split_root`);
    returns how many, or None after reporting a problem (under the keys of ``section``)."""
    key = f"{section}.root_path / {section}.image_folder"
    root = Path(root_path or "") / (image_folder or "") / split
    if not root.is_dir():
        problems.add(key, root, f"image split folder {root} does not exist")
        return None
    try:
        classes = sum(1 for entry in os.scandir(root) if entry.is_dir())
    except OSError as e:
        problems.add(key, root, f"image split folder {root} is unreadable: {e}")
        return None
    if not classes:
        problems.add(key, root, f"image split folder {root} holds no class folders (<class>/<image> expected)")
        return None
    return classes


def _check_writable(key: str, folder: Path, problems: _Problems) -> None:
    """Create ``folder`` (with its parents) and a file in it, then remove the file; with ``validate_only`` the
    folders made here are removed too (a run keeps them: it writes there next, and other ranks may be checking)."""
    if problems.validate_only and _missing_top_level(folder) is not None:
        problems.add(key, folder, f"{folder} cannot be created")  # logged as not checked
        return
    made = []
    parent = folder
    while not parent.exists() and parent != parent.parent:
        made.append(parent)
        parent = parent.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".jepa-write-check-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        problems.add(key, folder, f"cannot create or write the folder {folder}: {e.strerror or e}")
    finally:
        if problems.validate_only:
            for path in made:  # deepest first
                with contextlib.suppress(OSError):  # something else wrote there meanwhile: leave it
                    path.rmdir()


def _check_checkpoint_config(cfg: EvalConfig, path: Path, problems: _Problems) -> None:
    """``pretrain``'s architecture against the one the checkpoint's stored config records (our checkpoints)."""
    from jepa.checkpoint import CheckpointError, read_checkpoint

    try:
        stored = read_checkpoint(path, mmap=True).get("config")  # the weights are read by the run, not here
    except CheckpointError as e:
        problems.add("pretrain.checkpoint", path, str(e))
        return
    if not isinstance(stored, dict):
        return  # an official checkpoint: no config to compare with
    try:
        spec = model_spec_from_config_dict(stored)
    except (ConfigError, ValueError) as e:
        problems.messages.append(f"pretrain.checkpoint: the config stored in {path} does not describe a model: {e}")
        return
    problems.messages.extend(checkpoint_disagreements(cfg, spec, path))
