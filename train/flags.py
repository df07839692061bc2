"""Command-line flags derived one to one from ExperimentConfig's fields, and the commands' wrapper.

:func:`run_command` runs a command's main: TensorFlow's start-up log is silenced and an
error ends the command with one line (``error: <file/field>: <reason>``) and exit code 1;
with ``--verbose`` (alone, or 2 and up) both come back, with the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
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


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` for commands that have no verbosity levels of their own."""
    parser.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's start-up log and the traceback of an error"
    )


def wants_diagnostics(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for TensorFlow's log and tracebacks: ``--verbose`` alone, or 2 and up."""
    for position, argument in enumerate(argv):
        if argument.startswith("--verbose="):
            return _level(argument.partition("=")[2]) >= 2
        if argument == "--verbose":
            following = argv[position + 1] if position + 1 < len(argv) else ""
            return _level(following) >= 2 if following.lstrip("-").isdigit() else True
    return False


def _level(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 2


def run_command(main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Runs ``main(argv)`` as a command: quiet start-up, one line per error, exit code 1.

    Unless :func:`wants_diagnostics`: ``TF_CPP_MIN_LOG_LEVEL`` is set to 3 (a value the
    user set is kept) and TensorFlow is imported with the C++ start-up lines (oneDNN, CUDA
    probing) sent to ``/dev/null``, before ``main`` imports it; an exception prints one
    line on stderr instead of its traceback.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if wants_diagnostics(arguments):
        return main(arguments)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _stderr_to_devnull():
            import tensorflow  # noqa: F401 - imported here, so that its start-up lines are dropped
        return main(arguments)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every error becomes one line (--verbose for the traceback)
        print(f"error: {error_line(error)}", file=sys.stderr)
        return 1


def error_line(error: BaseException) -> str:
    """One line for an exception: its message's first line (the type when it has none)."""
    message = getattr(error, "message", None) or str(error)
    if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
        message = f"{error.filename}: {message}"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines or isinstance(error, KeyError):  # a KeyError's message is only the key
        return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return lines[0]


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """File descriptor 2 points at ``/dev/null`` inside (C++ libraries write there, not to ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
