"""``router.ingress`` in the YAML: defaults, credentials by reference, located errors."""

from __future__ import annotations

import pytest

from router.config import load_config_text
from router.errors import ConfigError

FUNCTIONS = """
functions:
  orders: {invoker: python, handler: router.examples.hello:handler}
"""


def test_absent_means_no_listener() -> None:
    assert load_config_text(FUNCTIONS, "r.yaml").settings.ingress is None


def test_defaults_bind_loopback() -> None:
    config = load_config_text("router:\n  ingress: {}\n" + FUNCTIONS, "r.yaml")
    ingress = config.settings.ingress
    assert ingress is not None
    assert ingress.listen == "127.0.0.1:9000"
    assert ingress.credentials == ()
    assert (ingress.lease_timeout, ingress.poll_interval) == (30.0, 1.0)


def test_credentials_are_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGRESS_SECRET", "s3cr3t")
    text = (
        """
router:
  ingress:
    listen: 0.0.0.0:9100
    credentials:
      - {access_key_id: AKID1, secret_access_key: "${INGRESS_SECRET}"}
      - {AccessKeyId: AKID2, SecretAccessKey: {file: /run/secrets/none}}
    queue: {lease_timeout: 60, poll_interval: 0.5}
"""
        + FUNCTIONS
    )
    ingress = load_config_text(text, "r.yaml").settings.ingress
    assert ingress is not None
    assert ingress.listen == "0.0.0.0:9100"
    assert [c.access_key_id for c in ingress.credentials] == ["AKID1", "AKID2"]
    assert ingress.credentials[0].secret_access_key.reveal() == "s3cr3t"
    assert "s3cr3t" not in repr(ingress)
    one = load_config_text(
        "router:\n  ingress:\n    credentials: {access_key_id: A, secret_access_key: "
        '"${INGRESS_SECRET}"}\n' + FUNCTIONS,
        "r.yaml",
    ).settings.ingress
    assert one is not None and len(one.credentials) == 1


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "credentials: {access_key_id: A, secret_access_key: plain}",
            "r.yaml:3: router.ingress.credentials[0].secret_access_key: a secret must not be "
            "written in the configuration",
        ),
        ("listen: localhost", "r.yaml:3: router.ingress.listen: must be HOST:PORT"),
        ("lisen: 127.0.0.1:9000", "unknown key 'lisen'; did you mean 'listen'?"),
        ("queue: {lease_timeout: 1}", "router.ingress.queue.lease_timeout: must be >= 5"),
    ],
)
def test_bad_settings_are_located(block: str, message: str) -> None:
    text = "router:\n  ingress:\n    " + block.replace("\n", "\n    ") + "\n" + FUNCTIONS
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "r.yaml")
    assert message in str(caught.value)
