"""The chat page (Gradio): thin callbacks over ChatService and the store's owner-checked reads.

Who the user is comes only from the request (`request.username`, resolved from the signed cookie
by the server's identity middleware). The turn id of each answer stays in server-side session
state (message index -> turn id), so a vote always lands on the answer it was given on, and
`Services.rate` checks the owner and the rate limit like the API does.

Gradio makes every event handler reachable through its queue; the page's handlers are
`api_visibility="private"` (hidden from the API page and gradio_client) and re-check identity
themselves. Two endpoints are public on purpose, for gradio_client: `/chat` and `/rate`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from assistant.pages import chat_sources
from assistant.pages.chat_compare import Compare
from assistant.pages.chat_data import DOWNLOAD_JS, MyData, conversation_choices, user_of
from assistant.pages.chat_sources import (  # noqa: F401 (the page's display helpers)
    NO_SOURCES,
    answer_footer,
    md_text,
    shown_answer,
    shown_question,
    turn_notes,
)
from assistant.turns.chat import TurnHandle
from errors import AssistantError, BusyError
from store import logs

if TYPE_CHECKING:
    from assistant.turns.service import Services

log = logging.getLogger(__name__)

CSS = (
    """
#notes { font-size: .85em; opacity: .8 }
footer { display: none !important }
"""
    + chat_sources.CSS
)
REASON_CHOICES = [
    ("Wrong", "wrong"),
    ("Not helpful", "not_helpful"),
    ("Too long", "too_long"),
    ("Didn't follow instructions", "ignored_instructions"),
    ("Unsafe", "unsafe"),
    ("Other", "other"),
]
"""The 👎 reason chips (label, stored value); the values are core.domain.FeedbackReason."""


_user = user_of


def _client(request: gr.Request | None) -> str | None:
    """The caller's address (for the per-network vote budgets), None when unknown."""
    client = getattr(request, "client", None) if request is not None else None
    host = getattr(client, "host", None)
    return host if isinstance(host, str) else None


def _error(exc: AssistantError) -> gr.Error:
    title = "Please wait" if isinstance(exc, BusyError) else "Not sent"
    return gr.Error(str(exc), title=title)


def _shown(state: dict[str, Any]) -> Any:
    return gr.update(value=state["messages"], feedback_value=state["feedback"])


def new_state() -> dict[str, Any]:
    """A fresh conversation view: no id yet, no messages, no turn ids, nothing to compare."""
    return {"id": None, "messages": [], "turns": {}, "feedback": [], "compare": None}


