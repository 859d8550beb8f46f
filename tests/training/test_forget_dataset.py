"""Forgetting a user removes their examples from an untrained dataset, which still verifies."""

from __future__ import annotations

from store import datasets, queries
from store.db import open_database
from store.forget import forget_user
from tests.training.test_cycle import seed_ratings
from training.dataset.curate import curate
from training.dataset.schema import load_dataset, write_dataset


def test_forget_keeps_an_untrained_dataset_loadable_without_the_user(cfg):
    # These users just arrived: trust every identity here (test_vote_trust.py tests the rule).
    cfg_share = cfg.curation.__class__(
        **{
            **cfg.curation.__dict__,
            "max_share_per_user": 1.0,
            "min_voter_age_hours": 0.0,
            "min_voter_turns": 0,
        }
    )
    with open_database(cfg.data_dir / "assistant.duckdb") as db:
        seed_ratings(db, n=12)
        result = curate(queries.rated_turns_since(db, None), cfg_share)
        folder = cfg.data_dir / "datasets" / "ds-1"
        write_dataset(result, folder, dataset_id="ds-1", source_description={})
        datasets.record_dataset(db, "ds-1", str(folder), {}, result.turn_splits)
        before = load_dataset(folder)
        gone = [
            e.turn_id
            for e in before.train + before.heldout
            if e.conversation_id
            in {
                t.conversation_id
                for t in queries.rated_turns_since(db, None)
                if t.user_id == "user-1"
            }
        ]
        assert gone
        report = forget_user(db, "user-1", cfg.data_dir)
        assert report.dataset_lines_removed == len(gone)
        after = load_dataset(folder)  # hashes and counts were brought up to date
        kept = {e.turn_id for e in after.train + after.heldout}
        assert not kept & set(gone)
        assert len(kept) == len({e.turn_id for e in before.train + before.heldout}) - len(gone)


def test_deleting_one_conversation_scrubs_its_examples_and_keeps_the_dataset_loadable(cfg):
    from store.forget import forget_conversation

    cfg_share = cfg.curation.__class__(
        **{
            **cfg.curation.__dict__,
            "max_share_per_user": 1.0,
            "min_voter_age_hours": 0,
            "min_voter_turns": 0,
        }
    )
    with open_database(cfg.data_dir / "assistant.duckdb") as db:
        seed_ratings(db, n=12)
        rated = queries.rated_turns_since(db, None)
        result = curate(rated, cfg_share)
        folder = cfg.data_dir / "datasets" / "ds-1"
        write_dataset(result, folder, dataset_id="ds-1", source_description={})
        datasets.record_dataset(db, "ds-1", str(folder), {}, result.turn_splits)
        before = load_dataset(folder)
        example = (before.train + before.heldout)[0]
        owner = next(t.user_id for t in rated if t.turn_id == example.turn_id)
        gone = {
            e.turn_id
            for e in before.train + before.heldout
            if e.conversation_id == example.conversation_id
        }
        report = forget_conversation(db, owner, example.conversation_id, cfg.data_dir)
        assert report.conversations == 1 and report.dataset_lines_removed == len(gone)
        after = load_dataset(folder)  # hashes and counts were brought up to date
        kept = {e.turn_id for e in after.train + after.heldout}
        assert not kept & gone
        assert kept == {e.turn_id for e in before.train + before.heldout} - gone
