"""The chat page's comparison after a retry: the earlier answer shown beside the new one, and
the user's mark of which was better, stored as a preference pair (store/preferences.py).

The page's state holds `compare` = {original, retry (turn ids), answer (the earlier text),
preferred}; both ids are re-checked against the user by the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from assistant.pages.chat_data import fail, user_of
from assistant.pages.chat_sources import md_text
from errors import AssistantError
from store import preferences

if TYPE_CHECKING:
    from assistant.turns.service import Services

PREFERRED_LABELS = {"original": "the earlier answer", "retry": "the new answer"}


class Compare:
    """Callbacks of the comparison panel."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def show(self, state: dict[str, Any] | None) -> Any:
        """The comparison panel after a retry (hidden otherwise)."""
        compare = (state or {}).get("compare")
        if not compare or not compare.get("retry"):
            return gr.update(visible=False), ""
        earlier = md_text(compare["answer"]) or "_(the earlier answer was empty)_"
        text = (
            "**You asked again. Which answer was better?** Your choice helps the "
            f"assistant learn.\n\n> Earlier answer: {earlier}"
        )
        if compare.get("preferred"):
            text += (
                f"\n\n✅ You marked {PREFERRED_LABELS[compare['preferred']]} as better "
                "(you can change this)."
            )
        return gr.update(visible=True), text

    def prefer(self, choice: str, state: dict[str, Any] | None, request: gr.Request) -> Any:
        user = user_of(request)
        compare = (state or {}).get("compare")
        if not compare or not compare.get("retry"):
            raise gr.Error("Retry an answer first, then say which one was better.")
        try:
            preferences.set_preference(
                self.services.db,
                user_id=user,
                original_turn_id=compare["original"],
                retry_turn_id=compare["retry"],
                preferred=choice,
            )
        except AssistantError as exc:
            raise fail(exc, "Not saved") from None
        compare["preferred"] = choice
        gr.Info(f"Thanks: you preferred {PREFERRED_LABELS[choice]}.")
        return (state, *self.show(state))

    def prefer_original(self, state: dict[str, Any] | None, request: gr.Request) -> Any:
        return self.prefer("original", state, request)

    def prefer_retry(self, state: dict[str, Any] | None, request: gr.Request) -> Any:
        return self.prefer("retry", state, request)
