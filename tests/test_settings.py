"""Settings from the environment: one parser, for the CLI and for the server processes started without it."""

from __future__ import annotations

import pytest

from rerankd import DEFAULT_MODEL, ErrorKind, RerankdError, Settings
from rerankd.settings import SERVE_SETTINGS, SETTING_NAMES, env_name, parse_env_value, settings_from_env


@pytest.mark.parametrize("raw", ["1", "true", "T", "yes", "Y", "on", " ON "])
def test_flags_read_clicks_true_spellings(raw: str) -> None:
    assert parse_env_value("json_logs", raw) is True


@pytest.mark.parametrize("raw", ["0", "false", "F", "no", "N", "off", "Off"])
def test_flags_read_clicks_false_spellings(raw: str) -> None:
    assert parse_env_value("json_logs", raw) is False


def test_each_field_reads_as_its_type() -> None:
    assert parse_env_value("max_length", "256") == 256
    assert parse_env_value("max_batch_tokens", "2048") == 2048  # int | None
    assert parse_env_value("request_timeout", "2.5") == 2.5
    assert parse_env_value("host", "0.0.0.0") == "0.0.0.0"
    assert parse_env_value("cache_url", "redis://r:6379/0") == "redis://r:6379/0"  # str | None
    assert parse_env_value("api_key", " k1, ,k2 ,") == ("k1", "k2")


@pytest.mark.parametrize(("name", "raw"), [("max_length", "long"), ("drain_timeout", "soon"), ("no_cache", "maybe")])
def test_a_value_of_the_wrong_type_names_its_variable(name: str, raw: str) -> None:
    with pytest.raises(RerankdError, match=env_name(name)) as caught:
        parse_env_value(name, raw)
    assert caught.value.kind is ErrorKind.INVALID_INPUT and repr(raw) in caught.value.message


def test_every_field_has_a_rule() -> None:
    for name in SETTING_NAMES:
        parse_env_value(name, "1")  # a value of every type; a field of a new type raises TypeError


def test_serve_settings_come_from_the_environment_over_the_defaults() -> None:
    env = {"RERANKD_MODEL": "a=/m/a, /m/b", "RERANKD_WORKERS": "2", "RERANKD_NO_CACHE": "yes",
           "RERANKD_CORS_ORIGIN": "*", "RERANKD_DEVICE": "cuda:1", "RERANKD_THREADS": "", "OTHER": "x"}
    models, settings = settings_from_env(env)
    assert models == ("a=/m/a", "/m/b")
    assert settings == Settings(workers=2, no_cache=True, cors_origin=("*",), device="cuda:1")
    assert settings.model == DEFAULT_MODEL  # serve names its models in the list
    assert settings_from_env({}) == ((DEFAULT_MODEL,), Settings())
    assert "model" not in SERVE_SETTINGS


def test_settings_check_what_the_environment_gives_them() -> None:
    with pytest.raises(RerankdError, match="truncation must be one of"):
        settings_from_env({"RERANKD_TRUNCATION": "cut"})
