"""Secrets never print: the Secret type, redaction of URLs and key=value pairs, and the log
filter that applies it to every line."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import orjson
import pytest
from pydantic import BaseModel

from router import logs
from router.secrets import (
    Secret,
    SecretError,
    SecretUrl,
    is_credential_header,
    plain_headers,
    redact,
    redact_value,
    secret_policy,
)


class _Settings(BaseModel):
    password: Secret


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://router:s3cret@db:5432/r", "postgresql://router:***@db:5432/r"),
        ("kafka://u:p@h:9092/t", "kafka://u:***@h:9092/t"),
        ("https://h/x?X-Amz-Signature=abcd&a=1", "https://h/x?X-Amz-Signature=***&a=1"),
        ("token=abc other", "token=*** other"),
        ("no secrets here", "no secrets here"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_secret_is_hidden_in_repr_str_and_model_dump() -> None:
    settings = _Settings(password="hunter2")  # type: ignore[arg-type]
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.password)
    assert settings.password.reveal() == "hunter2"
    assert settings.model_dump_json() == '{"password":"hunter2"}'  # JSON for the store only


def test_log_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("json", "INFO")
    try:
        logging.getLogger("router.test").warning(
            "cannot reach %s", "postgresql://router:s3cret@db/r"
        )
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        logging.getLogger().handlers.clear()
    entry = orjson.loads(line)
    assert entry["message"] == "cannot reach postgresql://router:***@db/r"
    assert entry["level"] == "warning"


# -- references ---------------------------------------------------------------------------


class _Url(BaseModel):
    url: SecretUrl


def test_env_and_file_references_are_stored_as_written_and_resolved_on_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROUTER_TEST_PW", "from-env")
    (tmp_path / "pw").write_text("from-file\n")  # as secrets are mounted: one trailing newline
    env = _Settings.model_validate({"password": "${ROUTER_TEST_PW}"})
    in_file = _Settings.model_validate({"password": {"file": str(tmp_path / "pw")}})
    assert env.model_dump_json() == '{"password":"${ROUTER_TEST_PW}"}'
    assert in_file.model_dump(mode="json") == {"password": {"file": str(tmp_path / "pw")}}
    assert (env.password.reveal(), in_file.password.reveal()) == ("from-env", "from-file")
    assert "from-env" not in repr(env) + str(env.password)
    assert repr(env.password) == "Secret('${ROUTER_TEST_PW}')"
    # Equal references are equal settings, whatever the variable holds now.
    assert env == _Settings.model_validate({"password": "${ROUTER_TEST_PW}"})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("${NOT-A-NAME}", "not a valid reference: write ${NAME}"),
        ({"file": ""}, "a file reference is {file: /path/to/secret} and nothing else"),
        ({"file": "/x", "mode": 1}, "a file reference is {file: /path/to/secret} and nothing"),
        ({"path": "/x"}, "must be a string, or a reference"),
    ],
)
def test_malformed_references(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        _Settings.model_validate({"password": value})


def test_unreadable_references_name_the_reference(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ROUTER_TEST_UNSET", raising=False)
    monkeypatch.setenv("ROUTER_TEST_EMPTY", "")
    (tmp_path / "empty").write_text("\n")
    cases = {
        "${ROUTER_TEST_UNSET}": "${ROUTER_TEST_UNSET}: the environment variable "
        "ROUTER_TEST_UNSET is not set",
        "${ROUTER_TEST_EMPTY}": "${ROUTER_TEST_EMPTY}: the environment variable "
        "ROUTER_TEST_EMPTY is empty",
    }
    for value, message in cases.items():
        secret = _Settings.model_validate({"password": value}).password
        with pytest.raises(SecretError) as info:
            secret.reveal()
        assert info.value.message == message
    missing = tmp_path / "missing"
    for path, message in (
        (missing, f"{{file: {missing}}}: cannot read the file: No such file or directory"),
        (tmp_path / "empty", f"{{file: {tmp_path / 'empty'}}}: the file is empty"),
    ):
        secret = _Settings.model_validate({"password": {"file": str(path)}}).password
        with pytest.raises(SecretError) as info:
            secret.reveal()
        assert info.value.message == message


def test_policy_refuses_literals_and_resolves_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTER_TEST_UNSET", raising=False)
    with secret_policy(allow_plaintext=False, resolve=False):
        with pytest.raises(ValueError, match=r"must not be written in the configuration"):
            _Settings.model_validate({"password": "hunter2"})
        _Settings.model_validate({"password": "${ROUTER_TEST_UNSET}"})  # only its form
    with (
        secret_policy(allow_plaintext=True, resolve=True),
        pytest.raises(ValueError, match=r"ROUTER_TEST_UNSET is not set"),
    ):
        _Settings.model_validate({"password": "${ROUTER_TEST_UNSET}"})
    assert _Settings.model_validate({"password": "hunter2"}).password.reveal() == "hunter2"


def test_url_passwords(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROUTER_TEST_PW", "p@ss/w:rd")
    templated = _Url.model_validate({"url": "https://router:${ROUTER_TEST_PW}@h:8/x"})
    assert templated.url.reveal() == "https://router:p%40ss%2Fw%3Ard@h:8/x"  # quoted
    assert templated.model_dump_json() == '{"url":"https://router:${ROUTER_TEST_PW}@h:8/x"}'
    assert str(templated.url) == "https://router:${ROUTER_TEST_PW}@h:8/x"
    (tmp_path / "url").write_text("postgresql://router:s3cret@db/router\n")
    whole = _Url.model_validate({"url": {"file": str(tmp_path / "url")}})
    assert whole.url.text is None  # not resolved yet
    assert whole.url.reveal() == "postgresql://router:s3cret@db/router"
    assert "s3cret" not in repr(whole) + str(whole.url)
    with secret_policy(allow_plaintext=False, resolve=False):
        with pytest.raises(ValueError, match=r"must not hold its password"):
            _Url.model_validate({"url": "https://router:s3cret@h/x"})
        _Url.model_validate({"url": "https://h/x"})  # no password: nothing to hide
        _Url.model_validate({"url": "https://router@h/x"})
    literal = _Url.model_validate({"url": "https://router:s3cret@h/x"})
    assert "s3cret" not in repr(literal)
    assert literal.url.reveal() == "https://router:s3cret@h/x"


def test_headers_without_credentials_may_be_written_in_place() -> None:
    assert is_credential_header("Authorization") and is_credential_header("X-Api-Key")
    assert not is_credential_header("X-Tenant")
    with secret_policy(allow_plaintext=False, resolve=False):
        assert plain_headers({"X-Tenant": "acme"})["X-Tenant"].reveal() == "acme"
        assert plain_headers({"Authorization": "Bearer x"}) == {"Authorization": "Bearer x"}


def test_references_are_shown_values_are_not() -> None:
    stored = {
        "sasl_plain_password": "${KAFKA_PASSWORD}",
        "aws_secret_access_key": {"file": "/run/secrets/aws"},
        "ssl_password": "written-in-place",
        "headers": {"Authorization": "Bearer abc", "X-Tenant": "acme"},
        "url": "https://router:hunter2@h/x",
        "other": "https://router:${HOOK_PASSWORD}@h/x",
    }
    assert redact_value(stored) == {
        "sasl_plain_password": "${KAFKA_PASSWORD}",
        "aws_secret_access_key": {"file": "/run/secrets/aws"},
        "ssl_password": "***",
        "headers": {"Authorization": "***", "X-Tenant": "acme"},
        "url": "https://router:***@h/x",
        "other": "https://router:${HOOK_PASSWORD}@h/x",
    }
