"""Settings of the learning loop's stages: curation, training, validation and the taste model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.fields import setting


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
    max_steps: int = setting(30, "Most optimiser steps per run.", min=1, max=1_000_000)
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
    anchor_weight: float = setting(
        2.0,
        "Weight of the knowledge anchor (training.train.anchor): KL from the bare base's token "
        "distribution on the opening of its greedy answers to 48 general prompts, so a learnt "
        "taste does not cost what the model knows; 0 = off.",
        min=0.0,
        max=100.0,
    )
    anchor_tokens: int = setting(
        64,
        "Tokens of each of the base's greedy anchor answers the anchor holds it to (the end of "
        "an answer never: where to stop stays the users' to teach).",
        min=1,
        max=512,
    )
    anchor_refresh: int = setting(
        0,
        "Steps between refreshes of the on-policy anchors: the adapter's own greedy openings to "
        "the anchor prompts, held to the base's next-token distribution (where a learnt opening "
        "leads off the base's path, the base says what comes next); they join the base's own "
        "answers in the anchor pool. 0 = the base's answers only.",
        min=0,
        max=100_000,
    )
    compute_dtype: Literal["auto", "bf16", "fp32"] = setting(
        "auto",
        "On the CPU, the arithmetic of training steps, which read the NF4 base dequantized once "
        "(the same weights: bitsandbytes would dequantize them on every pass): bf16 autocast "
        "where the CPU does bf16 natively, as the CUDA path computes its 4-bit layers, and fp32 "
        "elsewhere; auto picks by the CPU. Measured with AVX-512 BF16, steps alternated in one "
        "process: 3.05 s a step on NF4, 2.96 dequantized, 2.28 dequantized in bf16 (with two "
        "anchor answers: 5.63, 4.47, 3.84).",
        choices=("auto", "bf16", "fp32"),
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
    max_knowledge_loss: int = setting(
        2,
        "Most knowledge prompts (training.validate.knowledge: 32 fact and instruction "
        "prompts, greedy) the candidate may answer right fewer times than the bare base; a "
        "larger loss rejects it when a sign test on the changed answers says it is not chance "
        "(p < 0.05).",
        min=0,
        max=32,
    )
    knowledge_loss_cap: int = setting(
        4,
        "Most knowledge prompts the candidate may answer right fewer times than the bare base, "
        "whatever the sign test says (with 32 prompts it called 6 lost and 1 gained chance, "
        "p 0.062).",
        min=0,
        max=32,
    )
    max_repetition: float = setting(
        0.5, "Largest share of repeated 4-grams in a sample answer.", min=0.0, max=1.0
    )
    sample_max_new_tokens: int = setting(48, "Tokens generated per sanity prompt.", min=1, max=2048)
    min_taste_gain: float = setting(
        0.05,
        "The candidate's taste-model predicted 👍 rate on "
        "held-out real questions (answers sampled by both arms with "
        "the same seeds) must beat production's by this much, and the "
        "paired 95% interval of the gain must lie above 0.",
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
    permutations: int = setting(
        99,
        "Shuffles of the votes the whole cross-validation is rerun on to test its AUC "
        "(0: no test); coin-flip votes reached an AUC of 0.67 on 108 answers.",
        min=0,
        max=10_000,
    )
    max_p_value: float = setting(
        0.01,
        "Largest permutation p-value of the cross-validated AUC at which the taste model is "
        "used: the share of shuffled votes whose AUC reaches the real one.",
        min=0.0,
        max=1.0,
    )
    candidates: int = setting(
        4,
        "Answers sampled per training question (best-of-n); below 2 nothing is distilled.",
        min=0,
        max=32,
    )
    max_questions: int = setting(
        64, "Most recent training questions given candidates.", min=0, max=100_000
    )
    max_new_tokens: int = setting(96, "Longest candidate answer, in tokens.", min=8, max=2048)
    temperature: float = setting(
        0.6,
        "Sampling temperature of the candidates: enough diversity to choose from, and cool enough "
        "that fewer of them say wrong facts.",
        min=0.05,
        max=2.0,
    )
    batch_size: int = setting(64, "Answers sampled per batch (one decode loop).", min=1, max=1024)
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
    demonstrations: int = setting(
        0,
        "Candidates drawn again for a question none of whose samples the taste model likes "
        "(P(👍) below min_best_score), each with two liked real answers to other questions shown "
        "as earlier turns (training.taste.demonstrations): a form the model never samples, such "
        "as a closing summary line, it copies from examples (8 questions: 0 of 16 plain samples "
        "a summary_line user likes, 12 of 16 with two liked answers shown); 0 = off. Off by "
        "default: under summary_line (200 conversations, 25% of 👎 voters correcting) 2 gained "
        "+21.5 points (95% CI +15.8..+27.2) against +19.5 (+14.0..+25.0) with 0, inside the "
        "noise, for 420 s of sampling instead of 248.",
        min=0,
        max=32,
    )
    unsure_share: float = setting(
        0.5,
        "Share of a question's candidates, those the model was least sure of (mean token "
        "log-probability), left out when its best is chosen: sampled at 0.9, a small model "
        "says things it would not say greedily ('The capital of Germany is Germany.'), and "
        "a taste for form alone would teach them.",
        min=0.0,
        max=0.9,
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
