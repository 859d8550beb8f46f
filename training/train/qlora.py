"""Train stage: the taste step (training.taste.distill: taste model on the votes, best-of-n
candidates) then QLoRA on the quantized base with the rated and distilled examples, written as
a self-describing adapter folder.

Losses: SFT on desirable answers (👍, corrections, best-of-n winners), optionally with
token-level unlikelihood against repeating earlier answer tokens (`unlikelihood_weight`, off by
default: at 1.0 it made tests/training/test_validate.py's style adapter loop), KTO on undesirable
ones (`method = "kto"`) and DPO on the preference pairs of real votes (`pair_weight`): a 👎
answer and its correction, 👍 and 👎 to the same question. Best-vs-worst taste candidates join
the DPO term only with `synthetic_pairs`: measured under the brevity rater (bench/loop.py, 200
conversations), with them the candidate learnt more (+22 points) but its greedy answers looped
(84% repeated 4-grams) and validation rejected it, and a run took 5x longer; without them
(and with unlikelihood at 1.0) it passed validation and gained +14 points (95% CI +7.9..+20.1).
The knowledge anchor (training.train.anchor, `anchor_weight`) adds, every step, the KL from the
bare base's next-token distribution on the opening of its own greedy answers to general prompts,
so a taste for form does not cost what the model knows.
On the CPU the steps read the NF4 base dequantized once (the same weights) and run under bf16
autocast where the CPU does bf16 natively (`training.compute_dtype`); on CUDA the 4-bit kernels
compute in bf16 as they are.

The loop is hand-written rather than trl's SFTTrainer/KTOTrainer/DPOTrainer or transformers'
Trainer on purpose: examples must be tokenized by `core.prompts.encode_example` (the serving
template, loss on the answer only), which trl would re-template; one step here mixes SFT, KTO
and DPO terms over three differently shaped batches, which no single trl trainer does; KTO and
DPO use the bare base (adapter disabled) as their reference, which costs no second model (trl's
default loads a reference copy); and the step/time budget, early stopping on the held-out loss
with the best checkpoint kept, progress reporting and the atomic folder write are ours either
way. bench/train.py measures the SFT loop against a plain transformers `Trainer` + peft on the
same data; trl itself was not installed or measured here (it is not in requirements.txt).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config import Config, TrainingConfig
from core.adapters import check_adapter_dir
from core.base_model import dequantized_on_cpu, load_base
from core.prompts import EncodedExample
from errors import AdapterError, TrainingError
from training.dataset.pairs import Pair, preference_pairs
from training.dataset.schema import (
    Example,
    LoadedDataset,
    load_dataset,
)
from training.phases import Phases
from training.stage_files import StopReason, TrainReport
from training.taste.distill import best_of_n
from training.taste.sampling import bf16_sampling
from training.train.adapter_folder import train_config, write_adapter
from training.train.anchor import Anchor, anchor_loss, build_anchors, cached_anchors
from training.train.scoring import (
    answer_forward,
    collate,
    encode_examples,
    logprobs_of,
    mean_nll,
    score_answers,
    token_logprobs,
    unlikelihood,
)

log = logging.getLogger(__name__)

MAX_GRAD_NORM = 1.0  # the usual LoRA clip: keeps one odd batch from wrecking a short run


@dataclass(frozen=True)
class TrainProgress:
    """One progress report: after every optimiser step and every held-out evaluation."""

    step: int
    total_steps: int
    loss: float | None
    heldout_loss: float | None
    elapsed_s: float
    tokens: int
    tokens_per_s: float


def attach_lora(model: Any, tcfg: TrainingConfig, init_adapter: Path | None) -> Any:
    """A trainable peft model: a fresh LoRA on every linear layer, or `init_adapter`'s weights
    (which keep their own rank and targets)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if init_adapter is None:
        return get_peft_model(
            model,
            LoraConfig(
                r=tcfg.lora_r,
                lora_alpha=tcfg.lora_alpha,
                lora_dropout=tcfg.lora_dropout,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
    path = check_adapter_dir(init_adapter)
    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=True)
    except Exception as exc:  # peft/safetensors raise many types on a broken or foreign folder
        raise AdapterError(
            f"could not start from adapter {path} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}); set training.start_from = "
            "'base' or repair the production adapter"
        ) from exc


def _batches(n: int, size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless batches of example indices, reshuffled every epoch."""
    order: list[int] = []
    while True:
        while len(order) < size:
            epoch = list(range(n))
            rng.shuffle(epoch)
            order += epoch
        yield order[:size]
        order = order[size:]


def _peak_memory_mb() -> tuple[float, float | None]:
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    acc = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return rss, acc


def _step_loss(
    model: Any,
    batch: list[EncodedExample],
    desirable: list[bool],
    tcfg: TrainingConfig,
    pad_id: int,
    device: str,
    pairs: list[tuple[EncodedExample, EncodedExample]],
) -> tuple[Any, int]:
    """The loss of one batch and the tokens it processed.

    SFT: mean negative log-likelihood over the desirable answers' tokens. KTO (method = 'kto')
    adds, per undesirable answer, weight * sigmoid(beta * (r - z0)) where r is the answer's
    summed log-ratio against the bare base (adapter disabled) and z0 the KTO reference point,
    estimated per batch as max(0, mean log-ratio of the batch's answers), detached (the
    published estimate of KL(policy || reference) on the batch). Bounded, so unlike
    unlikelihood it cannot blow up. `pairs` (chosen, rejected) add the DPO term
    pair_weight * -log sigmoid(dpo_beta * ((r_chosen) - (r_rejected))).
    """
    import torch
    import torch.nn.functional as F

    loss = torch.zeros((), device=device)
    tokens = 0
    good = [e for e, d in zip(batch, desirable, strict=True) if d]
    bad = [e for e, d in zip(batch, desirable, strict=True) if not d]

    def ratio(examples: list[EncodedExample]) -> tuple[Any, Any, int]:
        inputs = collate(examples, pad_id, device)
        logp, counts = token_logprobs(model, inputs)
        with torch.no_grad(), model.disable_adapter():
            ref, _ = token_logprobs(model, inputs)
        return logp, (logp - ref), int(inputs["attention_mask"].sum())

    if good:
        inputs = collate(good, pad_id, device)
        logits, labels = answer_forward(model, inputs)
        logp, counts = logprobs_of(logits, labels)
        loss = loss - logp.sum() / counts.sum().clamp(min=1)
        if tcfg.unlikelihood_weight > 0:
            loss = loss + tcfg.unlikelihood_weight * unlikelihood(logits, labels)
        tokens += int(inputs["attention_mask"].sum())
    if bad:
        _, r, n = ratio(bad)
        z0 = r.detach().mean().clamp(min=0)
        loss = loss + tcfg.kto_weight * torch.sigmoid(tcfg.kto_beta * (r - z0)).mean()
        tokens += n
    if pairs and tcfg.pair_weight > 0:
        _, r, n = ratio([c for c, _ in pairs] + [j for _, j in pairs])
        margin = r[: len(pairs)] - r[len(pairs) :]
        loss = loss + tcfg.pair_weight * -F.logsigmoid(tcfg.dpo_beta * margin).mean()
        tokens += n
    return loss, tokens


def step_autocast(tcfg: TrainingConfig, device: str) -> Any:
    """The context training steps run in: bf16 autocast on a CPU that does bf16 natively
    (`training.compute_dtype`), as the CUDA path computes its 4-bit layers in bf16; otherwise
    none (fp32 on the CPU, the quantization config's compute dtype on CUDA)."""
    import torch

    if device != "cpu" or not bf16_sampling(tcfg.compute_dtype):
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def steps_budget(tcfg: TrainingConfig, examples: int) -> tuple[int, StopReason]:
    """Optimiser steps a run may take on `examples` training examples, and the limit that
    sets it: max_steps, or max_epochs passes over the examples when that is fewer."""
    if tcfg.max_epochs > 0:
        by_epochs = max(1, math.ceil(tcfg.max_epochs * examples / tcfg.batch_size))
        if by_epochs < tcfg.max_steps:
            return by_epochs, "max_epochs"
    return tcfg.max_steps, "max_steps"


@dataclass(frozen=True)
class _Encoded:
    """A run's examples as token ids: what SFT/KTO steps draw from, the preference pairs, and
    the held-out 👍 answers early stopping reads."""

    train: list[EncodedExample]
    desirable: list[bool]
    synthetic: int
    pairs: list[tuple[EncodedExample, EncodedExample]]
    heldout: list[EncodedExample]
    anchors: list[Anchor] = field(default_factory=list)  # training.train.anchor


def _encode(
    tokenizer: Any, tcfg: TrainingConfig, data: LoadedDataset, examples: list[Example]
) -> _Encoded:
    pool = [e for e in examples if e.desirable or tcfg.method == "kto"]
    pairs: list[Pair] = [
        p
        for p in (preference_pairs(examples) if tcfg.pair_weight > 0 else [])
        if tcfg.synthetic_pairs or not (p.chosen.synthetic and p.rejected.synthetic)
    ]
    return _Encoded(
        train=encode_examples(tokenizer, pool, tcfg.max_seq_tokens),
        desirable=[e.desirable for e in pool],
        synthetic=sum(e.synthetic for e in pool),
        pairs=list(
            zip(
                encode_examples(tokenizer, [p.chosen for p in pairs], tcfg.max_seq_tokens),
                encode_examples(tokenizer, [p.rejected for p in pairs], tcfg.max_seq_tokens),
                strict=True,
            )
        ),
        heldout=encode_examples(
            tokenizer, [e for e in data.heldout if e.desirable], tcfg.max_seq_tokens
        ),
    )


class _Keeper:
    """Which weights a run saves, chosen at its held-out evaluations (step 0 = the start).

    Without taste-model targets the held-out 👍 loss is the objective: the weights of its lowest
    value are kept, and `patience` evaluations without a new lowest stop the run. With them
    (`slack` set) the loss only guards: what users like is a property of whole answers (length,
    shape, where they stop) that per-token loss on a few held-out 👍 answers barely sees, and
    measured under the brevity rater it never improved, so the run kept its starting weights and
    learnt nothing. The latest evaluated weights whose loss is at most `slack` above the starting
    loss are kept (never the start itself), and `patience` evaluations over that bound stop it;
    the taste gate then judges the answers.
    """

    def __init__(self, trainable: list[Any], initial: float | None, slack: float | None) -> None:
        self.trainable, self.initial, self.slack = trainable, initial, slack
        self.best_step, self.best_loss, self.misses = 0, initial, 0
        self.best_state = [p.detach().clone() for p in trainable]
        self.curve: list[tuple[int, float]] = [(0, initial)] if initial is not None else []

    def offer(self, step: int, loss: float) -> None:
        """The held-out loss after `step`: keep these weights if they are the best so far."""
        self.curve.append((step, loss))
        assert self.initial is not None and self.best_loss is not None
        if self.slack is not None:
            keep = loss <= self.initial + self.slack
        else:
            keep = loss < self.best_loss
        if keep:
            self.best_step, self.best_loss, self.misses = step, loss, 0
            self.best_state = [p.detach().clone() for p in self.trainable]
        else:
            self.misses += 1

    def restore(self, last_step: int) -> tuple[int, float | None]:
        """Put the kept weights back (the last ones when there was nothing to choose by)."""
        import torch

        if self.initial is None:
            return last_step, None
        with torch.no_grad():
            for param, saved in zip(self.trainable, self.best_state, strict=True):
                param.copy_(saved)
        return self.best_step, self.best_loss


@dataclass
class _Optimised:
    """What the optimisation loop did."""

    step: int = 0
    stop: StopReason | None = None
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    tokens: int = 0
    answer_tokens: int = 0
    train_s: float = 0.0
    anchor_kl: list[float] = field(default_factory=list)
    anchor_refreshes: int = 0


def _optimise(
    model: Any,
    enc: _Encoded,
    tcfg: TrainingConfig,
    where: tuple[int, str],
    keeper: _Keeper,
    heldout: Callable[[], float | None],
    progress: Callable[[TrainProgress], None] | None,
    started: float,
    total_steps: int,
    own_anchors: Callable[[], list[Anchor]] | None = None,
) -> _Optimised:
    """Optimiser steps until the step budget, the time budget or early stopping (`stop` says
    which, None for the step budget); the keeper sees every held-out evaluation. Every
    `anchor_refresh` steps the anchor pool becomes the base's answers plus `own_anchors()`,
    the adapter's own answers as they are then."""
    import torch

    pad_id, device = where
    run = _Optimised()
    trainable = keeper.trainable
    optimizer = torch.optim.AdamW(trainable, lr=tcfg.learning_rate, weight_decay=0.0)
    batches = _batches(len(enc.train), tcfg.batch_size, random.Random(tcfg.seed))
    pair_batches = (
        _batches(len(enc.pairs), max(1, tcfg.batch_size // 2), random.Random(tcfg.seed + 1))
        if enc.pairs
        else None
    )
    anchors = enc.anchors
    anchor_batches = (
        _batches(len(anchors), max(1, tcfg.batch_size // 2), random.Random(tcfg.seed + 2))
        if anchors
        else None
    )
    budget_s = tcfg.max_minutes * 60
    model.train()
    while run.step < total_steps:
        if time.monotonic() - started >= budget_s:
            run.stop = "time_budget"
            break
        refresh = tcfg.anchor_refresh
        if anchors and own_anchors and run.step and refresh and run.step % refresh == 0:
            anchors = [*enc.anchors, *own_anchors()]
            run.anchor_refreshes += 1
            anchor_batches = _batches(
                len(anchors), max(1, tcfg.batch_size // 2), random.Random(tcfg.seed + run.step)
            )
        t0 = time.perf_counter()
        idx = next(batches)
        pair_idx = next(pair_batches) if pair_batches else []
        with step_autocast(tcfg, device):
            loss, n = _step_loss(
                model,
                [enc.train[i] for i in idx],
                [enc.desirable[i] for i in idx],
                tcfg,
                pad_id,
                device,
                [enc.pairs[i] for i in pair_idx],
            )
            if anchor_batches:
                kl, anchor_tokens = anchor_loss(
                    model, [anchors[i] for i in next(anchor_batches)], pad_id, device
                )
                loss = loss + tcfg.anchor_weight * kl
                n += anchor_tokens
                run.anchor_kl.append(round(float(kl.detach()), 4))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        run.step += 1
        run.train_s += time.perf_counter() - t0
        run.tokens += n
        run.answer_tokens += sum(sum(t != -100 for t in enc.train[i].labels) for i in idx)
        loss_value = float(loss.detach())
        run.train_curve.append((run.step, loss_value))
        current = None
        if enc.heldout and (run.step % tcfg.eval_every == 0 or run.step == total_steps):
            current = heldout()
            assert current is not None
            keeper.offer(run.step, current)
        if progress:
            progress(
                TrainProgress(
                    run.step,
                    total_steps,
                    loss_value,
                    current,
                    time.monotonic() - started,
                    run.tokens,
                    run.tokens / max(run.train_s, 1e-9),
                )
            )
        if keeper.misses >= tcfg.patience:
            run.stop = "early_stopping"
            break
    if enc.heldout and keeper.curve[-1][0] != run.step:  # stopped between evaluations
        current = heldout()
        assert current is not None
        keeper.offer(run.step, current)
    return run


def train_adapter(
    cfg: Config,
    dataset_dir: Path,
    out_dir: Path,
    *,
    init_adapter: Path | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainReport:
    """Train an adapter on `dataset_dir` and write it to `out_dir` (which must not exist).

    Budget: stops after `training.max_steps` steps or `training.max_epochs` passes over the
    training examples, whichever comes first, at the first step boundary after
    `training.max_minutes` (counted from the call, model loading included), or when the held-out
    loss has not improved for `training.patience` evaluations; the weights of the best held-out
    evaluation are the ones saved (see _Keeper). The folder appears atomically:
    an interrupted run (crash, kill, Ctrl-C) leaves no `out_dir`.
    """
    import torch

    started = time.monotonic()
    tcfg = cfg.training
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise TrainingError(
            f"{out_dir} already exists: adapters are never overwritten; choose a new --out folder"
        )
    data = load_dataset(Path(dataset_dir), trainable=True)
    random.seed(tcfg.seed)
    torch.manual_seed(tcfg.seed)
    phases = Phases()
    with phases("taste"):
        taste = best_of_n(cfg, data, init_adapter)  # before the QLoRA base: one model at a time
    examples = [*data.train, *taste.examples]
    with phases("load"):
        base = load_base(cfg)
        # On the CPU the same NF4 weights dequantized once (bitsandbytes would dequantize every
        # weight on every pass); on CUDA the 4-bit kernels stay.
        model = attach_lora(dequantized_on_cpu(base), tcfg, init_adapter)
    tokenizer, device = base.tokenizer, base.device
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id)
    )

    enc = _encode(tokenizer, tcfg, data, examples)
    if tcfg.anchor_weight > 0:
        with phases("anchors"):
            anchors = cached_anchors(cfg, model, tokenizer, device)
        enc = dataclasses.replace(enc, anchors=anchors)
    heldout_enc = enc.heldout
    trainable = [p for p in model.parameters() if p.requires_grad]
    eval_batch = max(tcfg.batch_size, 8)

    def heldout() -> float | None:
        if not heldout_enc:
            return None
        with phases("heldout"), step_autocast(tcfg, device):  # the steps' own arithmetic
            scores = score_answers(
                model, heldout_enc, pad_id=pad_id, device=device, batch_size=eval_batch
            )
        return mean_nll(scores)

    initial = heldout()
    # With taste-model targets the held-out 👍 loss only guards (see _Keeper).
    slack = tcfg.taste_loss_slack if taste.examples else None
    keeper = _Keeper(trainable, initial, slack)
    total_steps, stop = steps_budget(tcfg, len(enc.train))

    def own_anchors() -> list[Anchor]:
        with phases("anchors"):
            return build_anchors(cfg, model, tokenizer, device, own=True)

    run = _optimise(
        model,
        enc,
        tcfg,
        (pad_id, device),
        keeper,
        heldout,
        progress,
        started,
        total_steps,
        own_anchors,
    )
    step, stop = run.step, run.stop or stop
    best_step, best_loss = keeper.restore(step)
    phases.add("steps", run.train_s)

    rss, acc = _peak_memory_mb()
    report = TrainReport(
        adapter_dir=str(out_dir.resolve()),
        dataset_id=data.dataset_id,
        method=tcfg.method,
        steps=step,
        stop_reason=stop,
        best_step=best_step,
        initial_heldout_loss=initial,
        best_heldout_loss=best_loss,
        train_examples=len(enc.train),
        synthetic_examples=enc.synthetic,
        pairs=len(enc.pairs),
        heldout_examples=len(heldout_enc),
        tokens=run.tokens,
        answer_tokens=run.answer_tokens,
        tokens_per_s=run.tokens / max(run.train_s, 1e-9),
        train_s=run.train_s,
        duration_s=time.monotonic() - started,
        peak_rss_mb=rss,
        peak_accelerator_mb=acc,
        train_loss=run.train_curve,
        heldout_loss=keeper.curve,
        anchor_prompts=len(enc.anchors),
        anchor_kl=run.anchor_kl,
        anchor_refreshes=run.anchor_refreshes,
        phases_s=phases.seconds,
    )
    counts = (len(enc.train), enc.synthetic, len(enc.pairs))
    made = train_config(cfg, base.source, init_adapter, data.dataset_id, counts, total_steps, step)
    write_adapter(model, out_dir, data, made, report, taste)
    return report
