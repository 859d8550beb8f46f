"""Command line: each subcommand is one stage of the product, wired to a plain function.

Errors from the product (errors.AssistantError) become one line on stderr and exit code 2;
nothing else is caught here, so a real bug still shows its traceback to whoever debugs it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from cli import COMMANDS, load_all  # noqa: E402
from config import load_config  # noqa: E402
from errors import AssistantError  # noqa: E402

# ---- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    load_all()
    parser = argparse.ArgumentParser(prog="main.py", description=__doc__)
    parser.add_argument(
        "--config",
        default=os.environ.get("ASSISTANT_CONFIG", "config.toml"),
        help="config file (default: config.toml, or $ASSISTANT_CONFIG)",
    )
    parser.add_argument("--data-dir", help="override server.data_dir")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, add_args, help) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help, description=help))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        overrides = {"server": {"data_dir": args.data_dir}} if args.data_dir else None
        cfg = load_config(Path(args.config), overrides=overrides)
        return COMMANDS[args.command][0](cfg, args)
    except AssistantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
