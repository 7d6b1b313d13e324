"""Config loading: one fixture directory per bad config, each listing the problems it must report."""

from __future__ import annotations

from pathlib import Path

import pytest

from ensemble.config import parse_duration
from ensemble.config_loader import load_config
from ensemble.errors import ConfigError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"
BAD = sorted(d.name for d in FIXTURES.iterdir() if (d / "expected.txt").exists())


@pytest.mark.parametrize("name", BAD)
def test_bad_config_reports_every_problem(name: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(FIXTURES / name / "ensemble.yaml", env={})
    report = "\n".join(e.value.problems)
    for expected in (FIXTURES / name / "expected.txt").read_text().splitlines():
        assert expected in report, f"missing {expected!r} in:\n{report}"
    for problem in e.value.problems:
        assert problem.split(": ")[0].endswith((".yaml", ".yml")), problem  # every line names its file


def test_shipped_config_is_valid_without_any_environment() -> None:
    config = load_config("config/ensemble.yaml", env={})
    assert config.server.port == 5180
    assert config.server.busy_poll == 0.001
    assert {p.name for p in config.providers} == {
        "anthropic",
        "openai",
        "gemini",
        "xai",
        "openrouter",
        "mock",
    }
    assert all(not e.api_key for p in config.providers for e in p.endpoints)


def test_the_provider_examples_are_valid_config(tmp_path: Path) -> None:
    """config/examples/providers/*.yaml (OpenAI-compatible APIs) drop into providers/ as they are."""
    examples = sorted(Path("config/examples/providers").glob("*.yaml"))
    assert {p.stem for p in examples} >= {"mistral", "deepseek", "groq", "together"}
    (tmp_path / "providers").mkdir()
    (tmp_path / "ensemble.yaml").write_text("{}\n")
    for example in examples:
        (tmp_path / "providers" / example.name).write_text(example.read_text())
    config = load_config(tmp_path / "ensemble.yaml", env={})
    assert sorted(p.name for p in config.providers) == sorted(p.stem for p in examples)
    assert all(p.type == "openai_compatible" and p.base_url.startswith("https://") for p in config.providers)


def test_env_expansion_defaults_and_overrides() -> None:
    env = {"TEST_HOST": "10.0.0.1", "TEST_OPENAI_KEY": "sk-from-env", "REDIS_ADDRESS": "redis:6379"}
    config = load_config(FIXTURES / "env_expansion" / "ensemble.yaml", env=env)
    assert config.server.port == 6001 and config.server.host == "10.0.0.1"
    assert config.redis.address == "redis:6379"  # the environment overrides the file
    (provider,) = config.providers
    assert [e.api_key for e in provider.endpoints] == ["sk-from-env", "fallback-key"]
    assert provider.base_url == "https://api.openai.com"


@pytest.mark.parametrize(
    ("env", "host", "log_format"),
    [
        ({}, "127.0.0.1", "text"),  # development is the default environment
        ({"ENSEMBLE_ENVIRONMENT": "development"}, "127.0.0.1", "text"),
        ({"ENSEMBLE_ENVIRONMENT": "staging"}, "0.0.0.0", "json"),
        ({"ENSEMBLE_ENVIRONMENT": "production"}, "0.0.0.0", "json"),
        ({"ENSEMBLE_HOST": "0.0.0.0"}, "0.0.0.0", "text"),  # the shipped file reads ENSEMBLE_HOST
        ({"ENSEMBLE_ENVIRONMENT": "production", "ENSEMBLE_HOST": "10.1.2.3"}, "10.1.2.3", "json"),
    ],
)
def test_shipped_config_listens_and_logs_by_environment(
    env: dict[str, str], host: str, log_format: str
) -> None:
    config = load_config("config/ensemble.yaml", env=env)
    assert (config.server.host, config.logging.format) == (host, log_format)


@pytest.mark.parametrize("environment", ["development", "production"])
def test_an_explicit_host_and_log_format_win_over_the_environment(tmp_path: Path, environment: str) -> None:
    (tmp_path / "ensemble.yaml").write_text("server: {host: 192.0.2.7}\nlogging: {format: json}\n")
    config = load_config(tmp_path / "ensemble.yaml", env={"ENSEMBLE_ENVIRONMENT": environment})
    assert (config.server.host, config.logging.format) == ("192.0.2.7", "json")
    (tmp_path / "ensemble.yaml").write_text("logging: {format: text}\n")  # host unset: by environment
    config = load_config(tmp_path / "ensemble.yaml", env={"ENSEMBLE_ENVIRONMENT": environment})
    assert config.server.host == ("127.0.0.1" if environment == "development" else "0.0.0.0")
    assert config.logging.format == "text"


def test_missing_file_is_reported() -> None:
    with pytest.raises(ConfigError) as e:
        load_config("/nonexistent/ensemble.yaml", env={})
    assert e.value.problems == ["/nonexistent/ensemble.yaml: file not found"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("50ms", 0.05), ("1s", 1), ("2m", 120), ("1h", 3600), ("1m30s", 90), ("0", 0), (5, 5), ("1.5s", 1.5)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1x", "s", "-1s", "1 s", True, None, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
