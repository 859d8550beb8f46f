"""PII scrubbing benchmark: recall per kind on the labelled probe set (tests/training/
pii_probes.py) and false positives on the bundled guide and 200 model-like answers, for our
scrubber and, side by side in the same run, for Presidio's pattern recognizers when
presidio-analyzer is importable (it is not a dependency: run this file with an interpreter that
has it, e.g. `/tmp/pvenv/bin/python bench/pii.py`; spaCy's model is not needed: only the
pattern recognizers run, no NLP engine).

    .venv/bin/python bench/pii.py
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.training.pii_answers import ANSWERS  # noqa: E402
from tests.training.pii_probes import PROBES  # noqa: E402
from training.dataset.pii import scrub  # noqa: E402

Scrubber = Callable[[str], tuple[str, int]]


def ours(text: str) -> tuple[str, int]:
    result = scrub(text)
    return result.text, result.found


def presidio() -> Scrubber | None:
    """Every predefined Presidio recognizer that needs no NLP model, applied directly."""
    try:
        from presidio_analyzer import RecognizerRegistry
    except ImportError:
        return None
    registry = RecognizerRegistry(supported_languages=["en", "de", "fr", "es", "it", "nl"])
    registry.load_predefined_recognizers(languages=["en", "de", "fr", "es", "it", "nl"])
    recognizers = [
        r
        for r in registry.recognizers
        if type(r).__name__ not in ("SpacyRecognizer", "StanzaRecognizer", "TransformersRecognizer")
    ]

    def run(text: str) -> tuple[str, int]:
        spans = []
        for r in recognizers:
            try:
                spans += [
                    (x.start, x.end)
                    for x in r.analyze(text, r.supported_entities, None)
                    if x.score >= 0.3
                ]
            except Exception:  # noqa: BLE001 - a recognizer that needs NLP artifacts
                continue
        out, last = [], 0
        for start, end in sorted(spans):
            if start < last:
                last = max(last, end)
                continue
            out += [text[last:start], "[PII]"]
            last = end
        out.append(text[last:])
        return "".join(out), len(spans)

    return run


def measure(name: str, fn: Scrubber) -> dict[str, object]:
    hit: Counter[str] = Counter()
    total: Counter[str] = Counter()
    started = time.perf_counter()
    for text, kind, value in PROBES:
        total[kind] += 1
        hit[kind] += value not in fn(text)[0]
    guide = [
        line
        for p in sorted((REPO / "docs" / "guide").glob("*.md"))
        for line in p.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    guide_fp = [line for line in guide if fn(line)[0] != line]
    answer_fp = [a for a in ANSWERS if fn(a)[0] != a]
    seconds = time.perf_counter() - started
    return {
        "name": name,
        "hit": hit,
        "total": total,
        "guide": (len(guide_fp), len(guide)),
        "answers": (len(answer_fp), len(ANSWERS)),
        "seconds": seconds,
        "examples": (guide_fp + answer_fp)[:5],
    }


def main() -> None:
    runs = [measure("ours", ours)]
    other = presidio()
    if other is not None:
        runs.append(measure("presidio (patterns)", other))
    kinds = sorted({k for _, k, _ in PROBES})
    print(f"{'kind':14}" + "".join(f"{r['name']:>22}" for r in runs))
    for kind in kinds:
        cells = []
        for r in runs:
            hit, total = r["hit"][kind], r["total"][kind]  # type: ignore[index]
            cells.append(f"{hit:>3}/{total:<3} {hit / total:6.2f}")
        print(f"{kind:14}" + "".join(f"{c:>22}" for c in cells))
    for label, key in (
        ("overall recall", None),
        ("guide lines changed", "guide"),
        ("answers changed", "answers"),
    ):
        cells = []
        for r in runs:
            if key is None:
                hit, total = sum(r["hit"].values()), sum(r["total"].values())  # type: ignore[attr-defined]
                cells.append(f"{hit}/{total} {hit / total:.3f}")
            else:
                bad, total = r[key]  # type: ignore[misc]
                cells.append(f"{bad}/{total}")
        print(f"{label:14}" + "".join(f"{c:>22}" for c in cells))
    print(f"{'seconds':14}" + "".join(f"{r['seconds']:>22.3f}" for r in runs))
    for r in runs:
        for example in r["examples"]:  # type: ignore[attr-defined]
            print(f"  {r['name']} changed: {example[:100]!r}")


if __name__ == "__main__":
    main()
