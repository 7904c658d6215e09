"""The command line every benchmark shares: whole-number options, ``--quick`` with smaller
defaults, and the rule that one round on a shared machine is noise."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

__all__ = ["add_quick", "positive", "with_defaults"]


def positive(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_quick(parser: argparse.ArgumentParser, quick: Mapping[str, int], how_long: str) -> None:
    """``--quick``: the ``quick`` defaults instead of the usual ones, for a check that takes
    ``how_long`` ("seconds", "about a minute")."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smaller defaults for a check in {how_long}: "
        + ", ".join(f"--{k} {v}" for k, v in quick.items()),
    )


def with_defaults(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    *,
    defaults: Mapping[str, int],
    quick: Mapping[str, int],
    min_rounds: int,
) -> argparse.Namespace:
    """``args`` with every option left out set from ``quick`` (with ``--quick``) or
    ``defaults``; fewer than ``min_rounds`` rounds is refused, as one round on a shared box is
    noise."""
    for name, value in (quick if args.quick else defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.rounds < min_rounds:
        parser.error(f"--rounds must be at least {min_rounds}: one round on a shared box is noise")
    return args
