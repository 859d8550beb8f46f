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

import html
import logging
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from assistant.turns.chat import TurnHandle
from core.domain import ServedPassage
from errors import AssistantError, BusyError
from store import logs

if TYPE_CHECKING:
    from assistant.turns.service import Services

log = logging.getLogger(__name__)

CSS = """
#notes { font-size: .85em; opacity: .8 }
footer { display: none !important }
"""
NO_SOURCES = "_No sources: this answer did not use your documents._"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md_text(text: str) -> str:
    """Text shown verbatim inside rendered Markdown: HTML escaped, Markdown syntax escaped."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(" ".join(text.split())))


def shown_question(question: str) -> str:
    """A user's message as displayed: HTML tags show as typed, never as markup."""
    return html.escape(question)


def answer_footer(passages: list[ServedPassage], notes: list[str]) -> str:
    """The sources an answer used, numbered like its [n] citations, and its notes."""
    lines = []
    if passages:
        lines.append("**Sources:** " + " · ".join(
            f"\\[{i}\\] {md_text(p.source)}" for i, p in enumerate(passages, start=1)))
    else:
        lines.append(NO_SOURCES)
    lines += [f"_{md_text(note)}_" for note in notes]
    return "\n\n---\n" + "\n\n".join(lines)


def turn_notes(retrieval_note: str | None, dropped_turns: int, stopped: bool = False,
               error: str | None = None, empty: bool = False) -> list[str]:
    notes = []
    if empty and not stopped and not error:
        notes.append("The model gave no answer to this message: retry or rephrase it.")
    if stopped:
        notes.append("Stopped: the answer was cut short on your request.")
    if error:
        notes.append("The answer could not be finished because of a server error; "
                     "try again.")
    if retrieval_note:
        notes.append(retrieval_note)
    if dropped_turns:
        notes.append(f"{dropped_turns} earlier turn(s) of this conversation were left out of "
                     "the model's prompt to fit its context window (they stay in your "
                     "conversation).")
    return notes


def _user(request: gr.Request | None) -> str:
    user = getattr(request, "username", None) if request is not None else None
    if not user:
        raise gr.Error("Your browser has no session: reload the page (cookies must be enabled).")
    return str(user)


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
    """A fresh conversation view: no id yet, no messages, no turn ids."""
    return {"id": None, "messages": [], "turns": {}, "feedback": []}


