"""Secret settings in YAML, with the real plug-ins: every credential field takes a reference
(``${NAME}``, ``{file: PATH}``), refuses a value written in place (unless
``router.allow_plaintext_secrets``), and the store keeps the reference."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from router.config import load_config_text, mapping_from_row, row_from_mapping
from router.errors import ConfigErrors
from router.secrets import SecretUrl

REFUSED = (
    "a secret must not be written in the configuration: write a reference instead, ${NAME} "
    "(an environment variable) or {file: /run/secrets/NAME}; or set "
    "router.allow_plaintext_secrets: true to store it as written"
)
URL_REFUSED = (
    "a URL must not hold its password in the configuration: write it as a reference, e.g. "
    "https://user:${PASSWORD}@host/..., or give the whole URL as ${NAME} (an environment "
    "variable) or {file: /run/secrets/NAME}; or set router.allow_plaintext_secrets: true"
)

CONFIG = """\
router:
  store: postgresql://router:{store_pw}@db/router
functions:
  local: {{invoker: python, handler: router.examples.hello:handler}}
  remote:
    invoker: http
    url: https://router:{invoke_pw}@lambda.example.com
    headers:
      X-Api-Key: {api_key}
      X-Tenant: acme
  aws:
    invoker: lambda
    aws_access_key_id: {aws_key_id}
    aws_secret_access_key: {aws_secret}
mappings:
  - name: orders
    function: local
    source:
      type: kafka
      bootstrap_servers: 127.0.0.1:9092
      topics: [orders]
      security_protocol: SASL_SSL
      sasl_mechanism: PLAIN
      sasl_plain_username: router
      sasl_plain_password: {kafka_pw}
      ssl_password: {ssl_pw}
    destination_config:
      on_failure: {{destination: "https://router:{hook_pw}@hooks.example.com/failed"}}
  - name: bucket
    function: local
    source:
      type: s3
      bucket: uploads
      aws_access_key_id: {aws_key_id}
      aws_secret_access_key: {aws_secret}
      aws_session_token: {aws_token}
    destination_config:
      on_failure:
        type: http
        url: https://hooks.example.com/failed
        headers: {{Authorization: {bearer}}}
