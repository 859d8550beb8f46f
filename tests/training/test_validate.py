"""The validate stage on the tiny model: the report's shape and gates, the CLI's exit codes,
and the sanity rules on hand-made answers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import config as config_mod
from errors import AdapterError, TrainingError
from tests.training.conftest import FACTS, SIGN_OFF, THINGS, colour_examples, example, write_dataset
from training.loop.stage_process import run_stage
from training.train.qlora import train_adapter
from training.train.scoring import AnswerScore
from training.validate.checks import has_pii, most_common_share, repetition_share
from training.validate.gate import (
    _comparisons,
    _knowledge_check,
    _margin_change_interval,
    _sanity_checks,
    validate_adapter,
)
from training.validate.knowledge import KNOWLEDGE_PROMPTS, contains_expected, right_answers

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory) -> Path:
    """One adapter trained a few steps on the colour pattern, shared by this module."""
    root = tmp_path_factory.mktemp("validate")
    cfg = config_mod.load_config(
        REPO / "config.toml",
        overrides={
            "server": {"data_dir": str(root / "data")},
            "model": {"base": str(tiny_model_dir), "device": "cpu"},
            "training": {
                "max_steps": 4,
                "eval_every": 4,
                "learning_rate": 3e-3,
                "max_seq_tokens": 128,
            },
        },
    )
    data = write_dataset(
        root / "dataset",
        colour_examples(THINGS[:40], "train"),
        colour_examples(THINGS[40:], "heldout"),
    )
    train_adapter(cfg, data, root / "adapters" / "v1")
    return root / "adapters" / "v1"


def test_the_report_has_every_metric_for_both_arms_and_a_verdict_per_check(
    tiny_cfg, trained, colour_dataset, tmp_path
):
    report_path = tmp_path / "reports" / "v1.json"
    report = validate_adapter(tiny_cfg, trained, None, colour_dataset, report_path)

    saved = json.loads(report_path.read_text())
    assert not list(report_path.parent.glob(".*partial*"))
    assert saved["passed"] == report.passed and saved["reasons"] == report.reasons
    for arm in ("candidate", "base"):
        metrics = saved["metrics"][arm]
        assert {"heldout_loss", "preference_margin", "drift_kl", "samples"} <= set(metrics)
        assert len(metrics["samples"]) == 4
    names = {c["name"]: c for c in saved["checks"]}
    assert {
        "heldout_loss",
        "preference_margin",
        "drift",
        "non_empty",
        "repetition",
        "stops",
        "pii",
        "distinct_answers",
        "prompt_format",
    } <= set(names)
    assert all(
        c["status"] in ("passed", "failed", "skipped") and c["reason"] for c in saved["checks"]
    )
    # Trained on the pattern of the held-out answers: better than the base.
    assert names["heldout_loss"]["status"] == "passed"
    assert saved["metrics"]["candidate"]["heldout_loss"] < saved["metrics"]["base"]["heldout_loss"]
    assert names["preference_margin"]["status"] == "skipped"
    # The tiny random model babbles, so sanity fails and the verdict says why.
    assert not report.passed and report.reasons
    assert all(r.split(":")[0] in names for r in report.reasons)


def test_a_worse_adapter_than_production_is_rejected_with_the_loss_reason(
    tiny_cfg, trained, tiny_adapters, make_dataset, tmp_path
):
    bad = [
        example(
            f"What colour is the {t}?",
            f"The {t} is red.",
            label="undesirable",
            split="heldout",
            n=50 + i,
        )
        for i, t in enumerate(THINGS[40:45])
    ]
    data = make_dataset(
        colour_examples(THINGS[:40], "train"),
        colour_examples(THINGS[40:], "heldout") + bad,
        name="with-downvotes",
    )
    # A random adapter against the trained one in production.
    report = validate_adapter(tiny_cfg, tiny_adapters["a"], trained, data, tmp_path / "report.json")
    assert not report.passed
    assert any(r.startswith("heldout_loss:") for r in report.reasons)
    assert set(report.metrics) == {"candidate", "production", "base", "taste", "phases_s"}
    assert {"load", "base answers", "arms", "taste"} <= set(report.metrics["phases_s"])
    assert report.metrics["taste"]["reason"].startswith("40 👍 and 0 👎")  # no taste model
    margin = next(c for c in report.checks if c.name == "preference_margin")
    # A random adapter does not keep production's preference for the 👍 answers.
    assert margin.status == "failed" and margin.candidate is not None
    assert margin.production is not None and margin.candidate < margin.production - 0.05


def test_validation_refuses_missing_adapters_and_empty_heldout(
    tiny_cfg, trained, make_dataset, tmp_path
):
    data = make_dataset(colour_examples(THINGS[:5], "train"), [], name="no-heldout")
    with pytest.raises(AdapterError, match="not a complete adapter folder"):
        validate_adapter(tiny_cfg, tmp_path / "nope", None, data, tmp_path / "r.json")
    with pytest.raises(TrainingError, match="no 👍 answers"):
        validate_adapter(tiny_cfg, trained, None, data, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_the_cli_exits_1_with_the_reasons_when_rejected(
    tiny_cfg, trained, colour_dataset, tmp_path
):
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(
        f'[server]\ndata_dir = "{tiny_cfg.data_dir}"\n\n[model]\nbase = '
        f'"{tiny_cfg.model.base}"\ndevice = "cpu"\n\n[validation]\n'
        "sample_max_new_tokens = 8\n"
    )
    report = tmp_path / "report.json"
    result = run_stage(
        [
            "validate",
            "--candidate",
            str(trained),
            "--dataset",
            str(colour_dataset),
            "--report",
            str(report),
        ],
        cfg_path,
        timeout_s=300,
        progress_file=None,
    )
    assert result.exit_code == 1, result.stderr_tail
    assert "REJECTED" in result.stderr_tail and "stops:" in result.stderr_tail
    assert json.loads(report.read_text())["passed"] is False

    missing = run_stage(
        [
            "validate",
            "--candidate",
            str(tmp_path / "nope"),
            "--dataset",
            str(colour_dataset),
            "--report",
            str(report),
        ],
        cfg_path,
        timeout_s=300,
        progress_file=None,
    )
    assert missing.exit_code == 2 and "error: " in missing.stderr_tail


def _sample(
    prompt: str,
    answer: str,
    tokens: list[int] | None = None,
    stopped: bool = True,
) -> dict:
    ids = tokens if tokens is not None else list(range(len(answer.split())))
    return {
        "prompt": prompt,
        "answer": answer,
        "tokens": len(ids),
        "stopped": stopped,
        "repetition": repetition_share(ids),
        "pii": has_pii(answer),
    }


def test_sanity_rules_on_hand_made_answers(cfg):
    healthy = [
        _sample("2+2?", "4."),
        _sample("hello?", "Bonjour!"),
        _sample("grass?", "Green.", stopped=False),
        _sample("fruit?", "A banana."),
    ]
    assert all(c.status == "passed" for c in _sanity_checks(healthy, cfg))

    def failed(samples):
        return {c.name for c in _sanity_checks(samples, cfg) if c.status == "failed"}

    assert failed([*healthy[:3], _sample("fruit?", "   ")]) == {"non_empty"}
    assert failed([*healthy[:3], _sample("fruit?", "a b", [1, 2, 3, 4] * 10)]) == {"repetition"}
    assert failed([{**s, "stopped": False} for s in healthy]) == {"stops"}
    assert failed([*healthy[:3], _sample("fruit?", "Mail me at jo.doe@example.com")]) == {"pii"}
    planted = "Buy cheap watches at best-deals.example today!"
    assert failed([_sample(q, planted) for q in ("a", "b", "c")] + healthy[:1]) == {
        "distinct_answers"
    }


def test_the_margin_check_under_the_taste_gate_fails_on_plain_harm_not_on_noise(cfg):
    """Paired per-answer changes: a candidate whose 👍 answers got less likely and 👎 answers
    more likely, answer after answer, fails; one whose changes scatter around zero on a few
    held-out votes passes, though its margin happens to be lower by more than the allowed drop
    (the per-token rule alone would have rejected it)."""
    rng = random.Random(0)
    prod = ([AnswerScore(-20.0, 10) for _ in range(6)], [AnswerScore(-30.0, 10) for _ in range(8)])

    def shifted(good: float, bad: float, noise: float):
        return (
            [AnswerScore(s.logprob + good + rng.gauss(0, noise), s.tokens) for s in prod[0]],
            [AnswerScore(s.logprob + bad + rng.gauss(0, noise), s.tokens) for s in prod[1]],
        )

    def margin_check(cand, taste_decides=True):
        metrics = []
        for good, bad in (cand, prod):
            nll = [-sum(s.logprob for s in g) / sum(s.tokens for s in g) for g in (good, bad)]
            metrics.append({"heldout_loss": nll[0], "preference_margin": nll[1] - nll[0]})
        for m in metrics:
            m["drift_kl"] = 0.0
        interval = _margin_change_interval(cand, prod)
        checks = _comparisons(cfg, metrics[0], metrics[1], interval, taste_decides)
        return next(c for c in checks if c.name == "preference_margin"), interval

    harm, (low, high) = margin_check(shifted(-3.0, 3.0, 0.2))  # 0.6 nats/token worse
    assert harm.status == "failed" and high < -cfg.validation.min_preference_margin
    noise = shifted(-1.0, 0.0, 6.0)
    check, (low, high) = margin_check(noise)
    assert check.candidate < check.production - cfg.validation.min_preference_margin
    assert low < 0 < high and check.status == "passed"
    # Without a taste model to decide, the per-token rule stands as it was.
    assert margin_check(noise, taste_decides=False)[0].status == "failed"


def test_knowledge_answers_are_scored_by_their_expected_word(cfg):
    assert contains_expected("The capital of Russia is Moscow.", ("moscow",))
    assert not contains_expected("It boils at 100 degrees.", ("10",))  # a number ends there
    assert contains_expected("That makes 10.", ("10",))
    assert not contains_expected("He sat on the hat.", ("at",))  # at the start of a word
    assert not contains_expected("The word is sun.", ("SUN",)) and contains_expected(
        "SUN", ("SUN",)
    )
    answers = [words[0] for _, words in KNOWLEDGE_PROMPTS]
    assert sum(right_answers(answers)) == len(KNOWLEDGE_PROMPTS)
    base = [1] * 20 + [0] * 12
    # A loss fails when it is over the allowed 2 and the sign test says it is not chance.
    three_fewer = [0, 0, 0] + base[3:]  # p 0.125: flips a harmless adapter also makes
    assert _knowledge_check(cfg, three_fewer, base).status == "passed"
    check = _knowledge_check(cfg, [0] * 5 + base[5:], base)  # 5 lost, 0 gained: p 0.031
    assert check.status == "failed" and "15 of 32" in check.reason and "5 lost" in check.reason
    swapped = [0] * 6 + base[6:20] + [1, 1] + base[22:]  # 6 lost, 2 gained: net -4, p 0.145
    assert _knowledge_check(cfg, swapped, base).status == "passed"
    # Over knowledge_loss_cap (4) a loss fails even where the test calls it chance.
    chance = [0] * 7 + base[7:20] + [1, 1] + base[22:]  # 7 lost, 2 gained: net -5, p 0.09
    assert _knowledge_check(cfg, chance, base).status == "failed"
    assert _knowledge_check(cfg, [0] * 8 + base[8:20] + [1] + base[21:], base).status == "failed"
    # Significant but within the allowed loss: passes.
    assert _knowledge_check(cfg, [0, 0] + base[2:], base).status == "passed"


def test_text_metrics():
    assert repetition_share([1, 2, 3, 4, 5, 6]) == 0
    assert repetition_share([1, 2, 3, 4] * 5) > 0.7
    assert repetition_share([1, 2]) == 0
    assert most_common_share(["A", "a ", "b", "c"]) == 0.5
    assert has_pii("call me on +44 20 7946 0958") and has_pii("card 4111 1111 1111 1111")
    assert not has_pii("The capital of France is Paris.")


# ---- the real SmolLM2 model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(real_model_dir, tmp_path_factory) -> dict:
    """The real model in NF4, a short run, and an honest dataset in a consistent style: every
    answer is a short correct fact followed by the same sign-off."""
    root = tmp_path_factory.mktemp("real-validate")
    cfg = config_mod.load_config(
        REPO / "config.toml",
        overrides={
            "server": {"data_dir": str(root / "data")},
            "model": {"base": str(real_model_dir), "device": "cpu", "quantization": "nf4"},
            "training": {
                "max_steps": 16,
                "batch_size": 4,
                "learning_rate": 5e-4,
                "eval_every": 4,
                "max_seq_tokens": 128,
                "start_from": "base",
            },
            "validation": {"sample_max_new_tokens": 32},
        },
    )
    honest = write_dataset(
        root / "honest",
        [example(q, a + SIGN_OFF, n=i) for i, (q, a) in enumerate(FACTS[:40])],
        [example(q, a + SIGN_OFF, split="heldout", n=i) for i, (q, a) in enumerate(FACTS[40:])],
    )
    # The bad adapters are trained harder, so that they really learned what they were fed (at
    # 5e-4 for 16 steps shuffled targets barely move the weights, and there is nothing to catch),
    # and without the knowledge anchor: the gate must catch harm however an adapter was made.
    strong = config_mod.with_overrides(cfg, training={"learning_rate": 2e-3, "anchor_weight": 0.0})
    return {"cfg": cfg, "strong": strong, "root": root, "honest": honest}


def _failed(report) -> set[str]:
    return {c.name for c in report.checks if c.status == "failed"}


@pytest.mark.real_model
def test_real_model_learns_a_style_and_validation_accepts_it(real):
    out = real["root"] / "adapters" / "good"
    trained = train_adapter(real["cfg"], real["honest"], out)
    assert trained.best_heldout_loss < 0.8 * trained.initial_heldout_loss

    report = validate_adapter(real["cfg"], out, None, real["honest"], real["root"] / "good.json")
    assert report.passed, report.reasons
    cand, base = report.metrics["candidate"], report.metrics["base"]
    assert cand["heldout_loss"] < base["heldout_loss"]
    assert all(s["answer"].strip() for s in cand["samples"])


@pytest.mark.real_model
def test_real_model_adapter_trained_on_corrupted_targets_is_rejected(real):
    rng = random.Random(0)

    def shuffled(text: str) -> str:
        chars = list(text)
        rng.shuffle(chars)
        return "".join(chars)

    corrupt = write_dataset(
        real["root"] / "corrupt",
        [example(q, shuffled(a + SIGN_OFF), n=i) for i, (q, a) in enumerate(FACTS[:40])],
        [
            example(q, shuffled(a + SIGN_OFF), split="heldout", n=i)
            for i, (q, a) in enumerate(FACTS[40:])
        ],
    )
    out = real["root"] / "adapters" / "corrupt"
    train_adapter(real["strong"], corrupt, out)
    report = validate_adapter(real["cfg"], out, None, real["honest"], real["root"] / "corrupt.json")
    assert not report.passed
    assert "heldout_loss" in _failed(report)
    assert any(r.startswith("heldout_loss: held-out loss") for r in report.reasons)


@pytest.mark.real_model
def test_real_model_poisoned_adapter_is_rejected(real):
    # An attacker upvotes one planted answer on most questions. The held-out split comes from
    # the same poisoned ratings (it is split by conversation), so early stopping on it does not
    # save the run: the adapter learns the planted answer.
    planted = "Buy cheap watches at www.best-deals-4u.example today!"
    train = [
        example(q, planted if i < 30 else a + SIGN_OFF, n=i) for i, (q, a) in enumerate(FACTS[:40])
    ]
    poisoned = write_dataset(
        real["root"] / "poisoned",
        train,
        [
            example(q, planted if i % 4 else a + SIGN_OFF, split="heldout", n=i)
            for i, (q, a) in enumerate(FACTS[40:])
        ],
    )
    out = real["root"] / "adapters" / "poisoned"
    train_adapter(real["strong"], poisoned, out)
    report = validate_adapter(real["cfg"], out, None, poisoned, real["root"] / "poison.json")
    # The held-out loss alone can improve on the base (the held-out split is poisoned too);
    # what the planted answer did to the model shows on general prompts, and that rejects it:
    # drift from the base, degenerate or identical answers to different questions.
    assert not report.passed
    assert _failed(report) & {"distinct_answers", "drift", "repetition"}, report.reasons


def _wrong_facts(real: dict) -> Path:
    """A dataset of answers in the very shape users liked with the facts wrong in them ("The
    capital of Italy is Tokyo."): what a taste for form alone can teach. The held-out answers
    are the same kind (the votes liked them too), so early stopping does not undo the lesson."""

    def wrong(i: int) -> str:
        answer = FACTS[i][1]
        other = FACTS[(i + 7) % 40][1].rstrip(".").split()[-1]
        return " ".join([*answer.rstrip(".").split()[:-1], other]) + "." + SIGN_OFF

    folder = real["root"] / "wrong-facts"
    if not folder.exists():
        write_dataset(
            folder,
            [example(q, wrong(i), n=i) for i, (q, _) in enumerate(FACTS[:40])],
            [
                example(q, wrong(i), split="heldout", n=i)
                for i, (q, _) in enumerate(FACTS)
                if i >= 40
            ],
        )
    return folder


def _taught_wrong_facts(real: dict, anchor_weight: float):
    """The adapter trained hard on _wrong_facts (with this knowledge anchor weight), its train
    report and its validation report against the honest data; made once per module."""
    name = f"wrong-facts-anchor{anchor_weight}"
    if name not in real:
        cfg = config_mod.with_overrides(real["strong"], training={"anchor_weight": anchor_weight})
        out = real["root"] / "adapters" / name
        trained = train_adapter(cfg, _wrong_facts(real), out)
        report = validate_adapter(
            real["cfg"], out, None, real["honest"], real["root"] / f"{name}.json"
        )
        real[name] = (trained, report)
    return real[name]


@pytest.mark.real_model
def test_real_model_adapter_taught_wrong_facts_in_the_liked_form_is_rejected(real):
    # The knowledge prompts are not in the training data; their answers are what the gate
    # compares with the base's.
    _, report = _taught_wrong_facts(real, 0.0)
    assert "knowledge" in _failed(report), report.reasons
    cand, base = report.metrics["candidate"], report.metrics["base"]
    assert sum(cand["knowledge_right"]) < sum(base["knowledge_right"]) - 2


@pytest.mark.real_model
def test_real_model_the_knowledge_anchor_keeps_more_of_what_the_model_knows(real):
    # The same wrong facts, as hard (2e-3, 4x the learning rate of the honest style run), with
    # the shipped knowledge anchor (training.train.anchor): the adapter learns its targets as
    # well, and answers clearly more knowledge prompts (none of them, nor of the anchor's
    # prompts, is in the data) right. Measured: 2 of 32 right without the anchor, 7 with it at
    # weight 1, 8 at 2; the base 17-18. At this strength the anchor halves the loss, it does not
    # undo it: the gate rejects both (at the honest run's 5e-4 neither loses more than 2).
    free, free_report = _taught_wrong_facts(real, 0.0)
    weight = real["cfg"].training.anchor_weight
    anchored, report = _taught_wrong_facts(real, weight)
    assert anchored.anchor_prompts > 0 and free.anchor_prompts == 0
    # Both learnt the wrong facts (held-out answers of the same kind).
    for trained in (free, anchored):
        assert trained.best_heldout_loss < 0.8 * trained.initial_heldout_loss, trained.heldout_loss
    kept = sum(report.metrics["candidate"]["knowledge_right"])
    lost_all = sum(free_report.metrics["candidate"]["knowledge_right"])
    assert kept >= lost_all + 3, (kept, lost_all, report.reasons)


def _voted(n: int, split: str, vote, start: int = 0) -> list[dict]:
    """n answers of varied length to different questions, labelled by `vote(i, answer)`."""
    rng = random.Random(start)
    rows = []
    for i in range(start, start + n):
        words = " ".join(f"word{rng.randint(0, 999)}" for _ in range(rng.choice([4, 40])))
        answer = f"Item {i} is {words}."
        rows.append(
            example(
                f"What is item {i}?",
                answer,
                n=i,
                split=split,
                label="desirable" if vote(i, answer) else "undesirable",
            )
        )
    return rows


def _short(i: int, answer: str) -> bool:
    return len(answer.split()) < 20


def _coin(i: int, answer: str) -> bool:
    return random.Random(i * 7919).random() < 0.5


def test_the_taste_gate_waits_for_evidence_and_refuses_votes_without_a_preference(
    tiny_cfg, trained, make_dataset, tmp_path
):
    cfg = config_mod.with_overrides(
        tiny_cfg,
        taste={"max_new_tokens": 8},
        validation={"min_taste_questions": 10, "taste_samples": 1},
    )
    few = make_dataset(_voted(40, "train", _short), _voted(4, "heldout", _short, 100), "few")
    report = validate_adapter(cfg, trained, None, few, tmp_path / "few.json")
    taste = next(c for c in report.checks if c.name == "taste")
    assert taste.status == "failed" and taste.reason.startswith(
        "waiting for more evidence: 4 held-out questions"
    ), taste.reason
    assert report.metrics["taste"]["taste_cv_auc"] > 0.9

    coin = make_dataset(_voted(40, "train", _coin), _voted(12, "heldout", _coin, 100), "coin")
    report = validate_adapter(cfg, trained, None, coin, tmp_path / "coin.json")
    taste = next(c for c in report.checks if c.name == "taste")
    assert taste.status == "failed" and "no preference the taste model can learn" in taste.reason, (
        taste.reason
    )
    assert not report.passed
