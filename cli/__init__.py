"""CLI wiring: each module registers the subcommands of one area; main.py parses and runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from config import Config

Command = Callable[[Config, argparse.Namespace], int]
COMMANDS: dict[str, tuple[Command, Callable[[argparse.ArgumentParser], None], str]] = {}


def _no_args(parser: argparse.ArgumentParser) -> None:
    """A subcommand without options of its own."""


def command(
    name: str, help: str, args: Callable[[argparse.ArgumentParser], None] = _no_args
) -> Callable[[Command], Command]:
    """Register a subcommand: its function, its argument definitions and its help line."""

    def register(fn: Command) -> Command:
        COMMANDS[name] = (fn, args, help)
        return fn

    return register


def load_all() -> None:
    """Import every CLI module so their subcommands register (order = order in --help)."""
    import importlib
    import importlib.util

    for module in ("serving", "data", "training", "loop"):
        if importlib.util.find_spec(f"cli.{module}") is not None:
            importlib.import_module(f"cli.{module}")
