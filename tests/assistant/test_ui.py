"""The chat page's Gradio endpoints driven by gradio_client, and its display helpers."""

from __future__ import annotations

import httpx
import pytest
from gradio_client import Client

from assistant.http.identity import COOKIE
from assistant.pages.chat_page import answer_footer, md_text, shown_answer, shown_question
from core.domain import ServedPassage
from store import logs


def browser_identity(url: str) -> tuple[str, str]:
    """(cookie value, user id) of a fresh browser identity, as the page's first load sets it."""
    r = httpx.get(url + "/")
    value = r.cookies[COOKIE]
    return value, value.rsplit(".", 1)[0]


@pytest.fixture(scope="module")
def alice(live) -> tuple[Client, str]:
    cookie, user = browser_identity(live.url)
    return Client(live.url + "/", headers={"Cookie": f"{COOKIE}={cookie}"}, verbose=False), user


@pytest.fixture(scope="module")
def bob(live) -> tuple[Client, str]:
    cookie, user = browser_identity(live.url)
    return Client(live.url + "/", headers={"Cookie": f"{COOKIE}={cookie}"}, verbose=False), user


def test_gradio_client_drives_the_chat_and_rates(alice, services):
    client, user = alice
    first = client.predict("What does the assistant do?", api_name="/chat")
    assert first["answer"] and first["turn_id"]
    job = client.submit("Tell me more.", first["conversation_id"], api_name="/chat")
    updates = list(job)
    final = job.result()
    assert len(updates) >= 2 and final["turn_id"]  # streamed
    assert final["conversation_id"] == first["conversation_id"]
    client.predict(final["turn_id"], "down", "too vague", "A better answer.", api_name="/rate")
    turns = logs.conversation_turns(services.db, first["conversation_id"], user)
    assert [t.id for t in turns] == [first["turn_id"], final["turn_id"]]
    assert [(v.rating, v.comment, v.correction) for v in turns[1].votes] == [
        ("down", "too vague", "A better answer.")
    ]


def test_only_the_chat_and_rate_endpoints_are_public(alice, live):
    client, _ = alice
    info = client.view_api(print_info=False, return_format="dict")
    assert set(info["named_endpoints"]) == {"/chat", "/rate"}
    assert not info["unnamed_endpoints"]
    config = httpx.get(live.url + "/config").json()
    private = [d["id"] for d in config["dependencies"] if d["api_visibility"] == "private"]
    assert private
    with pytest.raises(ValueError):  # the client refuses hidden handlers
        client.predict(fn_index=private[0])
    for path in (
        "/gradio_api/call/chat",
        "/gradio_api/run/chat",
        "/gradio_api/api/chat",
        "/gradio_api/call/v2/chat",
        "/run/predict",
    ):
        r = httpx.post(live.url + path, json={"data": ["hi"]})
        assert r.status_code == 404, path


def test_rating_another_users_answer_through_gradio_fails(alice, bob, services):
    a, a_user = alice
    b, _ = bob
    answer = a.predict("a question of alice", api_name="/chat")
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="not found for this user"):
        b.predict(answer["turn_id"], "down", api_name="/rate")
    with pytest.raises(AppError, match="not found for this user"):
        b.predict("hijack", answer["conversation_id"], api_name="/chat")
    turns = logs.conversation_turns(services.db, answer["conversation_id"], a_user)
    assert [t.votes for t in turns] == [[]]


def test_bad_messages_through_gradio_are_explained(alice):
    from gradio_client.exceptions import AppError

    client, _ = alice
    with pytest.raises(AppError, match="empty"):
        client.predict("   ", api_name="/chat")
    with pytest.raises(AppError, match="the limit is 4,000"):
        client.predict("x" * 100_000, api_name="/chat")
    with pytest.raises(AppError, match="rating"):
        client.predict("no-such-turn", "sideways", api_name="/rate")


