"""Every setting of the product: frozen dataclasses loaded from config.toml and validated on load.

Each field carries its help text and bounds in `metadata`; `load_config` reports every problem
in one `ConfigError` (unknown keys, wrong types, out-of-range values) so an operator fixes the
file in one pass. Secrets never live here: fields ending in `_env` name the environment variable
that holds them. The sections are declared in config/serving.py, config/learning.py and
config/rollout.py, each field through `config.fields.setting`; this module holds the whole
`Config` and its loading.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from config.fields import setting
from config.learning import CurationConfig, TasteConfig, TrainingConfig, ValidationConfig
from config.rollout import RolloutConfig, ScheduleConfig
from config.serving import ModelConfig, RetrievalConfig, ServerConfig
from errors import ConfigError

__all__ = [
    "Config",
    "CurationConfig",
    "ModelConfig",
    "RetrievalConfig",
    "RolloutConfig",
    "ScheduleConfig",
    "ServerConfig",
    "TasteConfig",
    "TrainingConfig",
    "ValidationConfig",
    "build_config",
    "documented_settings",
    "dump_config",
    "load_config",
    "setting",
    "with_overrides",
]


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
