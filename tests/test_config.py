"""config.toml loads, documents every setting, and bad settings are all reported at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import config
from errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_the_shipped_config_loads_with_the_defaults():
    cfg = config.load_config(REPO / "config.toml")
    assert cfg == config.build_config({}, root=REPO)


def test_every_setting_is_documented_in_config_toml():
    text = (REPO / "config.toml").read_text()
    section = None
    documented: set[str] = set()
    previous = ""
    for line in text.splitlines():
        if m := re.match(r"^\[(\w+)\]$", line):
            section = m.group(1)
        elif (m := re.match(r"^(\w+) = ", line)) and section:
            assert previous.startswith("#"), f"{section}.{m.group(1)} has no comment above it"
            documented.add(f"{section}.{m.group(1)}")
        previous = line
    assert documented == set(config.documented_settings())
    assert all(help.strip() for help in config.documented_settings().values())


def test_every_problem_is_listed_in_one_error(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text(
        '[server]\nport = 0\nbogus = 1\n[model]\nquantization = "q3"\n'
        'temperature = "hot"\n[nope]\nx = 1\n[rollout]\nsteps = [0.5, 0.2]\n'
    )
    with pytest.raises(ConfigError) as err:
        config.load_config(bad)
    message = str(err.value)
    for fragment in (
        "server.port = 0",
        "server.bogus: unknown setting",
        "model.quantization",
        "model.temperature = 'hot'",
        "[nope]: unknown section",
    ):
        assert fragment in message
    assert message.startswith(f"{bad} has 5 problem(s)")


def test_cross_field_problems_are_reported(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text(
        "[retrieval]\nchunk_tokens = 50\nchunk_overlap = 60\n[rollout]\nsteps = [0.5, 0.2]\n"
    )
    with pytest.raises(ConfigError) as err:
        config.load_config(bad)
    assert "chunk_overlap" in str(err.value) and "rollout.steps" in str(err.value)


def test_unreadable_and_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nport = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load_config(broken)


def test_relative_data_dir_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "c.toml").write_text('[server]\ndata_dir = "state"\n')
    assert config.load_config(tmp_path / "c.toml").data_dir == tmp_path / "state"


def test_secrets_come_from_the_environment(monkeypatch, cfg):
    monkeypatch.setenv(cfg.server.admin_token_env, "s3cret")
    assert cfg.secret(cfg.server.admin_token_env) == "s3cret"
    monkeypatch.delenv(cfg.server.admin_token_env)
    assert cfg.secret(cfg.server.admin_token_env) is None
