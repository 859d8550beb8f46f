"""What the loop computes from fixed weights alone, kept between cycles under data_dir/cache: the
knowledge anchor's answers and top tokens (training.train.anchor) and the validation gate's
greedy answers of the base and of each adapter it judged (training.validate.gate: the candidate
one cycle judges is production the next). Each depends only on the weights and a few settings,
and recomputing them took about a tenth of a cycle. A file is named by a hash of all it depends
on (the base's weight files, the adapter's weights, the served prompts' token ids, the
settings), so other weights or settings miss it; it is written atomically and rebuilt when
missing or unreadable."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config import Config
from core.adapters import ADAPTER_FILES
from training.dataset.schema import file_sha256
from training.validate.checks import Sample, greedy_answers

log = logging.getLogger(__name__)

# Answer files kept (one per adapter validated, a few kB each): a cycle reads the base's and
# production's, which are among the latest.
KEEP_ANSWER_FILES = 16


def cache_file(cfg: Config, kind: str, key: dict[str, Any], suffix: str) -> Path:
    """data_dir/cache/<kind>-<hash>.<suffix>, the hash over `key` and the base's identity (its
    location, quantization, device and weight files' names, sizes and modification times)."""
    from core.base_model import resolve_base_model

    location = Path(resolve_base_model(cfg.model.base, cfg.data_dir))
    weights = sorted(location.glob("*.safetensors")) if location.is_dir() else [location]
    full = {
        "base": [str(location.resolve()), cfg.model.quantization, cfg.model.device],
        "weights": [[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights],
        **key,
    }
    digest = hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:24]
    return cfg.data_dir / "cache" / f"{kind}-{digest}.{suffix}"


def adapter_digest(adapter: Path) -> list[str]:
    """The identity of an adapter folder's weights: the sha256 of each of its ADAPTER_FILES."""
    return [file_sha256(adapter / name) for name in ADAPTER_FILES]


def replace_atomically(path: Path, write: Any) -> None:
    """Call write(tmp) on a temporary file beside `path`, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cached_answers(
    cfg: Config,
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    device: str,
    adapter: Path | None = None,
) -> list[Sample]:
    """greedy_answers of `model` as it is to `prompts` at the serving repetition penalty, read
    from the cache when the weights and settings match: the bare base (the caller disables
    any adapter) or, with `adapter`, that adapter folder's weights (the caller activates it)."""
    from training.validate.checks import prompt_ids

    window, penalty = cfg.model.context_window, cfg.model.repetition_penalty
    key: dict[str, Any] = {
        "version": 1,
        "prompts": [prompt_ids(tokenizer, p, max_new_tokens, window) for p in prompts],
        "settings": [max_new_tokens, window, penalty],
    }
    if adapter is not None:
        key["adapter"] = adapter_digest(adapter)
    path = cache_file(cfg, "answers", key, "json")
    if path.is_file():
        try:
            samples = _read_samples(path, prompts)
            os.utime(path)  # recently used: the last to be pruned
            return samples
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("recomputing greedy answers: %s is unreadable (%s)", path, exc)
    samples = greedy_answers(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        context_window=window,
        device=device,
        repetition_penalty=penalty,
    )
    rows = [[s.prompt, s.text, s.token_ids, s.stopped] for s in samples]
    try:
        replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(rows), encoding="utf-8"))
        _prune(path.parent, "answers-*.json", KEEP_ANSWER_FILES)
    except OSError as exc:  # a cache: validation goes on without it
        log.warning("could not cache greedy answers in %s (%s)", path, exc)
    return samples


def _prune(folder: Path, pattern: str, keep: int) -> None:
    """Remove all but the `keep` most recently written or read files matching `pattern`."""
    files = sorted(folder.glob(pattern), key=lambda f: f.stat().st_mtime_ns, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


def _read_samples(path: Path, prompts: Sequence[str]) -> list[Sample]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or len(rows) != len(prompts):
        raise ValueError(f"{len(rows)} answers for {len(prompts)} prompts")
    out = []
    for (prompt, text, ids, stopped), want in zip(rows, prompts, strict=True):
        if prompt != want or not isinstance(text, str) or not isinstance(stopped, bool):
            raise ValueError(f"the answer to {want!r} does not match")
        if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
            raise ValueError(f"the token ids of {want!r} are not integers")
        out.append(Sample(prompt, text, ids, stopped))
    return out
