"""200 answers in the style the assistant gives (setup steps, versions, ports, dates, prices,
code, ids, general facts), holding no personal data: the precision side of the PII probe set.
A scrubber that replaces anything in them mangles ordinary training targets. Also imported by
bench/pii.py."""

from __future__ import annotations

_TEMPLATES = (
    "To start the server, run `python main.py serve --port {port}` and open "
    "http://127.0.0.1:{port} in your browser. It listens on 0.0.0.0 inside Docker.",
    "Version {major}.{minor}.{patch} was released on {day} March {year}; upgrade with "
    "`pip install assistant=={major}.{minor}.{patch}`.",
    "The order {order} was shipped on {year}-0{m}-1{d} and should arrive within {n} working "
    "days. The total was ${price}.99 including VAT of {pct}%.",
    "In {year} the company sold {n},{thousands} units, about {pct}% more than in {prev}.",
    "Set `max_new_tokens = {tokens}` and `temperature = 0.{d}` in config.toml, then restart. "
    "A context window of {ctx} tokens fits about {pages} pages of text.",
    "Step 1. Open Settings. Step 2. Choose Account. Step 3. Click Save. It takes about {n} "
    "minutes; the progress bar shows {pct}% when half the files are done.",
    "The error `CUDA out of memory (tried to allocate {n}.{d} GiB)` means the batch is too "
    "large: lower training.batch_size from {tokens} to {n}.",
    "Mount Everest is {height} metres high; the first ascent was on 29 May 1953.",
    "The meeting is at {hour}:30 on {day}.0{m}.{year} in room {room}; bring the Q{q} report.",
    "Use `SELECT count(*) FROM turns WHERE created_at > now() - INTERVAL {n} DAY` to count "
    "the answers of the last {n} days; it returned {thousands} rows in {ms} ms.",
    "The file lives at /usr/lib/python3.{minor}/site-packages/transformers/models/llama/"
    "modeling_llama.py, line {line}.",
    "The ISBN of the second edition is 978-3-16-148410-0, and it has {pages} pages.",
    "A healthy adult heart beats {n}0 to {tokens} times a minute; water boils at 100 degrees "
    "Celsius at sea level.",
    "Run `docker compose up -d` and wait for the healthcheck: `curl localhost:{port}/healthz` "
    'answers {{"status": "ok"}} within {n} seconds.',
    "The canary serves {pct}% of new conversations at step {n} of 3, then 25% and 50%; a "
    "rollout ends after {hours} hours at the latest.",
    "The uuid 550e8400-e29b-41d4-a716-446655440000 identifies the run; its loss fell from "
    "{n}.{d}{d} to 0.{d}{pct}.",
    "Press Ctrl+Shift+P, type 'Reload Window' and press Enter. Version 1.{minor}{d}.{patch} "
    "of the editor supports it.",
    "The train leaves platform {n} at {hour}:{mm} and arrives at {hour2}:{mm}; the ticket "
    "costs €{price},50.",
    "Chapter {n} covers rate limits: {tokens} requests per minute per user, and {n}0 ratings "
    "per minute.",
    "The Python {major}.{minor} release notes list {thousands} changes; see PEP {pep} for the "
    "new syntax.",
)


def _answers() -> list[str]:
    out = []
    for i in range(200):
        template = _TEMPLATES[i % len(_TEMPLATES)]
        k = i // len(_TEMPLATES)
        out.append(
            template.format(
                port=7860 + k,
                major=2 + k % 3,
                minor=10 + k,
                patch=k,
                day=10 + k,
                year=2015 + k,
                prev=2014 + k,
                m=1 + k % 9,
                d=k % 10,
                n=3 + k,
                thousands=f"{100 + 37 * k:03d}",
                price=10 + 13 * k,
                pct=5 + 7 * k % 90,
                tokens=128 * (k + 1),
                ctx=2048 * (1 + k % 4),
                pages=40 + 11 * k,
                order=f"A-{10_000 + 731 * k}",
                height=8848 + k % 2,
                hour=8 + k % 10,
                hour2=10 + k % 10,
                mm=f"{(7 * k) % 60:02d}",
                room=101 + k,
                q=1 + k % 4,
                ms=12 + 5 * k,
                line=310 + 17 * k,
                hours=24 * (1 + k % 7),
                pep=600 + 41 * k,
            )
        )
    return out


ANSWERS: list[str] = _answers()
