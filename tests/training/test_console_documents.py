"""Documents while serving: the admin API's document routes, `main.py ingest` through the
running server, and the console's Documents tab in a real browser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import config as config_mod
from store.events import list_events
from tests.conftest import REPO
from tests.training import console_server
from tests.training.console_server import TOKEN, TOKEN_ENV, auth, open_tab, screenshot

KETTLE = b"# Kettle care\n\nDescale the kettle every month with white vinegar and rinse twice.\n"
FIFTY_MB = 50 * 2**20

pages = console_server.pages  # the module's live server (a fixture)
console_page = console_server.console_page  # a signed-in browser page (a fixture)


def broken_pdf() -> bytes:
    return b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage that is not a PDF at all"


def listed(client) -> dict[str, int]:  # noqa: ANN001
    r = client.get("/admin/documents", headers=auth())
    assert r.status_code == 200, r.text
    return {d["source"]: d["chunks"] for d in r.json()["documents"]}


def test_document_routes_need_the_admin_token(pages):
    with pages.client() as c:
        for method, path in [
            ("GET", "/admin/documents"),
            ("POST", "/admin/documents"),
            ("DELETE", "/admin/documents"),
            ("POST", "/admin/documents/reindex"),
        ]:
            for headers in ({}, auth("forged-token"), {"Authorization": TOKEN}):
                r = c.request(method, path, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.text)
                assert "admin token" in r.json()["detail"]
        # the console's own upload route needs a signed-in operator too
        assert c.post(
            "/console/gradio_api/upload", files={"files": ("a.md", KETTLE)}
        ).status_code in (401, 403)


def test_bad_uploads_get_a_clear_4xx(pages):
    with pages.client() as c:
        r = c.post("/admin/documents", headers=auth(), json={"files": []})
        assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
        r = c.post(
            "/admin/documents",
            headers=auth(),
            data={"sources": "x"},
            files={"other": ("a.md", KETTLE)},
        )
        assert r.status_code == 400 and "no files" in r.json()["detail"]
        r = c.post(
            "/admin/documents",
            headers=auth(),
            data={"sources": ["a", "b"]},
            files={"files": ("a.md", KETTLE)},
        )
        assert r.status_code == 400 and "2 sources for 1 files" in r.json()["detail"]
        r = c.post(
            "/admin/documents",
            headers={**auth(), "Content-Type": "multipart/form-data; boundary=zzz"},
            content=b"--zzz\r\nnot a part",
        )
        assert r.status_code == 400, r.text
        r = c.request(
            "DELETE", "/admin/documents", headers=auth(), json={"source": "upload/never-added.md"}
        )
        assert r.status_code == 404 and "no document" in r.json()["detail"]
        r = c.request("DELETE", "/admin/documents", headers=auth(), json={"source": ""})
        assert r.status_code == 422


def test_upload_several_files_each_with_its_own_outcome(pages):
    data_dir = pages.services.cfg.data_dir
    with pages.client() as c:
        r = c.post(
            "/admin/documents",
            headers=auth(),
            files=[
                ("files", ("kettle.md", KETTLE)),
                ("files", ("huge.md", b"# Big\n\n" + b"word " * (FIFTY_MB // 5))),
                ("files", ("broken.pdf", broken_pdf())),
                ("files", ("slides.pptx", b"PK\x03\x04 not ours")),
                ("files", ("../../etc/evil.txt", b"Plain text about tea.\n")),
            ],
        )
        assert r.status_code == 200, r.text
        files = {f["source"]: f for f in r.json()["files"]}
        assert files["upload/kettle.md"]["status"] == "added"
        assert files["upload/kettle.md"]["chunks"] >= 1
        assert files["upload/huge.md"]["status"] == "failed"
        assert "over the retrieval.max_file_mb limit of 20 MB" in files["upload/huge.md"]["reason"]
        assert files["upload/broken.pdf"]["status"] == "failed"
        assert "not a readable PDF" in files["upload/broken.pdf"]["reason"]
        assert str(data_dir) not in files["upload/broken.pdf"]["reason"]  # no stored path
        assert "unsupported file type '.pptx'" in files["upload/slides.pptx"]["reason"]
        # a path in the file name is only a label: filed under its last component
        assert files["upload/evil.txt"]["status"] == "added"
        assert not (data_dir.parent / "etc").exists()

        again = c.post(
            "/admin/documents", headers=auth(), files=[("files", ("kettle.md", KETTLE))]
        ).json()
        assert again["files"][0]["status"] == "skipped"
        assert "unchanged since" in again["files"][0]["reason"]
        changed = c.post(
            "/admin/documents",
            headers=auth(),
            files=[("files", ("kettle.md", KETTLE + b"\n## Limescale\n\nUse citric acid too.\n"))],
        )
        assert changed.json()["files"][0]["status"] == "replaced"
        assert listed(c)["upload/kettle.md"] >= 1

        # what the answers are grounded in now includes it
        hits = pages.services.retriever.search("how do I descale my kettle?")
        assert any(h.source == "upload/kettle.md" for h in hits)

        gone = c.request(
            "DELETE", "/admin/documents", headers=auth(), json={"source": "upload/evil.txt"}
        )
        assert gone.status_code == 200 and gone.json()["chunks_deleted"] >= 1
        assert "upload/evil.txt" not in listed(c)
        re = c.post("/admin/documents/reindex", headers=auth())
        assert re.status_code == 200 and re.json()["failed"] == 0
        assert "upload/kettle.md" in listed(c)
    # the bytes were only ever under generated names, and are gone once ingested
    assert list((data_dir / "uploads").iterdir()) == []
    actions = [e.action for e in list_events(pages.services.db, limit=50)]
    assert {"documents.add", "documents.delete", "documents.reindex"} <= set(actions)


def test_main_py_ingest_goes_through_the_running_server(
    pages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    cfg = config_mod.with_overrides(
        pages.services.cfg, server={"port": int(pages.url.rsplit(":", 1)[1]), "host": "127.0.0.1"}
    )
    config_file = tmp_path / "config.toml"
    config_file.write_text(config_mod.dump_config(cfg), encoding="utf-8")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "teapot.md").write_text("# Teapot\n\nWarm the teapot before brewing.\n")
    (docs / "notes.xyz").write_text("not a document")
    (docs / "empty.txt").write_text("")

    def ingest(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in __import__("os").environ.items() if k != TOKEN_ENV}
        if token:
            env[TOKEN_ENV] = token
        return subprocess.run(
            [sys.executable, str(REPO / "main.py"), "--config", str(config_file), "ingest", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = ingest(str(docs))
    assert first.returncode == 1, first.stderr  # one file failed, the rest went in
    assert "through its admin API" in first.stderr
    assert "added 1, replaced 0, skipped 1, failed 1" in first.stdout
    assert "the file is empty" in first.stdout and "unsupported file type '.xyz'" in first.stdout
    teapot = str((docs / "teapot.md").resolve())
    listing = ingest("--list")
    assert listing.returncode == 0 and teapot in listing.stdout
    gone = ingest("--delete", teapot)
    assert gone.returncode == 0 and "deleted" in gone.stdout
    missing = ingest("--delete", teapot)
    assert missing.returncode == 2 and "no document" in missing.stderr
    refused = ingest("--list", token=None)
    assert refused.returncode == 2 and f"{TOKEN_ENV} is not set" in refused.stderr
    assert "Traceback" not in refused.stderr + missing.stderr + first.stderr


@pytest.mark.browser
def test_documents_tab_in_a_browser(pages, console_page, tmp_path: Path):
    from playwright.sync_api import expect

    page = console_page
    (tmp_path / "descaling.md").write_bytes(KETTLE.replace(b"Kettle care", b"Descaling"))
    (tmp_path / "faq.txt").write_text("Opening hours: nine to five on weekdays.\n")
    (tmp_path / "broken.pdf").write_bytes(broken_pdf())
    open_tab(page, "Documents")
    page.locator("#document-files input[type=file]").set_input_files(
        [str(tmp_path / n) for n in ("descaling.md", "faq.txt", "broken.pdf")]
    )
    expect(page.locator("#document-files")).to_contain_text("broken")
    page.click("#btn-add-documents")
    outcomes = page.locator("#document-outcomes")
    expect(outcomes).to_contain_text("upload/broken.pdf")
    expect(outcomes).to_contain_text("not a readable PDF")
    expect(outcomes).to_contain_text("added")
    expect(page.locator("#documents-result")).to_contain_text("added 2")
    sources = page.locator("#document-sources")
    expect(sources).to_contain_text("upload/faq.txt")
    expect(sources).to_contain_text("upload/descaling.md")
    screenshot(page, "console-documents.png")

    page.locator("#delete-source input").click()
    page.get_by_role("option", name="upload/faq.txt").click()
    page.click("#btn-delete-source")
    expect(page.locator("#documents-result")).to_contain_text("Deleted upload/faq.txt")
    expect(sources).not_to_contain_text("upload/faq.txt")
    expect(sources).to_contain_text("upload/descaling.md")
    screenshot(page, "console-documents-deleted.png")

    # drag and drop: a file dropped on the upload area, as a person drags it from their desktop
    dropped = page.evaluate_handle("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(["# Dropped\\n\\nThe warranty lasts two years from purchase.\\n"],
                              "warranty.md", {type: "text/markdown"}));
        return dt; }""")
    zone = page.locator("#document-files button").filter(has_text="Drop File Here").first
    zone.dispatch_event("dragenter", {"dataTransfer": dropped})
    zone.dispatch_event("drop", {"dataTransfer": dropped})
    expect(page.locator("#document-files")).to_contain_text("warranty")
    page.click("#btn-add-documents")
    expect(outcomes).to_contain_text("upload/warranty.md")
    expect(sources).to_contain_text("upload/warranty.md")
