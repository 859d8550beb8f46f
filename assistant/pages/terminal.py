"""`main.py chat`: talk to the real model in the terminal, token by token."""

from __future__ import annotations

import sys
from pathlib import Path

from assistant.generation.loader import build_generator, sampling_params
from assistant.generation.worker import Generator
from config import Config
from core.base_model import load_base
from core.prompts import build_messages, encode_prompt
from errors import AssistantError


def _answer(
    gen: Generator, cfg: Config, question: str, history: list[tuple[str, str]], adapter: str | None
) -> str:
    prompt = encode_prompt(
        gen.tokenizer,
        build_messages(
            question,
            history[-cfg.server.max_history_turns :] if cfg.server.max_history_turns else [],
        ),
        context_window=cfg.model.context_window,
        max_new_tokens=cfg.model.max_new_tokens,
    )
    stream = gen.stream(prompt.input_ids, adapter, sampling_params(cfg))
    pieces = []
    for piece in stream:
        pieces.append(piece)
        print(piece, end="", flush=True)
    print()
    return "".join(pieces)


def terminal_chat(cfg: Config, adapter_dir: str | None = None, message: str | None = None) -> int:
    """Chat with the base model (or one adapter folder) without the server; ask one question
    with `message`, or read questions from stdin until EOF or 'exit'."""
    loaded = load_base(cfg)
    gen = build_generator(cfg, loaded)  # adapters load only from the adapter root, as served
    adapter = None
    try:
        if adapter_dir:
            gen.load_adapter("chat", Path(adapter_dir))
            adapter = "chat"
        if message is not None:
            _answer(gen, cfg, message, [], adapter)
            return 0
        print(
            f"Chatting with {loaded.source} ({loaded.quantization}, {loaded.device}"
            f"{', adapter ' + adapter_dir if adapter_dir else ''}). Type 'exit' to leave."
        )
        history: list[tuple[str, str]] = []
        while True:
            try:
                question = input("you> ").strip()
            except EOFError:
                return 0
            if question in ("exit", "quit"):
                return 0
            if not question:
                continue
            print("assistant> ", end="", flush=True)
            try:
                history.append((question, _answer(gen, cfg, question, history, adapter)))
            except AssistantError as exc:  # one bad question does not end the session
                print(f"error: {exc}", file=sys.stderr)
    finally:
        gen.close()
