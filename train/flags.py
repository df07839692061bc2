"""Command-line flags derived one to one from ExperimentConfig's fields."""

from __future__ import annotations

import argparse
import typing
from typing import Any

from vse_tf.config import ExperimentConfig, flat_fields, with_overrides


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` plus one ``--section.field`` flag per config field."""
    parser.add_argument("--config", help="JSON config to start from (flags override it)")
    defaults = ExperimentConfig()
    for dotted, hint in flat_fields(ExperimentConfig).items():
        default = _lookup(defaults, dotted)
        kwargs: dict[str, Any] = {"dest": dotted, "default": None, "help": f"(default: {default})"}
        if hint is bool:
            kwargs.update(type=_parse_bool, metavar="BOOL")
        elif typing.get_origin(hint) is tuple:
            kwargs.update(type=int, nargs="+")
        else:
            kwargs["type"] = hint
        parser.add_argument(f"--{dotted}", **kwargs)


def config_from_flags(args: argparse.Namespace) -> ExperimentConfig:
    """The config file (or defaults) with every given flag applied."""
    config = ExperimentConfig.load(args.config) if args.config else ExperimentConfig()
    overrides = {
        dotted: getattr(args, dotted) for dotted in flat_fields(ExperimentConfig) if getattr(args, dotted) is not None
    }
    return with_overrides(config, overrides)


def _lookup(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config
