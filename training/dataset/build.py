"""Building the next dataset: curate the rated turns since the last dataset, then write and
record it. A cycle's curate stage and `main.py curate` both do exactly this."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config import Config
from store import datasets, queries
from store.db import Database
from training.dataset.curate import CurationResult, campaign_since, curate
from training.dataset.schema import write_dataset


@dataclass(frozen=True)
class Curated:
    """What curation kept and dropped from the ratings cast since `since`."""

    result: CurationResult
    since: datetime | None


@dataclass(frozen=True)
class SavedDataset:
    """A dataset written under data_dir/datasets and recorded in the store."""

    dataset_id: str
    folder: Path


def curate_since_last(cfg: Config, db: Database) -> Curated:
    """Curate every turn rated (or re-rated) since the last recorded dataset, with the recent
    corrections as the context campaigns are detected in."""
    since = datasets.last_dataset_time(db)
    result = curate(
        queries.rated_turns_since(db, since),
        cfg.curation,
        campaign_context=queries.recent_corrections(db, campaign_since(cfg.curation)),
    )
    return Curated(result, since)


def save_dataset(
    cfg: Config, db: Database, curated: Curated, *, source: dict[str, Any], actor: str
) -> SavedDataset:
    """Write the curated examples as a new dataset folder and record which turns went into
    which split; `source` (who built it) is kept in the manifest."""
    dataset_id = f"ds-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    folder = cfg.data_dir / "datasets" / dataset_id
    manifest = write_dataset(
        curated.result,
        folder,
        dataset_id=dataset_id,
        source_description={**source, "since": str(curated.since)},
    )
    datasets.record_dataset(
        db, dataset_id, str(folder), manifest.to_json(), curated.result.turn_splits, actor=actor
    )
    return SavedDataset(dataset_id, folder)