def test_display_helpers_escape_html_and_markdown():
    assert shown_question("<script>x</script>") == "&lt;script&gt;x&lt;/script&gt;"
    passages = [
        ServedPassage("c1", "guide<img src=x onerror=alert(1)>.md", "t", 0.9),
        ServedPassage("c2", "faq_[1](http://evil).md", "<b>x</b>", 0.5),
    ]
    footer = answer_footer(passages, ["A note with *stars*"], "t1")
    assert "<img" not in footer and "&lt;img" in footer and "<b>" not in footer
    assert "\\[1\\] **guide" in footer and "faq\\_\\[1\\]\\(http://evil\\)\\.md" in footer
    assert "\\*stars\\*" in footer
    assert "No sources" in answer_footer([], [])
    assert md_text("a\nb") == "a b"


def test_sources_list_each_source_once_with_headed_excerpts_the_citations_link_to():
    passages = [
        ServedPassage(
            "a0",
            "guide/02-rating-answers.md",
            "Rating answers > Comments\n\nAfter a thumbs down you can comment.",
            0.9,
        ),
        ServedPassage("b0", "guide/06-documents.md", "Plain text without a heading.", 0.8),
        ServedPassage(
            "a1",
            "guide/02-rating-answers.md",
            "Rating answers > Changing your mind\n\nEach user has one vote.\n\n"
            "The latest vote counts.",
            0.7,
        ),
    ]
    shown = shown_answer("See [1] and [3], not [4] or [0].", passages, [], "turn-9")
    assert shown.count("guide/02\\-rating\\-answers\\.md") == 1  # one line per source
    assert "\\[1\\] \\[3\\] **guide/02" in shown and "\\[2\\] **guide/06" in shown
    assert '<a class="cite" href="#src-turn-9-1">[1]</a>' in shown
    assert '<a class="cite" href="#src-turn-9-3">[3]</a>' in shown
    assert "not [4] or [0]" in shown  # no passage 4 or 0: left as typed
    assert (
        '<details class="source" id="src-turn-9-3"><summary>[3] Rating answers &gt; '
        'Changing your mind</summary><div class="excerpt">Each user has one vote.<br>'
        "The latest vote counts.</div></details>"
    ) in shown
    assert "<summary>[2] Plain text without a heading.</summary>" in shown
    # The page's markup keeps to one line per element, so Markdown never re-reads an excerpt.
    assert all(line.count("<details") == line.count("</details>") for line in shown.split("\n"))


def test_stop_ends_the_answer_and_it_is_still_logged(services):
    from types import SimpleNamespace

    from assistant.pages.chat_page import ChatPage, new_state
    from config import with_overrides

    page = ChatPage(services)
    request = SimpleNamespace(username="anon-stopper", session_hash="s-stop")
    saved = services.chat.cfg
    services.chat.cfg = with_overrides(saved, model={"max_new_tokens": 1000})
    try:
        updates = page.send("Write a very long story.", new_state(), request)
        next(updates)  # the question is shown, the answer starts
        page.stop(request)
        *_, (chat, state, _, _) = list(updates)
    finally:
        services.chat.cfg = saved
    assert "Stopped" in chat["value"][-1]["content"]
    (turn,) = logs.conversation_turns(services.db, state["id"], "anon-stopper")
    assert turn.finish_reason == "cancelled" and turn.completion_tokens < 1000
    assert state["turns"][1]["turn_id"] == turn.id


def test_retry_answers_again_without_the_old_answer_in_the_prompt(services):
    from types import SimpleNamespace

    from assistant.pages.chat_page import ChatPage, new_state

    page = ChatPage(services)
    request = SimpleNamespace(username="anon-retrier", session_hash="s-retry")
    *_, (_, state, _, _) = list(page.send("Name a colour.", new_state(), request))
    *_, (chat, state, _, _) = list(page.send("And another one?", state, request))
    *_, (chat, state, _, _) = list(page.retry(state, request))
    first, second, again = logs.conversation_turns(services.db, state["id"], "anon-retrier")
    assert again.question == second.question == "And another one?"
    # The retried answer is gone from the page and from the new prompt; the first stays.
    assert len(chat["value"]) == 4
    assert second.answer.strip()
    prompt = [m["content"] for m in again.messages]
    assert first.answer in prompt and second.answer not in prompt
    assert state["turns"][3]["turn_id"] == again.id


