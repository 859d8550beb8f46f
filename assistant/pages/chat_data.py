"""The chat page's "your conversations" and "your data" callbacks: search, rename, delete one
conversation, download everything as JSON, delete everything.

Identity comes only from the request; every store call names the user, and the store's owner
checks make another user's conversation read like one that does not exist. Deletion goes
through store/forget.py and the download through store/export.py: the same code as
`main.py forget` and `main.py export`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import gradio as gr

from assistant.pages.chat_sources import md_text
from errors import AssistantError
from store import logs
from store.export import export_user
from store.forget import forget_conversation, forget_user

if TYPE_CHECKING:
    from assistant.turns.service import Services

DOWNLOAD_JS = """
(text) => {
  if (!text) return [];
  const blob = new Blob([text], {type: "application/json"});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "my-assistant-data.json";
  document.body.appendChild(link);
  link.click();
  setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  return [];
}
"""
"""Page script: save the exported JSON as a file (it never touches the server's disk)."""


def user_of(request: gr.Request | None) -> str:
    """The signed-in identity of the request, or a gr.Error asking to reload."""
    user = getattr(request, "username", None) if request is not None else None
    if not user:
        raise gr.Error("Your browser has no session: reload the page (cookies must be enabled).")
    return str(user)


def fail(exc: AssistantError, title: str = "Not done") -> gr.Error:
    """A domain error as the page shows it."""
    return gr.Error(str(exc), title=title)


def conversation_choices(services: Services, user: str, query: str = "") -> list[tuple[str, str]]:
    """(label, id) of the user's conversations matching `query`, most recent first."""
    try:
        rows = logs.search_conversations(services.db, user, query or "")
    except AssistantError as exc:
        raise fail(exc, "Search failed") from None
    return [(f"{c.title or 'Untitled'} ({c.turn_count})", c.id) for c in rows]


def _title_of(services: Services, user: str, conversation_id: str) -> str:
    try:
        return logs.get_conversation(services.db, conversation_id, user).title or "Untitled"
    except AssistantError as exc:
        raise fail(exc) from None


class MyData:
    """Callbacks of the conversations list and the data section."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def search(self, query: str, state: dict[str, Any] | None, request: gr.Request) -> Any:
        user = user_of(request)
        current = (state or {}).get("id")
        choices = conversation_choices(self.services, user, query)
        keep = current if any(cid == current for _, cid in choices) else None
        return gr.update(choices=choices, value=keep)

    def rename(
        self, title: str, query: str, state: dict[str, Any] | None, request: gr.Request
    ) -> Any:
        user = user_of(request)
        conversation_id = (state or {}).get("id")
        if not conversation_id:
            raise gr.Error("Open a conversation first, then rename it.")
        title = " ".join((title or "").split())
        if not title:
            raise gr.Error("Type a new name for the conversation first.")
        try:
            logs.rename_conversation(self.services.db, conversation_id, user, title)
        except AssistantError as exc:
            raise fail(exc, "Not renamed") from None
        gr.Info(f"Renamed to “{title}”.")
        return gr.update(
            choices=conversation_choices(self.services, user, query), value=conversation_id
        ), ""

    def ask_delete(self, state: dict[str, Any] | None, request: gr.Request) -> Any:
        user = user_of(request)
        conversation_id = (state or {}).get("id")
        if not conversation_id:
            raise gr.Error("Open the conversation you want to delete first.")
        title = _title_of(self.services, user, conversation_id)
        return (
            gr.update(visible=True),
            f"Delete “{md_text(title)}” with its answers and votes? This cannot be undone.",
        )

    def delete(self, query: str, state: dict[str, Any] | None, request: gr.Request) -> Any:
        user = user_of(request)
        conversation_id = (state or {}).get("id")
        if not conversation_id:
            raise gr.Error("Open the conversation you want to delete first.")
        try:
            report = forget_conversation(
                self.services.db, user, conversation_id, self.services.cfg.data_dir, actor="user"
            )
        except AssistantError as exc:
            raise fail(exc, "Not deleted") from None
        gr.Info(f"Deleted the conversation: {report.turns} answer(s) and {report.votes} vote(s).")
        return (
            gr.update(choices=conversation_choices(self.services, user, query), value=None),
            gr.update(visible=False),
        )

    def export(self, request: gr.Request) -> str:
        user = user_of(request)
        try:
            data = export_user(self.services.db, user)
        except AssistantError as exc:
            raise fail(exc, "Not exported") from None
        counts = data["counts"]
        gr.Info(
            f"Your data: {counts['conversations']} conversation(s), {counts['turns']} "
            f"answer(s), {counts['votes']} vote(s), {counts['preferences']} comparison(s)."
        )
        return json.dumps(data, ensure_ascii=False, indent=2)

    def forget(self, request: gr.Request) -> Any:
        user = user_of(request)
        try:
            report = forget_user(self.services.db, user, self.services.cfg.data_dir, actor="user")
        except AssistantError as exc:
            raise fail(exc, "Not deleted") from None
        message = (
            f"Deleted all your data: {report.conversations} conversation(s), "
            f"{report.turns} answer(s), {report.votes} vote(s)."
        )
        if report.trained_datasets_kept:
            message += (
                " Some of it was already used to train the assistant; the operator "
                "can retrain without it."
            )
        gr.Info(message)
        return gr.update(choices=[], value=None), gr.update(visible=False)