class ChatPage:
    """The callbacks of the chat page."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._active: dict[str, TurnHandle] = {}
        self._lock = threading.Lock()

    # ---- conversations ------------------------------------------------------------------

    def conversation_choices(self, user: str) -> list[tuple[str, str]]:
        rows = logs.list_conversations(self.services.db, user)
        return [(f"{c.title or 'Untitled'} ({c.turn_count})", c.id) for c in rows]

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
            notes = turn_notes(t.retrieval_note, 0, t.finish_reason == "cancelled", t.error,
                               not t.answer.strip())
            state["messages"].append({"role": "user", "content": shown_question(t.question)})
            state["messages"].append({"role": "assistant",
                                      "content": t.answer + answer_footer(t.passages, notes)})
            index = len(state["messages"]) - 1
            state["turns"][index] = {"turn_id": t.id, "question": t.question}
            mine = next((v.rating for v in t.votes if v.user_id == user), None)
            state["feedback"].append({"up": "Like", "down": "Dislike"}.get(mine or ""))
        return state, gr.update(value=state["messages"], feedback_value=state["feedback"])

    def new_conversation(self) -> Any:
        return new_state(), gr.update(value=[], feedback_value=[]), gr.update(value=None)

    # ---- sending -----------------------------------------------------------------------

    def send(self, message: str, state: dict[str, Any] | None, request: gr.Request
             ) -> Iterator[Any]:
        yield from self._answer(message, state or new_state(), request)

    def retry(self, state: dict[str, Any] | None, request: gr.Request) -> Iterator[Any]:
        state = state or new_state()
        if not state["turns"]:
            raise gr.Error("There is no answer to retry yet.")
        last = max(state["turns"])
        replaced = state["turns"].pop(last)
        state["messages"] = state["messages"][:last - 1]
        state["feedback"] = state["feedback"][:-1]
        # The new answer replaces the old one on the page and in the prompt's history; the old
        # one stays in the log (with any vote it got).
        yield from self._answer(replaced["question"], state, request, replaced["turn_id"])

    def _answer(self, message: str, state: dict[str, Any], request: gr.Request,
                retry_of: str | None = None) -> Iterator[Any]:
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
            {"role": "assistant", "content": ""}]
        state["feedback"] = state["feedback"] + [None]
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
        notes = turn_notes(handle.retrieval_note, handle.dropped_turns,
                           result is not None and result.finish_reason == "cancelled",
                           result.error if result else None,
                           not (result.text if result else text).strip())
        state["messages"][index] = {"role": "assistant",
                                    "content": (result.text if result else text)
                                    + answer_footer(handle.passages, notes)}
        state["turns"][index] = {"turn_id": turn_id, "question": message.strip()}
        past = gr.update(choices=self.conversation_choices(user),
                         value=state["id"]) if new else no_change
        yield _shown(state), state, no_change, past

    def stop(self, request: gr.Request) -> None:
        _user(request)
        with self._lock:
            handle = self._active.get(request.session_hash or "")
        if handle is not None:
            handle.cancel()

    # ---- feedback ----------------------------------------------------------------------

    def on_like(self, state: dict[str, Any] | None, data: gr.LikeData, request: gr.Request
                ) -> Any:
        user = _user(request)
        index = data.index if isinstance(data.index, int) else data.index[0]
        entry = (state or new_state())["turns"].get(index)
        if entry is None:
            raise gr.Error("This answer is not saved yet: rate it once it is complete.")
        rating = {True: "up", False: "down"}.get(data.liked)  # type: ignore[call-overload]
        try:
            self.services.rate(user, entry["turn_id"], rating, client=_client(request))
        except AssistantError as exc:
            raise _error(exc) from None
        if rating is None:
            return None, gr.update(visible=False), gr.update(), "", ""
        label = "👍 Thanks!" if rating == "up" else "👎 Thanks, noted."
        return ({"turn_id": entry["turn_id"], "rating": rating}, gr.update(visible=True),
                gr.update(value=f"**{label}** Add a comment or a better answer (optional):"),
                "", "")

    def send_feedback(self, pending: dict[str, Any] | None, comment: str, correction: str,
                      request: gr.Request) -> Any:
        user = _user(request)
        if not pending:
            raise gr.Error("Rate an answer with 👍 or 👎 first.")
        try:
            self.services.rate(user, pending["turn_id"], pending["rating"], comment.strip(),
                               correction.strip(), client=_client(request))
        except AssistantError as exc:
            raise _error(exc) from None
        gr.Info("Thank you: your feedback was saved.")
        return None, gr.update(visible=False), "", ""

    # ---- public endpoints for gradio_client -------------------------------------------------

    def api_chat(self, message: str, conversation_id: str = "",
                 request: gr.Request = None) -> Iterator[dict[str, Any]]:  # type: ignore[assignment]
        """Ask a question (continue `conversation_id`, or start a new conversation). Streams
        {answer, conversation_id, turn_id (set when complete), sources, notes}."""
        user = _user(request)
        try:
            handle = self.services.chat.ask(user, message, conversation_id or None)
        except AssistantError as exc:
            self.services.metrics.error("ui-api", type(exc).__name__)
            raise _error(exc) from None
        sources = [{"n": i, "source": p.source} for i, p in enumerate(handle.passages, 1)]
        out = {"answer": "", "conversation_id": handle.conversation_id, "turn_id": None,
               "sources": sources,
               "notes": turn_notes(handle.retrieval_note, handle.dropped_turns)}
        try:
            for piece in handle:
                out["answer"] += piece
                yield dict(out)
        finally:
            if handle.result is None:
                handle.cancel()
        out["turn_id"] = self.services.finish_turn(handle, "ui-api")
        yield out

    def api_rate(self, turn_id: str, rating: str, comment: str = "", correction: str = "",
                 request: gr.Request = None) -> dict[str, Any]:  # type: ignore[assignment]
        """Rate an answer you were given: rating 'up', 'down' or '' (withdraw)."""
        user = _user(request)
        try:
            vote = self.services.rate(user, turn_id, rating or None, comment or None,
                                      correction or None, client=_client(request))
        except AssistantError as exc:
            raise _error(exc) from None
        return {"turn_id": turn_id, "rating": vote.rating if vote else None}


def build_chat(services: Services) -> gr.Blocks:
    """The chat page as a Gradio Blocks app (mounted at / by the server)."""
    page = ChatPage(services)
    private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
    with gr.Blocks(title="Assistant", analytics_enabled=False) as demo:
        state = gr.State(new_state())
        pending = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=220):
                new_btn = gr.Button("+ New conversation", elem_id="new-conversation")
                past = gr.Radio(label="Your conversations", choices=[], elem_id="conversations")
            with gr.Column(scale=4):
                chatbot = gr.Chatbot(label="Assistant", elem_id="chat", height=520,
                                     sanitize_html=True, allow_tags=False, buttons=["copy"],
                                     feedback_options=("Like", "Dislike"),
                                     placeholder="Ask a question about your documents.")
                with gr.Row():
                    box = gr.Textbox(show_label=False, placeholder="Type a question and press "
                                     "Enter", scale=6, elem_id="message", autofocus=True)
                    send_btn = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                    stop_btn = gr.Button("Stop", scale=1, elem_id="stop")
                with gr.Column(visible=False, elem_id="feedback") as panel:
                    thanks = gr.Markdown()
                    comment = gr.Textbox(label="Comment (optional)", elem_id="comment")
                    correction = gr.Textbox(label="A better answer (optional)", lines=3,
                                            elem_id="correction")
                    fb_btn = gr.Button("Send feedback", elem_id="send-feedback")
                gr.Markdown(f"Messages up to {services.cfg.server.max_message_chars:,} "
                            f"characters; {services.cfg.server.rate_limit_per_minute} per "
                            "minute. 👍/👎 under an answer help the assistant improve.",
                            elem_id="notes")
        outputs = [chatbot, state, box, past]
        demo.load(page.on_load, None, past, **private)
        box.submit(page.send, [box, state], outputs, **private)
        send_btn.click(page.send, [box, state], outputs, **private)
        chatbot.retry(page.retry, [state], outputs, **private)
        chatbot.clear(page.new_conversation, None, [state, chatbot, past], **private)
        stop_btn.click(page.stop, None, None, **private)
        new_btn.click(page.new_conversation, None, [state, chatbot, past], **private)
        past.input(page.open_conversation, [past], [state, chatbot], **private)
        chatbot.like(page.on_like, [state], [pending, panel, thanks, comment, correction],
                     **private)
        fb_btn.click(page.send_feedback, [pending, comment, correction],
                     [pending, panel, comment, correction], **private)
        gr.api(page.api_chat, api_name="chat", concurrency_limit=None)
        gr.api(page.api_rate, api_name="rate", concurrency_limit=None)
    demo.queue(default_concurrency_limit=None, api_open=False,
               max_size=4 * services.cfg.model.max_queued_requests)
    return demo
