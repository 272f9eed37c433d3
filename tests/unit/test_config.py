"""Config: update onto the example, renamed keys, environment overrides, one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from bot.core.config import example_path, generate_tokens, load_config
from bot.core.errors import ConfigError

TOKENS = "appservice:\n  as_token: aaaaaaaa\n  hs_token: hhhhhhhh\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_example_loads_once_tokens_are_set(tmp_path: Path) -> None:
    path = write(tmp_path, example_path().read_text())
    with pytest.raises(ConfigError, match=r"appservice.as_token: still the example placeholder"):
        load_config(path, environ={})
    assert generate_tokens(path)
    config = load_config(path, environ={})
    assert config.bot_user_id == "@doryo:localhost"
    assert len(config.appservice.as_token.get_secret_value()) > 30
    assert not generate_tokens(path)  # tokens stay once generated


def test_missing_keys_appear_with_their_comments(tmp_path: Path) -> None:
    path = write(tmp_path, "# mine\n" + TOKENS + "homeserver:\n  domain: example.org\n")
    config = load_config(path, environ={})
    assert config.homeserver.domain == "example.org"
    assert config.appservice.port == 29333  # from the example
    updated = path.read_text()
    assert "# Where the transaction receiver" in updated  # the example's comment came along
    assert "domain: example.org" in updated


def test_renamed_keys_move_to_their_new_name(tmp_path: Path) -> None:
    path = write(tmp_path, TOKENS + "  bot_username: helper\nhomeserver:\n  server_name: ex.org\n")
    config = load_config(path, environ={})
    assert config.appservice.bot_localpart == "helper"
    assert config.homeserver.domain == "ex.org"
    updated = path.read_text()
    assert "bot_username" not in updated and "bot_localpart: helper" in updated


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, TOKENS + "  prot: 8080\n")
    with pytest.raises(
        ConfigError, match=r"appservice\.prot: unknown key \(did you mean appservice\.port\?\)"
    ):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("yaml", "key"),
    [
        ("  port: 70000\n", "appservice.port"),
        ("  id: 'has spaces'\n", "appservice.id"),
        ("homeserver:\n  address: ftp://nope\n", "homeserver.address"),
        ("database:\n  url: mysql://x\n", "database.url"),
        ("llm:\n  providers:\n    x: {kind: azure}\n", "llm.providers.x.kind"),
        ("llm:\n  default_model: no-slash\n", "llm.default_model"),
        ("bot:\n  ignore_users: ['(']\n", "bot.ignore_users"),
        ("logging:\n  level: LOUD\n", "logging.level"),
        ("bot: [1, 2]\n", "bot"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, yaml: str, key: str) -> None:
    path = write(tmp_path, TOKENS + yaml)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value).startswith(f"{key}:"), str(caught.value)


def test_environment_overrides_and_is_not_written(tmp_path: Path) -> None:
    path = write(tmp_path, TOKENS)
    environ = {
        "DORYO_APPSERVICE__AS_TOKEN": "from-env",
        "DORYO_APPSERVICE__PORT": "31000",
        "DORYO_LLM__PROVIDERS__LOCAL__API_KEY": "sk-secret",
        "DORYO_UNRELATED": "ignored",
    }
    config = load_config(path, environ=environ)
    assert config.appservice.as_token.get_secret_value() == "from-env"
    assert config.appservice.port == 31000
    assert config.llm.providers["local"].api_key.get_secret_value() == "sk-secret"
    assert "from-env" not in path.read_text() and "sk-secret" not in path.read_text()
    assert "sk-secret" not in repr(config)  # secrets never show in logs or reprs


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "appservice: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, environ={})


def test_cli_exits_2_with_one_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, TOKENS + "  port: 0\n")
    assert main(["migrate", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "appservice.port: Input should be greater than or equal to 1" in err
    assert "Traceback" not in err


def test_cli_registration_writes_tokens_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, example_path().read_text())
    output = tmp_path / "registration.yaml"
    assert main(["registration", "-c", str(path), "-o", str(output)]) == 0
    registration = output.read_text()
    config = load_config(path, environ={})
    assert config.appservice.hs_token.get_secret_value() in registration
    assert "receive_ephemeral: true" in registration
    assert "rate_limited: false" in registration
    assert "exclusive: true" in registration


def test_the_redis_url_is_a_secret() -> None:
    from bot.core.config import config_from_overrides

    config = config_from_overrides(
        {
            "appservice": {"as_token": "a" * 12, "hs_token": "h" * 12},
            "redis": {"url": "redis://:hunter2@cache.internal:6380/1"},
        }
    )
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.redis)
    assert config.redis.where == "redis://cache.internal:6380/1"
    assert config.redis.url.get_secret_value().startswith("redis://:hunter2@")
    with pytest.raises(ConfigError, match="redis.url"):
        config_from_overrides(
            {
                "appservice": {"as_token": "a" * 12, "hs_token": "h" * 12},
                "redis": {"url": "http://cache.internal"},
            }
        )


def test_encryption_needs_a_pickle_key_and_a_long_enough_seed() -> None:
    import pytest as _pytest

    from bot.core.config import EncryptionConfig

    assert not EncryptionConfig().enabled
    with _pytest.raises(ValueError, match="pickle_key"):
        EncryptionConfig(enabled=True)
    with _pytest.raises(ValueError, match="cross_signing_seed"):
        EncryptionConfig(enabled=True, pickle_key="k" * 16, cross_signing_seed="short")
    assert EncryptionConfig(enabled=True, pickle_key="k" * 16).key_wait == 10


def test_cross_signing_keys_follow_the_seed() -> None:
    from bot.encryption.machine import cross_signing_seeds

    one = cross_signing_seeds("s" * 32)
    assert one == cross_signing_seeds("s" * 32)  # the same keys on any machine
    assert one != cross_signing_seeds("t" * 32)
    assert len({one.master_key, one.self_signing_key, one.user_signing_key}) == 3
    assert all(len(seed) == 32 for seed in one)
