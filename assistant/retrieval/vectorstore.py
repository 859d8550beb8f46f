"""The vector store Protocol and its Milvus implementation (Milvus Lite file or server URL).

One code path serves both: pymilvus' MilvusClient talks to an in-process Milvus Lite for a
`*.db` path and to a standalone or distributed server for an http(s) URL. Every call carries
`timeout_s`, so a server that is down or stuck costs at most that long, then RetrievalError.
Filters never contain user text: sources are addressed by `source_key`, a hex digest.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from errors import RetrievalError

SCHEMA_VERSION = "1"
MAX_TEXT_BYTES = 16_000
MAX_SOURCE_BYTES = 2_000
# pymilvus pings every 10 s, even when idle; Milvus Lite's in-process gRPC server keeps gRPC's
# default policy (at most one ping per 5 minutes without data), answers with GOAWAY
# "too_many_pings" and gRPC logs an error each time. Loopback needs no keepalive: ping no more
# often than the server allows, and never when idle.
LITE_CHANNEL = {
    "grpc_options": {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": 0}
}
_HEX = re.compile(r"[0-9a-f]{16,64}")
_META_FIELDS = [
    "chunk_id",
    "source",
    "source_key",
    "position",
    "chunk_count",
    "content_hash",
    "ingested_at",
    "embedder",
]


@dataclass(frozen=True)
class ChunkRow:
    """One stored chunk: where it came from, which version of the file, and its vector."""

    chunk_id: str
    source: str
    source_key: str
    position: int
    chunk_count: int
    content_hash: str
    ingested_at: int
    embedder: str
    text: str
    vector: list[float]


@dataclass(frozen=True)
class Hit:
    """A search result; `score` is the cosine similarity of query and chunk."""

    chunk_id: str
    source: str
    text: str
    score: float


class VectorStore(Protocol):
    """What retrieval needs from a vector database."""

    uri: str
    dim: int
    hybrid: bool
    hybrid_note: str
    indexed_with: str | None

    def upsert(self, rows: list[ChunkRow]) -> None: ...
    def delete(self, source_key: str, keep_hash: str | None = None) -> int: ...
    def first_rows(self, source_key: str | None = None) -> list[dict[str, Any]]: ...
    def iter_rows(self) -> Iterator[dict[str, Any]]: ...
    def search(self, vector: np.ndarray, text: str, limit: int, hybrid: bool) -> list[Hit]: ...
    def count(self, source_key: str | None = None, content_hash: str | None = None) -> int: ...
    def flush(self) -> None: ...
    def reset(self, dim: int, embedder: str) -> None: ...
    def healthy(self) -> bool: ...
    def close(self) -> None: ...


def is_server_uri(uri: str) -> bool:
    """True for an http(s) URL of a Milvus server, False for a Milvus Lite file."""
    return uri.startswith(("http://", "https://"))


def _check_hex(value: str) -> str:
    if not _HEX.fullmatch(value):
        raise ValueError(f"not a hex key: {value!r}")
    return value


def _supports_bm25(version: str) -> tuple[bool, str]:
    """Milvus Lite 3.x and servers from 2.5 on have BM25 functions and sparse vectors."""
    if version.startswith("milvus_lite"):
        return True, ""
    match = re.search(r"(\d+)\.(\d+)", version)
    if match and (int(match.group(1)), int(match.group(2))) >= (2, 5):
        return True, ""
    return False, (
        f"Milvus server {version} has no BM25 functions or sparse vectors (they "
        "came in 2.5): dense search only; use Milvus 2.5 or later for hybrid search"
    )


def _pk(hit: Any) -> str:
    # Milvus Lite names the primary key of a hit "chunk_id", the 2.3 server names it "id".
    value = hit.get("chunk_id")
    return str(value if value is not None else hit.get("id"))


class MilvusStore:
    """Chunks in one Milvus collection; the embedder's name and dimension are its properties."""

    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int,
        embedder: str,
        *,
        token: str | None,
        timeout_s: float,
        hybrid: bool,
    ) -> None:
        from pymilvus import MilvusClient

        self.uri, self.collection, self.timeout_s = uri, collection, timeout_s
        self._lite_path = None if is_server_uri(uri) else str(Path(uri).resolve())
        try:
            self._client = MilvusClient(
                uri=uri,
                token=token or "",
                timeout=timeout_s,
                **({} if is_server_uri(uri) else LITE_CHANNEL),
            )
            version = str(self._client.get_server_version(timeout=timeout_s))
        except Exception as exc:
            raise RetrievalError(self._unreachable(exc)) from exc
        self._bm25, note = _supports_bm25(version)
        self._want_hybrid = hybrid
        self.version = version
        self._call(self._open_collection, dim, embedder, hybrid)
        if hybrid and not self.hybrid:
            self.hybrid_note = note or (
                "the collection was created without a keyword index: "
                "re-index (main.py ingest --reindex) to enable hybrid"
            )
        else:
            self.hybrid_note = "" if self.hybrid else "retrieval.hybrid is off"

    def _unreachable(self, exc: Exception) -> str:
        if self._lite_path:
            return (
                f"cannot open the Milvus Lite database {self._lite_path} ({exc}). Only one "
                "process may open it at a time: stop the other one (e.g. `main.py serve`) "
                "or point retrieval.uri at a Milvus server"
            )
        return (
            f"Milvus at {self.uri} did not answer within {self.timeout_s:g}s ({exc}); "
            "start the server or fix retrieval.uri (answers go without documents meanwhile)"
        )

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RetrievalError:
            raise
        except Exception as exc:
            where = self._lite_path or self.uri
            raise RetrievalError(
                f"Milvus ({where}) failed: {exc}. Check that it is running "
                "and reachable within retrieval.timeout_s"
            ) from exc

    # -- schema --------------------------------------------------------------------------
    def _open_collection(self, dim: int, embedder: str, hybrid: bool) -> None:
        c, t = self._client, self.timeout_s
        if not c.has_collection(self.collection, timeout=t):
            self._create(dim, embedder, hybrid)
        info = c.describe_collection(self.collection, timeout=t)
        props = info.get("properties") or {}
        fields = {f["name"]: f for f in info["fields"]}
        self.dim = int(fields["vector"]["params"]["dim"])
        self.hybrid = "sparse" in fields
        self.indexed_with = props.get("embedder")
        if c.get_load_state(self.collection, timeout=t)["state"].name != "Loaded":
            c.load_collection(self.collection, timeout=max(t, 60))

    def _create(self, dim: int, embedder: str, hybrid: bool) -> None:
        from pymilvus import DataType, Function, FunctionType

        c = self._client
        use_bm25 = hybrid and self._bm25
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_BYTES + 100)
        schema.add_field("source_key", DataType.VARCHAR, max_length=64)
        schema.add_field("position", DataType.INT64)
        schema.add_field("chunk_count", DataType.INT64)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("ingested_at", DataType.INT64)
        schema.add_field("embedder", DataType.VARCHAR, max_length=512)
        schema.add_field(
            "text",
            DataType.VARCHAR,
            max_length=MAX_TEXT_BYTES + 500,
            **({"enable_analyzer": True} if use_bm25 else {}),
        )
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = c.prepare_index_params()
        # An explicit HNSW index: Milvus Lite searches flushed segments with it (the default
        # is a brute-force scan, several times slower at 10k+ chunks; see bench/retrieval.py).
        index.add_index(
            "vector",
            index_type="HNSW",
            metric_type="COSINE",
            params={"M": 16, "efConstruction": 200},
        )
        if use_bm25:
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="text_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["text"],
                    output_field_names=["sparse"],
                )
            )
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        c.create_collection(
            self.collection,
            schema=schema,
            index_params=index,
            properties={"embedder": embedder, "schema_version": SCHEMA_VERSION},
            timeout=max(self.timeout_s, 60),
        )

    # -- writes --------------------------------------------------------------------------
    def upsert(self, rows: list[ChunkRow]) -> None:
        """Insert or overwrite chunks by id, in batches."""
        data = [
            {
                "chunk_id": r.chunk_id,
                "source": r.source,
                "source_key": r.source_key,
                "position": r.position,
                "chunk_count": r.chunk_count,
                "content_hash": r.content_hash,
                "ingested_at": r.ingested_at,
                "embedder": r.embedder,
                "text": r.text,
                "vector": r.vector,
            }
            for r in rows
        ]
        for start in range(0, len(data), 256):
            self._call(
                self._client.upsert,
                self.collection,
                data[start : start + 256],
                timeout=max(self.timeout_s, 60),
            )

    def delete(self, source_key: str, keep_hash: str | None = None) -> int:
        """Delete a source's chunks (all, or all but one version); returns how many."""
        expr = f'source_key == "{_check_hex(source_key)}"'
        if keep_hash is not None:
            expr += f' and content_hash != "{_check_hex(keep_hash)}"'
        count = self._count(expr)
        if count:
            self._call(
                self._client.delete, self.collection, filter=expr, timeout=max(self.timeout_s, 60)
            )
        return count

    def flush(self) -> None:
        """Seal written chunks so they are searched through the index."""
        self._call(self._client.flush, self.collection, timeout=max(self.timeout_s, 120))

    def reset(self, dim: int, embedder: str) -> None:
        """Drop the collection and create it empty for another embedder."""
        self._call(self._client.drop_collection, self.collection, timeout=max(self.timeout_s, 60))
        self._call(self._open_collection, dim, embedder, self._want_hybrid)

    # -- reads ---------------------------------------------------------------------------
    def _count(self, expr: str) -> int:
        rows = self._call(
            self._client.query,
            self.collection,
            filter=expr,
            output_fields=["count(*)"],
            consistency_level="Session",
            timeout=self.timeout_s,
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def first_rows(self, source_key: str | None = None) -> list[dict[str, Any]]:
        """Metadata of the first chunk of every source (or of one): one row per file version."""
        expr = "position == 0"
        if source_key is not None:
            expr += f' and source_key == "{_check_hex(source_key)}"'
        out: list[dict[str, Any]] = []
        while True:
            batch = self._call(
                self._client.query,
                self.collection,
                filter=expr,
                output_fields=_META_FIELDS,
                limit=1000,
                offset=len(out),
                consistency_level="Session",
                timeout=self.timeout_s,
            )
            out.extend(dict(r) for r in batch)
            if len(batch) < 1000:
                return out

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Every chunk's metadata and text, in batches (for re-indexing)."""
        iterator = self._call(
            self._client.query_iterator,
            self.collection,
            batch_size=1000,
            filter="position >= 0",
            output_fields=[*_META_FIELDS, "text"],
            timeout=max(self.timeout_s, 60),
        )
        try:
            while batch := self._call(iterator.next):
                yield from (dict(r) for r in batch)
        finally:
            iterator.close()

    def count(self, source_key: str | None = None, content_hash: str | None = None) -> int:
        """Chunks stored (of one source, of one version of it)."""
        expr = "position >= 0"
        if source_key is not None:
            expr += f' and source_key == "{_check_hex(source_key)}"'
        if content_hash is not None:
            expr += f' and content_hash == "{_check_hex(content_hash)}"'
        return self._count(expr)

    def search(self, vector: np.ndarray, text: str, limit: int, hybrid: bool) -> list[Hit]:
        """Top `limit` chunks by cosine similarity, or by RRF of dense and BM25 ranks."""
        from pymilvus import AnnSearchRequest, RRFRanker

        dense = {"metric_type": "COSINE", "params": {"ef": max(64, limit)}}
        query = [vector.astype(np.float32).tolist()]
        if hybrid and self.hybrid:
            wide = max(limit * 2, 20)
            requests = [
                AnnSearchRequest(query, "vector", dense, wide),
                AnnSearchRequest([text], "sparse", {"metric_type": "BM25"}, wide),
            ]
            # The fused order comes from Milvus; the score we report (and threshold on) is the
            # cosine similarity, recomputed from the returned vectors, so it means the same
            # thing in dense and hybrid mode.
            result = self._call(
                self._client.hybrid_search,
                self.collection,
                requests,
                RRFRanker(60),
                limit=limit,
                output_fields=["source", "text", "vector"],
                timeout=self.timeout_s,
            )[0]
            return [
                Hit(
                    _pk(h),
                    h["entity"]["source"],
                    h["entity"]["text"],
                    float(np.dot(vector, np.asarray(h["entity"]["vector"], np.float32))),
                )
                for h in result
            ]
        result = self._call(
            self._client.search,
            self.collection,
            data=query,
            anns_field="vector",
            search_params=dense,
            limit=limit,
            output_fields=["source", "text"],
            consistency_level="Session",
            timeout=self.timeout_s,
        )[0]
        return [
            Hit(_pk(h), h["entity"]["source"], h["entity"]["text"], float(h["distance"]))
            for h in result
        ]

    def healthy(self) -> bool:
        """Whether Milvus answers a cheap call within the timeout."""
        try:
            return bool(self._client.has_collection(self.collection, timeout=self.timeout_s))
        except Exception:
            return False

    def close(self) -> None:
        """Close the client; for Milvus Lite also stop its in-process server and free the file."""
        with contextlib.suppress(Exception):
            self._client.close()
        if self._lite_path:
            with contextlib.suppress(Exception):
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self._lite_path)