class ChatPage:
    """The callbacks of the chat page."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._active: dict[str, TurnHandle] = {}
        self._lock = threading.Lock()

    # ---- conversations ------------------------------------------------------------------

    def conversation_choices(self, user: str) -> list[tuple[str, str]]:
        return conversation_choices(self.services, user)

    def on_load(self, request: gr.Request) -> Any:
        user = _user(request)
        return gr.update(choices=self.conversation_choices(user), value=None)

    def open_conversation(self, conversation_id: str | None, request: gr.Request) -> Any:
        user = _user(request)
        state = new_state()
        if not conversation_id:
            return state, gr.update(value=[], feedback_value=[])
        try:
            turns = logs.conversation_turns(self.services.db, conversation_id, user)
        except AssistantError as exc:
            raise _error(exc) from None
        state["id"] = conversation_id
        for t in turns:
            notes = turn_notes(
                t.retrieval_note, 0, t.finish_reason == "cancelled", t.error, not t.answer.strip()
            )
            state["messages"].append({"role": "user", "content": shown_question(t.question)})
            state["messages"].append(
                {"role": "assistant", "content": shown_answer(t.answer, t.passages, notes, t.id)}
            )
            index = len(state["messages"]) - 1
            state["turns"][index] = {"turn_id": t.id, "question": t.question, "answer": t.answer}
            mine = next((v.rating for v in t.votes if v.user_id == user), None)
            state["feedback"].append({"up": "Like", "down": "Dislike"}.get(mine or ""))
        return state, gr.update(value=state["messages"], feedback_value=state["feedback"])

    def new_conversation(self) -> Any:
        return new_state(), gr.update(value=[], feedback_value=[]), gr.update(value=None)

    # ---- sending -----------------------------------------------------------------------

    def send(
        self, message: str, state: dict[str, Any] | None, request: gr.Request
    ) -> Iterator[Any]:
        yield from self._answer(message, state or new_state(), request)

    def retry(self, state: dict[str, Any] | None, request: gr.Request) -> Iterator[Any]:
        state = state or new_state()
        if not state["turns"]:
            raise gr.Error("There is no answer to retry yet.")
        last = max(state["turns"])
        replaced = state["turns"].pop(last)
        state["messages"] = state["messages"][: last - 1]
        state["feedback"] = state["feedback"][:-1]
        # The new answer replaces the old one on the page and in the prompt's history; the old
        # one stays in the log (with any vote it got) and is offered for comparison.
        state["compare"] = {
            "original": replaced["turn_id"],
            "retry": None,
            "answer": replaced.get("answer", ""),
            "preferred": None,
        }
        yield from self._answer(replaced["question"], state, request, replaced["turn_id"])

    def _answer(
        self, message: str, state: dict[str, Any], request: gr.Request, retry_of: str | None = None
    ) -> Iterator[Any]:
        user = _user(request)
        try:
            handle = self.services.chat.ask(user, message, state["id"], retry_of=retry_of)
        except AssistantError as exc:
            self.services.metrics.error("ui", type(exc).__name__)
            raise _error(exc) from None
        session = request.session_hash or user
        with self._lock:
            self._active[session] = handle
        new = state["id"] is None
        state["id"] = handle.conversation_id
        state["messages"] = state["messages"] + [
            {"role": "user", "content": shown_question(message.strip())},
            {"role": "assistant", "content": ""},
        ]
        state["feedback"] = state["feedback"] + [None]
        if retry_of is None:
            state["compare"] = None
        index = len(state["messages"]) - 1
        text = ""
        no_change = gr.update()
        try:
            yield _shown(state), state, "", no_change
            for piece in handle:
                text += piece
                state["messages"][index] = {"role": "assistant", "content": text}
                yield _shown(state), state, no_change, no_change
        finally:
            with self._lock:
                self._active.pop(session, None)
            if handle.result is None:  # the page went away mid-answer: still log it
                handle.cancel()
        turn_id = self.services.finish_turn(handle, "ui")
        result = handle.result
        notes = turn_notes(
            handle.retrieval_note,
            handle.dropped_turns,
            result is not None and result.finish_reason == "cancelled",
            result.error if result else None,
            not (result.text if result else text).strip(),
        )
        answer = result.text if result else text
        state["messages"][index] = {
            "role": "assistant",
            "content": shown_answer(answer, handle.passages, notes, turn_id),
        }
        state["turns"][index] = {"turn_id": turn_id, "question": message.strip(), "answer": answer}
        if retry_of is not None and state.get("compare"):
            state["compare"]["retry"] = turn_id
        past = (
            gr.update(choices=self.conversation_choices(user), value=state["id"])
            if new
            else no_change
        )
        yield _shown(state), state, no_change, past

    def stop(self, request: gr.Request) -> None:
        _user(request)
        with self._lock:
            handle = self._active.get(request.session_hash or "")
        if handle is not None:
            handle.cancel()

    # ---- feedback ----------------------------------------------------------------------

    def on_like(self, state: dict[str, Any] | None, data: gr.LikeData, request: gr.Request) -> Any:
        user = _user(request)
        index = data.index if isinstance(data.index, int) else data.index[0]
        entry = (state or new_state())["turns"].get(index)
        if entry is None:
            raise gr.Error("This answer is not saved yet: rate it once it is complete.")
        rating = (
            {True: "up", False: "down"}.get(data.liked) if isinstance(data.liked, bool) else None
        )
        try:
            self.services.rate(user, entry["turn_id"], rating, client=_client(request))
        except AssistantError as exc:
            raise _error(exc) from None
        if rating is None:
            return (
                None,
                gr.update(visible=False),
                gr.update(),
                "",
                "",
                gr.update(value=[], visible=False),
            )
        label = "👍 Thanks!" if rating == "up" else "👎 Thanks, noted. What was wrong with it?"
        return (
            {"turn_id": entry["turn_id"], "rating": rating},
            gr.update(visible=True),
            gr.update(value=f"**{label}** Add a comment or a better answer (optional):"),
            "",
            "",
            gr.update(value=[], visible=rating == "down"),
        )

    def send_feedback(
        self,
        pending: dict[str, Any] | None,
        comment: str,
        correction: str,
        reasons: list[str] | None,
        request: gr.Request,
    ) -> Any:
        user = _user(request)
        if not pending:
            raise gr.Error("Rate an answer with 👍 or 👎 first.")
        chips = (reasons or []) if pending["rating"] == "down" else []
        try:
            self.services.rate(
                user,
                pending["turn_id"],
                pending["rating"],
                comment.strip(),
                correction.strip(),
                chips,
                client=_client(request),
            )
        except AssistantError as exc:
            raise _error(exc) from None
        gr.Info("Thank you: your feedback was saved.")
        return None, gr.update(visible=False), "", "", gr.update(value=[])

    # ---- public endpoints for gradio_client -------------------------------------------------

    def api_chat(
        self,
        message: str,
        conversation_id: str = "",
        request: gr.Request = None,  # type: ignore[assignment]
    ) -> Iterator[dict[str, Any]]:
        """Ask a question (continue `conversation_id`, or start a new conversation). Streams
        {answer, conversation_id, turn_id (set when complete), sources, notes}."""
        user = _user(request)
        try:
            handle = self.services.chat.ask(user, message, conversation_id or None)
        except AssistantError as exc:
            self.services.metrics.error("ui-api", type(exc).__name__)
            raise _error(exc) from None
        sources = [
            {"n": i, "source": p.source, "text": p.text} for i, p in enumerate(handle.passages, 1)
        ]
        out: dict[str, Any] = {
            "answer": "",
            "conversation_id": handle.conversation_id,
            "turn_id": None,
            "sources": sources,
            "notes": turn_notes(handle.retrieval_note, handle.dropped_turns),
        }
        try:
            for piece in handle:
                out["answer"] += piece
                yield dict(out)
        finally:
            if handle.result is None:
                handle.cancel()
        out["turn_id"] = self.services.finish_turn(handle, "ui-api")
        yield out

    def api_rate(
        self,
        turn_id: str,
        rating: str,
        comment: str = "",
        correction: str = "",
        reasons: list[str] | None = None,
        request: gr.Request = None,  # type: ignore[assignment]
    ) -> dict[str, Any]:
        """Rate an answer you were given: rating 'up', 'down' or '' (withdraw); `reasons`
        (with 'down'): any of wrong, not_helpful, too_long, ignored_instructions, unsafe,
        other."""
        user = _user(request)
        try:
            vote = self.services.rate(
                user,
                turn_id,
                rating or None,
                comment or None,
                correction or None,
                reasons or None,
                client=_client(request),
            )
        except AssistantError as exc:
            raise _error(exc) from None
        return {
            "turn_id": turn_id,
            "rating": vote.rating if vote else None,
            "reasons": list(vote.reasons) if vote else [],
        }


def build_chat(services: Services) -> gr.Blocks:
    """The chat page as a Gradio Blocks app (mounted at / by the server)."""
    page = ChatPage(services)
    mine = MyData(services)
    compared = Compare(services)
    private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
    with gr.Blocks(title="Assistant", analytics_enabled=False) as demo:
        state = gr.State(new_state())
        pending = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                new_btn = gr.Button("+ New conversation", elem_id="new-conversation")
                search = gr.Textbox(
                    show_label=False,
                    placeholder="Search your conversations",
                    elem_id="conversation-search",
                    max_length=200,
                )
                past = gr.Radio(label="Your conversations", choices=[], elem_id="conversations")
                with gr.Accordion("This conversation", open=False, elem_id="manage"):
                    title = gr.Textbox(label="New name", elem_id="rename-title", max_length=500)
                    rename_btn = gr.Button("Rename", size="sm", elem_id="rename")
                    delete_btn = gr.Button(
                        "Delete conversation",
                        size="sm",
                        variant="stop",
                        elem_id="delete-conversation",
                    )
                    with gr.Column(visible=False, elem_id="confirm-delete") as confirm_delete:
                        confirm_text = gr.Markdown()
                        with gr.Row():
                            delete_yes = gr.Button(
                                "Yes, delete", size="sm", variant="stop", elem_id="delete-yes"
                            )
                            delete_no = gr.Button("Cancel", size="sm", elem_id="delete-no")
                with gr.Accordion("Your data", open=False, elem_id="your-data"):
                    download_btn = gr.Button(
                        "Download all my data (JSON)", size="sm", elem_id="download-data"
                    )
                    exported = gr.Textbox(visible=False)
                    forget_btn = gr.Button(
                        "Delete all my data", size="sm", variant="stop", elem_id="forget-me"
                    )
                    with gr.Column(visible=False, elem_id="confirm-forget") as confirm_forget:
                        gr.Markdown(
                            "Delete **all** your conversations, answers, votes and "
                            "comparisons? This cannot be undone."
                        )
                        with gr.Row():
                            forget_yes = gr.Button(
                                "Yes, delete everything",
                                size="sm",
                                variant="stop",
                                elem_id="forget-yes",
                            )
                            forget_no = gr.Button("Cancel", size="sm", elem_id="forget-no")
            with gr.Column(scale=4):
                chatbot = gr.Chatbot(
                    label="Assistant",
                    elem_id="chat",
                    height=520,
                    sanitize_html=True,
                    allow_tags=False,
                    buttons=["copy"],
                    feedback_options=("Like", "Dislike"),
                    placeholder="Ask a question about your documents.",
                )
                with gr.Row():
                    box = gr.Textbox(
                        show_label=False,
                        placeholder="Type a question and press Enter",
                        scale=6,
                        elem_id="message",
                        autofocus=True,
                    )
                    send_btn = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                    stop_btn = gr.Button("Stop", scale=1, elem_id="stop")
                with gr.Column(visible=False, elem_id="compare") as compare:
                    compare_text = gr.Markdown(elem_id="compare-text")
                    with gr.Row():
                        prefer_original = gr.Button(
                            "The earlier answer was better", elem_id="prefer-original"
                        )
                        prefer_retry = gr.Button(
                            "The new answer was better", elem_id="prefer-retry"
                        )
                with gr.Column(visible=False, elem_id="feedback") as panel:
                    thanks = gr.Markdown()
                    reasons = gr.CheckboxGroup(
                        REASON_CHOICES, label="What was wrong?", elem_id="reasons", visible=False
                    )
                    comment = gr.Textbox(label="Comment (optional)", elem_id="comment")
                    correction = gr.Textbox(
                        label="A better answer (optional)", lines=3, elem_id="correction"
                    )
                    fb_btn = gr.Button("Send feedback", elem_id="send-feedback")
                gr.Markdown(
                    f"Messages up to {services.cfg.server.max_message_chars:,} "
                    f"characters; {services.cfg.server.rate_limit_per_minute} per "
                    "minute. 👍/👎 under an answer help the assistant improve; the "
                    "[n] in an answer open its sources.",
                    elem_id="notes",
                )
        outputs = [chatbot, state, box, past]
        cleared = [state, chatbot, past]
        compare_out = [compare, compare_text]
        demo.load(page.on_load, None, past, **private)
        demo.load(None, None, None, js=chat_sources.OPEN_CITED_SOURCE_JS, **private)
        for event in (
            box.submit(page.send, [box, state], outputs, **private),
            send_btn.click(page.send, [box, state], outputs, **private),
            chatbot.retry(page.retry, [state], outputs, **private),
            chatbot.clear(page.new_conversation, None, cleared, **private),
            new_btn.click(page.new_conversation, None, cleared, **private),
            past.input(page.open_conversation, [past], [state, chatbot], **private),
        ):
            event.then(compared.show, [state], compare_out, **private).then(
                mine.search, [search, state], past, **private
            )  # the list keeps the filter
        stop_btn.click(page.stop, None, None, **private)
        chatbot.like(
            page.on_like, [state], [pending, panel, thanks, comment, correction, reasons], **private
        )
        fb_btn.click(
            page.send_feedback,
            [pending, comment, correction, reasons],
            [pending, panel, comment, correction, reasons],
            **private,
        )
        prefer_original.click(compared.prefer_original, [state], [state, *compare_out], **private)
        prefer_retry.click(compared.prefer_retry, [state], [state, *compare_out], **private)
        # Every keystroke is an input event; "always_last" runs the one typed last once the
        # running search ends (gradio's default for .input, "once", drops the keystrokes typed
        # while a search runs, and the list then shows what the first letter matched).
        search.input(mine.search, [search, state], past, trigger_mode="always_last", **private)
        rename_btn.click(mine.rename, [title, search, state], [past, title], **private)
        delete_btn.click(mine.ask_delete, [state], [confirm_delete, confirm_text], **private)
        delete_no.click(lambda: gr.update(visible=False), None, confirm_delete, **private)
        delete_yes.click(mine.delete, [search, state], [past, confirm_delete], **private).then(
            page.new_conversation, None, cleared, **private
        ).then(compared.show, [state], compare_out, **private)
        download_btn.click(mine.export, None, exported, **private).then(
            None, [exported], None, js=DOWNLOAD_JS, **private
        )
        forget_btn.click(lambda: gr.update(visible=True), None, confirm_forget, **private)
        forget_no.click(lambda: gr.update(visible=False), None, confirm_forget, **private)
        forget_yes.click(mine.forget, None, [past, confirm_forget], **private).then(
            page.new_conversation, None, cleared, **private
        ).then(compared.show, [state], compare_out, **private)
        gr.api(page.api_chat, api_name="chat", concurrency_limit=None)
        gr.api(page.api_rate, api_name="rate", concurrency_limit=None)
    demo.queue(
        default_concurrency_limit=None,
        api_open=False,
        max_size=4 * services.cfg.model.max_queued_requests,
    )
    return demo
