"""Subcommands that run the assistant: serve, chat, status."""

from __future__ import annotations

import argparse

from cli import command
from config import Config


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")


@command("serve", "serve the chat, the operator console and the API", _serve_args)
def cmd_serve(cfg: Config, args: argparse.Namespace) -> int:
    from assistant.http.app import serve
    from training.loop.operator import attach_learning_loop

    serve(cfg, host=args.host, port=args.port, extend=attach_learning_loop)
    return 0


def _chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--adapter",
        help="adapter folder under data/adapters to chat with (default: the bare base model)",
    )
    p.add_argument("--message", "-m", help="ask one question, print the answer and exit")


@command(
    "chat", "chat with the model in the terminal (a quick check of the real model)", _chat_args
)
def cmd_chat(cfg: Config, args: argparse.Namespace) -> int:
    from assistant.pages.terminal import terminal_chat

    return terminal_chat(cfg, adapter_dir=args.adapter, message=args.message)


@command("status", "show the model, adapters, documents and the learning loop")
def cmd_status(cfg: Config, args: argparse.Namespace) -> int:
    from assistant.pages.status import print_status

    return print_status(cfg)