def test_a_passage_heading_is_read_back_from_the_chunk_format():
    from assistant.retrieval.chunking import chunk_blocks, split_heading
    from assistant.retrieval.documents import Block

    blocks = [
        Block("text", "An intro paragraph before any heading."),
        Block("text", "A second one, still before it."),
        Block("heading", "Guide", 1),
        Block("text", "Body of the guide."),
        Block("heading", "Votes", 2),
        Block("text", "One vote each. " * 30),
    ]
    chunks = chunk_blocks(blocks, lambda t: len(t.split()), max_tokens=40, overlap=5)
    assert len(chunks) > 3
    for chunk in chunks:
        heading, body = split_heading(chunk.text)
        assert heading == chunk.heading
        assert (f"{heading}\n\n{body}" if heading else body) == chunk.text


def test_gradio_client_rates_with_reasons(alice, services):
    client, user = alice
    answer = client.predict("Is this answer too long?", api_name="/chat")
    result = client.predict(
        answer["turn_id"], "down", "", "", ["too_long", "other"], api_name="/rate"
    )
    assert result["reasons"] == ["too_long", "other"]
    (turn,) = logs.conversation_turns(services.db, answer["conversation_id"], user)
    assert turn.votes[0].reasons == ("too_long", "other")


def test_a_retry_compared_with_the_earlier_answer_is_stored_as_a_pair(services):
    from types import SimpleNamespace

    import gradio as gr

    from assistant.pages.chat_compare import Compare
    from assistant.pages.chat_page import ChatPage, new_state
    from store import preferences

    page, compare = ChatPage(services), Compare(services)
    ann = SimpleNamespace(username="anon-comparer", session_hash="s-cmp")
    *_, (_, state, _, _) = list(page.send("Name a fruit.", new_state(), ann))
    assert compare.show(state)[0]["visible"] is False  # nothing to compare yet
    *_, (_, state, _, _) = list(page.retry(state, ann))
    panel, text = compare.show(state)
    first, again = logs.conversation_turns(services.db, state["id"], "anon-comparer")
    assert panel["visible"] is True and "Which answer was better?" in text
    # Someone else's session cannot mark this user's pair.
    with pytest.raises(gr.Error, match="not found for this user"):
        compare.prefer_original(
            dict(state), SimpleNamespace(username="anon-other", session_hash="s-x")
        )
    state, panel, text = compare.prefer_original(state, ann)
    assert "You marked the earlier answer as better" in text
    (pair,) = [p for p in preferences.preference_pairs(services.db) if p.user_id == "anon-comparer"]
    assert (pair.chosen_turn_id, pair.rejected_turn_id) == (first.id, again.id)
    # A new question ends the comparison.
    *_, (_, state, _, _) = list(page.send("Another?", state, ann))
    assert compare.show(state)[0]["visible"] is False


def test_my_data_callbacks_never_reach_another_users_conversation(services):
    from types import SimpleNamespace

    import gradio as gr

    from assistant.pages.chat_data import MyData
    from assistant.pages.chat_page import ChatPage, new_state

    page, mine = ChatPage(services), MyData(services)
    owner = SimpleNamespace(username="anon-owner", session_hash="s-own")
    intruder = SimpleNamespace(username="anon-intruder", session_hash="s-int")
    *_, (_, state, _, _) = list(page.send("Owner's private question", new_state(), owner))
    stolen = {**new_state(), "id": state["id"]}  # the intruder knows the id
    with pytest.raises(gr.Error, match="not found for this user"):
        mine.rename("mine now", "", stolen, intruder)
    with pytest.raises(gr.Error, match="not found for this user"):
        mine.ask_delete(stolen, intruder)
    with pytest.raises(gr.Error, match="not found for this user"):
        mine.delete("", stolen, intruder)
    assert mine.search("private", stolen, intruder)["choices"] == []
    assert "Owner's private" not in mine.export(intruder)
    mine.forget(intruder)  # deletes only the intruder's own (empty) data
    (conv,) = logs.list_conversations(services.db, "anon-owner")
    assert conv.title == "Owner's private question" and conv.turn_count == 1
    assert "Owner's private question" in mine.export(owner)
    with pytest.raises(gr.Error, match="search"):
        mine.search("x" * 1000, state, owner)
