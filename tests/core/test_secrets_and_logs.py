"""Secrets never print: the Secret type, redaction of URLs and key=value pairs, and the log
filter that applies it to every line."""

from __future__ import annotations

import logging

import orjson
import pytest
from pydantic import BaseModel

from router import logs
from router.secrets import Secret, redact


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
