"""The chat page in a real browser (headless Chromium driven by Playwright): a person's view."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest

from store import logs
from tests.conftest import REPO

pytestmark = pytest.mark.browser

ARTIFACTS = REPO / "test-artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium (a fresh temporary profile; each test opens new contexts)."""
    if not shutil.which("chromium"):
        pytest.fail("Chromium is not installed: apt-get install chromium (make setup-dev)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium"), args=ARGS, headless=True
        )
        yield browser
        browser.close()


def open_chat(browser, url: str):  # noqa: ANN201
    """A fresh browser context (its own cookies: a different person) on the chat page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    page.goto(url + "/")
    page.locator("#message textarea").wait_for()
    return context, page


def send(page, text: str) -> None:
    page.locator("#message textarea").fill(text)
    page.locator("#send").click()


def answers(page):  # noqa: ANN201
    return page.locator("#chat [data-testid='bot']")


def finished(page):  # noqa: ANN001, ANN201
    """The last answer once it is complete: its footer shows the **Sources** heading or the
    no-sources note. Matched on those elements, not on the word, which the answer itself may
    say (a tiny model's answer once read "... longitude sources submarine ...")."""
    answer = answers(page).last
    heading = answer.locator("strong", has_text=re.compile(r"^Sources$"))
    answer.locator("em", has_text=re.compile(r"^No sources:")).or_(heading).first.wait_for()
    return answer


def user_id_of(context) -> str:  # noqa: ANN001
    (cookie,) = [c for c in context.cookies() if c["name"] == "assistant_id"]
    assert cookie["httpOnly"]
    return cookie["value"].rsplit(".", 1)[0]


def test_chat_stream_sources_and_a_vote_with_a_comment(browser, live, services):
    context, page = open_chat(browser, live.url)
    try:
        send(page, "What is the capital of France?")
        answer = finished(page)
        assert page.locator("#chat [data-testid='user']").last.inner_text() == (
            "What is the capital of France?"
        )
        user = user_id_of(context)
        (conversation,) = logs.list_conversations(services.db, user)
        (turn,) = logs.conversation_turns(services.db, conversation.id, user)
        shown = answer.inner_text()
        words = [w for w in turn.answer.split() if w.isalnum()]
        if words:  # the streamed answer is shown (random tiny model: any word of it)
            assert any(w in shown for w in words), (turn.answer, shown)
        elif not turn.answer.strip():
            assert "gave no answer" in shown, (turn.error, shown)

        page.locator("#chat button[aria-label='Like']").last.click()
        page.locator("#comment textarea").wait_for()
        page.locator("#comment textarea").fill("Short and right.")
        page.locator("#send-feedback").click()
        page.locator("text=your feedback was saved").wait_for()
        # The conversation is listed to reopen.
        page.locator("#conversations").get_by_text("What is the capital of France?").wait_for()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)

        (turn,) = logs.conversation_turns(services.db, conversation.id, user)
        assert [(v.user_id, v.rating, v.comment) for v in turn.votes] == [
            (user, "up", "Short and right.")
        ]
    finally:
        context.close()


def test_html_and_script_in_a_message_are_shown_as_text_and_never_run(browser, live):
    context, page = open_chat(browser, live.url)
    try:
        attack = (
            '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
            "<b>bold?</b>"
        )
        send(page, attack)
        finished(page)
        shown = page.locator("#chat [data-testid='user']").last
        assert shown.inner_text() == attack  # displayed literally
        assert shown.locator("script, img, b").count() == 0
        page.wait_for_timeout(500)
        assert page.evaluate("window.__pwned") is None
    finally:
        context.close()


def test_empty_and_overlong_messages_are_explained_in_the_page(browser, live, services):
    context, page = open_chat(browser, live.url)
    try:
        page.locator("#send").click()  # empty
        page.get_by_text("the message is empty").wait_for()
        send(page, "x" * 100_000)
        limit = f"{services.cfg.server.max_message_chars:,}"
        page.get_by_text(f"the limit is {limit}").wait_for()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "chat-refused.png"))
        assert answers(page).count() == 0
        assert "Traceback" not in page.content()
    finally:
        context.close()


def test_two_people_see_only_their_own_conversations(browser, live, services):
    alice, page_a = open_chat(browser, live.url)
    bob, page_b = open_chat(browser, live.url)
    try:
        send(page_a, "Alice asks about tulips")
        answers(page_a).last.locator("text=sources").wait_for()
        page_a.locator("#conversations").get_by_text("Alice asks about tulips").wait_for()
        send(page_b, "Bob asks about roses")
        answers(page_b).last.locator("text=sources").wait_for()
        page_b.locator("#conversations").get_by_text("Bob asks about roses").wait_for()
        page_b.reload()
        page_b.locator("#conversations").get_by_text("Bob asks about roses").wait_for()
        assert page_b.locator("#conversations").get_by_text("tulips").count() == 0

        # Alice reopens her conversation after a reload; her identity is her cookie.
        page_a.reload()
        page_a.locator("#conversations").get_by_text("Alice asks about tulips").click()
        page_a.locator("#chat [data-testid='user']").get_by_text(
            "Alice asks about tulips"
        ).wait_for()
        a_user, b_user = user_id_of(alice), user_id_of(bob)
        assert a_user != b_user
        (conv_a,) = logs.list_conversations(services.db, a_user)
        assert [c.title for c in logs.list_conversations(services.db, b_user)] == [
            "Bob asks about roses"
        ]
        # Bob's browser cannot open Alice's conversation or rate her answer through the store.
        from errors import NotFoundError

        with pytest.raises(NotFoundError):
            logs.conversation_turns(services.db, conv_a.id, b_user)
    finally:
        alice.close()
        bob.close()


@pytest.fixture(scope="module")
def grounded(live, tmp_path_factory, tiny_model_dir):  # noqa: ANN201
    """A second server (same model) with the real retriever and the bundled sample documents."""
    pytest.importorskip("assistant.retrieval.retriever", reason="document search is not built yet")
    from assistant.turns.service import build_services
    from config import with_overrides
    from tests.assistant.conftest import run_server, server_config

    cfg = server_config(tmp_path_factory.mktemp("grounded") / "data", tiny_model_dir)
    cfg = with_overrides(cfg, retrieval={"top_k": 4, "score_threshold": -1.0, "sample_docs": True})
    services = build_services(cfg, generator=live.services.generator)
    assert services.retriever is not None, "the retriever did not open"
    running = run_server(services)
    yield running
    running.stop()
    close = getattr(services.retriever, "close", None)
    if callable(close):
        close()
    services.db.close()  # the generator belongs to the main test server


def test_an_answer_shows_the_sources_it_used(browser, grounded):
    context, page = open_chat(browser, grounded.url)
    try:
        send(page, "How do I rate an answer?")
        answer = finished(page)
        user = user_id_of(context)
        services = grounded.services
        (conversation,) = logs.list_conversations(services.db, user)
        (turn,) = logs.conversation_turns(services.db, conversation.id, user)
        assert turn.passages
        text = answer.inner_text()
        for i, passage in enumerate(turn.passages, start=1):
            assert f"[{i}]" in text and passage.source in text
        for source in {p.source for p in turn.passages}:  # each source listed once
            assert text.count(source) == 1, (source, text)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "chat-sources.png"), full_page=True)
    finally:
        context.close()
