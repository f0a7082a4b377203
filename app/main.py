"""Pretraining entry point.

    python -m app.main --fname configs/pretrain/tiny_ijepa_cpu.yaml [--devices cpu | cuda:0] [--validate]
                       [--set optimization.lr=5e-4 ...] [--max-steps N]

``--validate`` loads and checks the config, prints the resolved config and exits (0: valid, 1: not). Official
I-JEPA and V-JEPA YAML files are accepted unchanged.
"""

import argparse
import logging
import sys

import torch

from jepa.config import ConfigError, dump_config, load_pretrain_config
from jepa.logging_utils import setup_logging

logger = logging.getLogger("app.main")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.main", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fname", required=True, help="pretraining YAML config")
    parser.add_argument("--devices", nargs="+", default=None, help="cpu | cuda:0 [cuda:1 ...] (default: what is there)")
    parser.add_argument("--validate", action="store_true", help="check the config, print it resolved, exit")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE", help="override keys")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many global steps")
    return parser.parse_args(argv)


def pick_devices(requested: list[str] | None) -> list[torch.device]:
    """The requested devices, or all GPUs, or the CPU."""
    if requested:
        devices = [torch.device(d) for d in requested]
        for d in devices:
            if d.type == "cuda" and (not torch.cuda.is_available() or (d.index or 0) >= torch.cuda.device_count()):
                raise ValueError(f"device {d} requested but {torch.cuda.device_count()} GPU(s) are visible")
        return devices
    if torch.cuda.is_available():
        return [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # With --validate stdout carries only the resolved YAML, so it can be redirected to a file.
    setup_logging(stream=sys.stderr if args.validate else sys.stdout)
    try:
        cfg = load_pretrain_config(args.fname, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 1
    if args.validate:
        print(dump_config(cfg), end="")
        print(f"# {args.fname}: valid", file=sys.stderr)
        return 0
    devices = pick_devices(args.devices)
    if len(devices) > 1:
        raise SystemExit("several devices: multi-process training lands with the scale-out issue; pass one device")
    from app.pretrain import Pretrainer

    summary = Pretrainer(cfg, devices[0]).train(max_steps=args.max_steps)
    print(
        f"done: {summary['steps']} steps ({summary['epochs']:.2f} epochs) in {summary['seconds']:.1f} s, "
        f"final loss {summary['final_loss']:.4f}, {summary['steps_per_s']:.2f} steps/s, "
        f"checkpoint {summary['checkpoint']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
