"""The ONE place prompts are formatted, for serving and for training alike.

Serving calls `build_messages` then `encode_prompt`; training calls `encode_example` on the
messages that were logged with the turn. Both go through the tokenizer's own chat template, so
the tokens a model is trained on are the tokens it is served (pinned by a golden test).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from errors import InputError

PROMPT_FORMAT_VERSION = 1

SYSTEM_PROMPT = "You are a helpful assistant. Answer the question clearly and briefly."
SYSTEM_WITH_PASSAGES = (
    "You are a helpful assistant. Answer the question clearly and briefly, using the numbered "
    "passages below when they help, and cite them like [1].\n\nPassages:\n{passages}"
)


class PassageLike(Protocol):
    """A retrieved passage as the prompt cites it (core.domain.ServedPassage)."""

    @property
    def source(self) -> str: ...
    @property
    def text(self) -> str: ...


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer this module uses."""

    eos_token: str | None

    def apply_chat_template(
        self, conversation: list[dict[str, str]], **kwargs: object
    ) -> object: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


Message = dict[str, str]


@dataclass(frozen=True)
class EncodedPrompt:
    """Prompt token ids plus the messages they came from (after any history was dropped)."""

    input_ids: list[int]
    messages: list[Message]
    dropped_turns: int


def format_passages(passages: Sequence[PassageLike]) -> str:
    """Number the passages the way answers cite them: [1], [2], ..."""
    return "\n".join(
        f"[{i}] ({p.source}) {' '.join(p.text.split())}" for i, p in enumerate(passages, start=1)
    )


def build_messages(
    question: str, history: Sequence[tuple[str, str]] = (), passages: Sequence[PassageLike] = ()
) -> list[Message]:
    """Chat messages for one turn: system (with numbered passages), earlier (question, answer)
    pairs oldest first, then the new question."""
    system = (
        SYSTEM_WITH_PASSAGES.format(passages=format_passages(passages))
        if passages
        else SYSTEM_PROMPT
    )
    messages: list[Message] = [{"role": "system", "content": system}]
    for user_text, answer in history:
        messages += [
            {"role": "user", "content": user_text},
            {"role": "assistant", "content": answer},
        ]
    messages.append({"role": "user", "content": question})
    return messages


def _ids(tokenizer: ChatTokenizer, messages: list[Message], generation_prompt: bool) -> list[int]:
    out: Any = tokenizer.apply_chat_template(
        messages, add_generation_prompt=generation_prompt, tokenize=True
    )
    ids: Any = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    return [int(i) for i in ids]


def encode_prompt(
    tokenizer: ChatTokenizer, messages: list[Message], *, context_window: int, max_new_tokens: int
) -> EncodedPrompt:
    """Token ids of the prompt, ending in the assistant header.

    Truncation policy: while the prompt plus `max_new_tokens` exceeds the context window, the
    oldest (question, answer) pair of history is dropped from the prompt (never from the log).
    If the system message and the new question alone do not fit, the request is refused with
    an InputError saying by how much it is too long.
    """
    if not messages or messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise InputError("the message is empty: type a question before sending")
    budget = context_window - max_new_tokens
    dropped = 0
    current = list(messages)
    while True:
        ids = _ids(tokenizer, current, generation_prompt=True)
        if len(ids) <= budget:
            return EncodedPrompt(ids, current, dropped)
        if len(current) > 3 and current[1]["role"] == "user":
            current = [current[0]] + current[3:]
            dropped += 1
            continue
        raise InputError(
            f"the message is too long for the model: the prompt needs {len(ids)} tokens but "
            f"only {budget} fit (context window {context_window} minus {max_new_tokens} for "
            "the answer); shorten the message"
        )


@dataclass(frozen=True)
class EncodedExample:
    """A training example: ids of prompt + target, and labels that mask the prompt with -100."""

    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int


def encode_example(
    tokenizer: ChatTokenizer, messages: list[Message], target: str, *, max_tokens: int
) -> EncodedExample:
    """Encode served `messages` plus the `target` answer for training, loss on the answer only.

    The answer tokens are exactly what the chat template appends after the generation prompt
    (the answer text and the end-of-turn token), so training ends answers where serving stops.
    Over-long examples lose the oldest history first, then their prompt head; the target is kept.
    """
    prompt = _ids(tokenizer, messages, generation_prompt=True)
    full = _ids(
        tokenizer, messages + [{"role": "assistant", "content": target}], generation_prompt=False
    )
    if full[: len(prompt)] != prompt:
        raise InputError(
            "the chat template does not extend the prompt with the answer; "
            "this tokenizer cannot be used for training"
        )
    answer = full[len(prompt) :]
    # The template may add a newline after the end token; it is not part of the answer.
    eos_ids = tokenizer.encode(tokenizer.eos_token or "", add_special_tokens=False)
    if eos_ids and eos_ids[-1] in answer:
        answer = answer[: answer.index(eos_ids[-1]) + 1]
    answer = answer[: max_tokens - 1]
    try:
        prompt = encode_prompt(
            tokenizer, messages, context_window=max_tokens, max_new_tokens=len(answer)
        ).input_ids
    except InputError:
        prompt = prompt[-(max_tokens - len(answer)) :]
    return EncodedExample(prompt + answer, [-100] * len(prompt) + answer, len(prompt))


END_OF_TURN = "<|im_end|>"
"""The chat template's end-of-turn token (ChatML, as SmolLM2 uses)."""


def stop_token_ids(tokenizer: Any, model: Any = None) -> set[int]:
    """The tokens that end an answer: EOS, the end-of-turn token and the model's own
    generation-config EOS ids. Serving stops on them; validation samples with them."""
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TURN)}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return {t for t in ids if isinstance(t, int) and t >= 0}
