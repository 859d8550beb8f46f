"""The server's one extension point: a feature (the learning loop: scheduler, operator console,
admin API) plugs into the process through an `Extension`, not through lists of callbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fastapi import FastAPI


class Extension(Protocol):
    """What a feature adds to the server process."""

    @property
    def open_paths(self) -> tuple[str, ...]:
        """Path prefixes served without the browser identity (they have their own login)."""

    @property
    def upload_paths(self) -> tuple[tuple[str, int], ...]:
        """(path prefix, most bytes) of routes that take files, above server.max_body_bytes."""

    def install(self, app: FastAPI) -> None:
        """Add routes and mounted apps; called before the chat page takes `/`."""

    def start(self) -> None:
        """Called once the server is up (e.g. start a scheduler)."""

    def stop(self) -> None:
        """Called when the server stops, before the model and the database close."""