"""

LITERALS = {
    "store_pw": "lit-store",
    "invoke_pw": "lit-invoke",
    "api_key": "lit-api-key",
    "aws_key_id": "lit-aws-key-id",
    "aws_secret": "lit-aws-secret",
    "kafka_pw": "lit-kafka",
    "ssl_pw": "lit-ssl",
    "hook_pw": "lit-hook",
    "aws_token": "lit-aws-token",
    "bearer": "Bearer lit-bearer",
}
REFERENCES = {
    "store_pw": "${STORE_PW}",
    "invoke_pw": "${INVOKE_PW}",
    "api_key": "'${API_KEY}'",
    "aws_key_id": "'${AWS_KEY_ID}'",
    "aws_secret": "{file: /run/secrets/aws_secret}",
    "kafka_pw": "'${KAFKA_PW}'",
    "ssl_pw": "{file: /run/secrets/ssl}",
    "hook_pw": "${HOOK_PW}",
    "aws_token": "'${AWS_TOKEN}'",
    "bearer": "{file: /run/secrets/bearer}",
}


def test_every_secret_written_in_place_is_refused_at_its_key() -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config_text(CONFIG.format(**LITERALS), "router.yaml")
    lines = str(info.value).splitlines()
    assert lines == [
        f"router.yaml:2: router.store: {URL_REFUSED}",
        f"router.yaml:7: functions.remote.url: {URL_REFUSED}",
        f"router.yaml:9: functions.remote.headers.X-Api-Key: {REFUSED}",
        f"router.yaml:13: functions.aws.aws_access_key_id: {REFUSED}",
        f"router.yaml:14: functions.aws.aws_secret_access_key: {REFUSED}",
        f"router.yaml:25: mappings[0].source.sasl_plain_password: {REFUSED}",
        f"router.yaml:26: mappings[0].source.ssl_password: {REFUSED}",
        f"router.yaml:34: mappings[1].source.aws_access_key_id: {REFUSED}",
        f"router.yaml:35: mappings[1].source.aws_secret_access_key: {REFUSED}",
        f"router.yaml:36: mappings[1].source.aws_session_token: {REFUSED}",
    ]
    for value in LITERALS.values():
        assert value not in str(info.value)
    # (A mapping whose source is refused has its destinations checked once the source is
    # right.)
    text = CONFIG.format(**{**REFERENCES, "hook_pw": "lit-hook", "bearer": "Bearer lit"})
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, "router.yaml")
    assert str(info.value).splitlines() == [
        f"router.yaml:28: mappings[0].destination_config.on_failure.destination: url: "
        f"{URL_REFUSED}",
        f"router.yaml:41: mappings[1].destination_config.on_failure.headers.Authorization: "
        f"{REFUSED}",
    ]


def test_references_are_accepted_and_stored_as_written() -> None:
    config = load_config_text(CONFIG.format(**REFERENCES), "router.yaml")
    assert config.settings.store == SecretUrl("postgresql://router:${STORE_PW}@db/router")
    orders, bucket = config.mappings
    source = row_from_mapping(orders).source_config
    assert source["sasl_plain_password"] == "${KAFKA_PW}"
    assert source["ssl_password"] == {"file": "/run/secrets/ssl"}
    destination = row_from_mapping(orders).destination_config
    assert destination == {
        "on_failure": {"destination": "https://router:${HOOK_PW}@hooks.example.com/failed"}
    }
    row = row_from_mapping(bucket)
    assert (row.source_config["aws_access_key_id"], row.source_config["aws_session_token"]) == (
        "${AWS_KEY_ID}",
        "${AWS_TOKEN}",
    )
    assert row.source_config["aws_secret_access_key"] == {"file": "/run/secrets/aws_secret"}
    assert row.destination_config is not None
    assert row.destination_config["on_failure"]["headers"] == {
        "Authorization": {"file": "/run/secrets/bearer"}
    }
    # A stored row reads back to the same mapping, references and all.
    assert mapping_from_row(row).source == bucket.source


def test_allow_plaintext_secrets_stores_them_as_written() -> None:
    text = CONFIG.format(**LITERALS).replace(
        "router:\n", "router:\n  allow_plaintext_secrets: true\n"
    )
    config = load_config_text(text, "router.yaml")
    orders, bucket = config.mappings
    assert row_from_mapping(orders).source_config["sasl_plain_password"] == "lit-kafka"
    assert row_from_mapping(bucket).source_config["aws_secret_access_key"] == "lit-aws-secret"
    assert "lit-" not in repr(orders) + repr(bucket) + repr(config.functions)


def test_resolving_names_the_reference_and_where_it_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("STORE_PW", "INVOKE_PW", "API_KEY", "AWS_KEY_ID", "KAFKA_PW", "HOOK_PW"):
        monkeypatch.setenv(name, f"value-of-{name}")
    monkeypatch.delenv("AWS_TOKEN", raising=False)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("aws_secret", "ssl"):
        (secrets / name).write_text(f"file-{name}\n")
    text = CONFIG.format(**REFERENCES).replace("/run/secrets/", f"{secrets}/")
    load_config_text(text, "router.yaml")  # only the form is checked
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, "router.yaml", resolve=True)
    assert str(info.value).splitlines() == [
        "router.yaml:36: mappings[1].source.aws_session_token: ${AWS_TOKEN}: the environment "
        "variable AWS_TOKEN is not set",
    ]
    monkeypatch.setenv("AWS_TOKEN", "value-of-AWS_TOKEN")
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, "router.yaml", resolve=True)
    assert str(info.value).splitlines() == [
        f"router.yaml:41: mappings[1].destination_config.on_failure.headers.Authorization: "
        f"{{file: {secrets}/bearer}}: cannot read the file: No such file or directory",
    ]
    (secrets / "bearer").write_text("Bearer from-file")
    config = load_config_text(text, "router.yaml", resolve=True)
    assert config.settings.store is not None
    assert config.settings.store.reveal() == "postgresql://router:value-of-STORE_PW@db/router"
    remote = config.functions["remote"].settings
    assert remote.model_dump(mode="json")["url"] == "https://router:${INVOKE_PW}@lambda.example.com"
    orders, bucket = config.mappings
    kafka = orders.source.settings.client_kwargs()  # type: ignore[attr-defined]
    assert kafka["sasl_plain_password"] == "value-of-KAFKA_PW"
    assert bucket.on_failure is not None
    headers = bucket.on_failure.settings.headers  # type: ignore[attr-defined]
    assert headers["Authorization"].reveal() == "Bearer from-file"


def test_a_stored_row_with_references_is_resolved_when_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_config_text(CONFIG.format(**REFERENCES), "router.yaml")
    row = row_from_mapping(config.mappings[1])
    row.origin = "sql"  # as an operator would insert it
    row.source_config["aws_secret_access_key"] = "${SQL_SECRET}"
    row.destination_config = None
    monkeypatch.delenv("SQL_SECRET", raising=False)
    monkeypatch.setenv("AWS_KEY_ID", "key-id")
    monkeypatch.setenv("AWS_TOKEN", "token")
    mapping_from_row(row)  # form only: `mappings show`, `apply`
    with pytest.raises(ConfigErrors) as info:
        mapping_from_row(row, resolve=True)
    assert str(info.value).startswith(
        "event_source_mappings[name=bucket].source_config.aws_secret_access_key: "
        "${SQL_SECRET}: the environment variable SQL_SECRET is not set"
    )
    monkeypatch.setenv("SQL_SECRET", "sql-secret")
    mapping = mapping_from_row(row, resolve=True)
    secret = mapping.source.settings.aws_secret_access_key  # type: ignore[attr-defined]
    assert secret.reveal() == "sql-secret"


def test_schema_offers_the_reference_forms() -> None:
    from router.config import json_schema

    text = textwrap.shorten(str(json_schema()), 10_000_000)
    assert "'file'" in text
