"""Secrets that never print and are never stored: passwords, keys, tokens, URL passwords.

A secret setting is written as a **reference**, which is what the store keeps:

* ``${NAME}``: the environment variable ``NAME``;
* ``{file: /run/secrets/NAME}``: the content of a file (one trailing newline dropped), as
  container orchestrators mount secrets.

A URL setting (an ``http`` invoker or destination URL, ``router.store``) may carry its password
as ``https://user:${NAME}@host/...``, or be a reference as a whole (``${NAME}``, ``{file:
PATH}``) holding the URL.

A value written in place (a literal) is refused while the YAML is loaded unless
``router.allow_plaintext_secrets`` is set (:func:`secret_policy`). References are resolved when
the configuration is loaded to run (``router run``, ``router validate``) and when a stored row
becomes a running mapping; anything else (``router apply``, ``mappings show``) handles the
references only. :class:`Secret` prints as ``***`` and serialises (for the store) as its
reference.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic_core import core_schema

from router.errors import ConfigError

_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?!\$\{[A-Za-z_][A-Za-z0-9_]*\}@)"
    r"(?P<pw>[^@/\s]+)@"
)
_QUERY_SECRET = re.compile(
    r"(?i)(?P<key>(?:password|passwd|pwd|secret|token|access_key|secret_key|api_key|apikey|"
    r"sig|signature|x-amz-signature|x-amz-security-token|sasl_plain_password)=)(?P<val>[^&\s]+)"
)
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ENV_REFERENCE = re.compile(rf"\$\{{({_ENV_NAME})\}}")
_WHOLE_ENV_REFERENCE = re.compile(rf"^\$\{{({_ENV_NAME})\}}$")
_CREDENTIAL_HEADER_WORDS = (
    "auth",
    "token",
    "key",
    "secret",
    "password",
    "session",
    "signature",
    "credential",
    "cookie",
)

REFERENCE_FORMS = "${NAME} (an environment variable) or {file: /run/secrets/NAME}"


class SecretError(ConfigError):
    """A reference that cannot be resolved (variable not set, file unreadable)."""


@dataclass(frozen=True, slots=True)
class SecretPolicy:
    allow_plaintext: bool = True
    """Accept secrets written in place (always true outside YAML files)."""
    resolve: bool = False
    """Resolve references while validating, so that a missing variable or file is an error
    at its key."""


_DEFAULT_POLICY = SecretPolicy()
_POLICY: ContextVar[SecretPolicy] = ContextVar("secret_policy", default=_DEFAULT_POLICY)


@contextlib.contextmanager
def secret_policy(*, allow_plaintext: bool, resolve: bool) -> Iterator[None]:
    """Validate the settings built in this block under this policy (the YAML loader sets it;
    code building settings in Python gets literals allowed and lazy resolution)."""
    token = _POLICY.set(SecretPolicy(allow_plaintext=allow_plaintext, resolve=resolve))
    try:
        yield
    finally:
        _POLICY.reset(token)


_PLAINTEXT_REFUSED = (
    "a secret must not be written in the configuration: write a reference instead, "
    f"{REFERENCE_FORMS}; or set router.allow_plaintext_secrets: true to store it as written"
)


def _read_env(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise SecretError(f"${{{name}}}: the environment variable {name} is not set")
    if value == "":
        raise SecretError(f"${{{name}}}: the environment variable {name} is empty")
    return value


def _read_file(path: str) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SecretError(f"{{file: {path}}}: cannot read the file: {reason}") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if value == "":
        raise SecretError(f"{{file: {path}}}: the file is empty")
    return value


class Secret:
    """A secret value: a reference (``${NAME}``, ``{file: PATH}``) or a literal.

    ``repr`` and ``str`` never show the value; :meth:`reveal` gives it (resolving a reference
    on first use). Equal secrets have equal references (or equal literals): a changed
    variable's value does not make a setting "changed".
    """

    __slots__ = ("_env", "_file", "_literal", "_value")

    def __init__(self, value: str) -> None:
        self._literal: str | None = value
        self._env: str | None = None
        self._file: str | None = None
        self._value: str | None = value

    @classmethod
    def from_env(cls, name: str) -> Secret:
        secret = cls.__new__(cls)
        secret._literal, secret._env, secret._file, secret._value = None, name, None, None
        return secret

    @classmethod
    def from_file(cls, path: str) -> Secret:
        secret = cls.__new__(cls)
        secret._literal, secret._env, secret._file, secret._value = None, None, path, None
        return secret

    @property
    def is_reference(self) -> bool:
        return self._literal is None

    @property
    def resolved(self) -> bool:
        return self._value is not None

    def reference(self) -> str | dict[str, str] | None:
        """What the store keeps for a reference: ``"${NAME}"`` or ``{"file": PATH}``."""
        if self._env is not None:
            return f"${{{self._env}}}"
        if self._file is not None:
            return {"file": self._file}
        return None

    def plaintext(self) -> bool:
        """Whether the secret is written in place (and would be stored as it is)."""
        return self._literal is not None

    def describe(self) -> str:
        """The reference as written (for messages), or ``***`` for a literal."""
        if self._env is not None:
            return f"${{{self._env}}}"
        if self._file is not None:
            return f"{{file: {self._file}}}"
        return "***"

    def stored(self) -> Any:
        """The form written into the store: the reference, or the literal where allowed."""
        reference = self.reference()
        return self._literal if reference is None else reference

    def resolve(self) -> str:
        """The value (read once, then kept); raises :class:`SecretError` naming the
        reference when it cannot be read."""
        if self._value is None:
            if self._env is not None:
                self._value = _read_env(self._env)
            else:
                assert self._file is not None
                self._value = _read_file(self._file)
        return self._value

    def reveal(self) -> str:
        return self.resolve()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"

    def __str__(self) -> str:
        return self.describe()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[str | None, ...]:
        return (self._literal, self._env, self._file)

    @classmethod
    def parse(cls, value: Any) -> Secret:
        """A secret from what YAML or a stored row holds; raises ValueError for a malformed
        reference or (under the current :func:`secret_policy`) a refused literal."""
        if isinstance(value, Secret):
            return value
        policy = _POLICY.get()
        secret = cls._parse_reference(value)
        if secret is None:
            if isinstance(value, dict | list) or value is None:
                raise ValueError(f"must be a string, or a reference: {REFERENCE_FORMS}")
            if not policy.allow_plaintext:
                raise ValueError(_PLAINTEXT_REFUSED)
            secret = cls(str(value))
        if policy.resolve:
            try:
                secret.resolve()
            except SecretError as e:
                raise ValueError(e.message) from None
        return secret

    @classmethod
    def _parse_reference(cls, value: Any) -> Secret | None:
        if isinstance(value, str):
            match = _WHOLE_ENV_REFERENCE.match(value.strip())
            if match:
                return cls.from_env(match.group(1))
            if value.strip().startswith("${"):
                raise ValueError(
                    "not a valid reference: write ${NAME}, NAME made of letters, digits and _"
                )
            return None
        if isinstance(value, dict) and "file" in value:
            path = value["file"]
            if set(value) != {"file"} or not isinstance(path, str) or not path.strip():
                raise ValueError("a file reference is {file: /path/to/secret} and nothing else")
            return cls.from_file(path.strip())
        return None

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v: v.stored(), when_used="json"
            ),
            json_schema_input_schema=core_schema.union_schema(
                [
                    core_schema.str_schema(),
                    core_schema.typed_dict_schema(
                        {"file": core_schema.typed_dict_field(core_schema.str_schema())}
                    ),
                ]
            ),
        )


class SecretUrl(Secret):
    """A URL that may hold a password: ``https://user:${NAME}@host/path`` (the password a
    reference), a reference to the whole URL (``${NAME}``, ``{file: PATH}``), or a URL
    written in place (refused when it has a literal password, unless plaintext is allowed).

    :attr:`text` is the URL with its references still in it (for checks of its shape);
    :meth:`reveal` the URL to connect to.
    """

    __slots__ = ()

    @property
    def text(self) -> str | None:
        """The URL as written (references in place), the resolved URL of a whole reference,
        or None for a whole reference not resolved yet."""
        if self._literal is not None:
            return self._literal
        return self._value

    def resolve(self) -> str:
        if self._value is None and self._literal is not None:
            self._value = _substitute(self._literal)
        return super().resolve()

    def plaintext(self) -> bool:
        return self._literal is not None and _literal_password(self._literal)

    def describe(self) -> str:
        if self._literal is not None:
            return redact(self._literal)
        return super().describe()

    @classmethod
    def parse(cls, value: Any) -> SecretUrl:
        if isinstance(value, SecretUrl):
            return value
        if isinstance(value, str) and not _WHOLE_ENV_REFERENCE.match(value.strip()):
            policy = _POLICY.get()
            url = cls(value)
            names = _ENV_REFERENCE.findall(value)
            if not policy.allow_plaintext and _literal_password(value):
                raise ValueError(
                    "a URL must not hold its password in the configuration: write it as a "
                    "reference, e.g. https://user:${PASSWORD}@host/..., or give the whole URL "
                    f"as {REFERENCE_FORMS}; or set router.allow_plaintext_secrets: true"
                )
            if names:
                url._value = None  # resolved by substituting the variables
                if policy.resolve:
                    try:
                        url.resolve()
                    except SecretError as e:
                        raise ValueError(e.message) from None
            return url
        secret = Secret.parse(value)
        url = cls.__new__(cls)
        url._literal, url._env, url._file, url._value = (
            secret._literal,
            secret._env,
            secret._file,
            secret._value,
        )
        return url


def _substitute(text: str) -> str:
    """``text`` with each ``${NAME}`` replaced by the variable's value, URL-quoted."""
    return _ENV_REFERENCE.sub(lambda m: quote(_read_env(m.group(1)), safe=""), text)


def _literal_password(url: str) -> bool:
    try:
        password = urlsplit(url).password
    except ValueError:
        return False
    return password is not None and not _WHOLE_ENV_REFERENCE.match(password)


def is_credential_header(name: str) -> bool:
    """Whether a header name looks like it carries a credential (``Authorization``,
    ``X-Api-Key``, ``Cookie``...): such values must be references in a YAML file."""
    lowered = name.lower()
    return any(word in lowered for word in _CREDENTIAL_HEADER_WORDS)


def plain_headers(value: Any) -> Any:
    """For a ``headers`` mapping: values of headers that carry no credential may be written
    in place (``X-Tenant: acme``); the others are secrets like any other."""
    if not isinstance(value, Mapping):
        return value
    return {
        key: Secret(item)
        if isinstance(key, str)
        and not is_credential_header(key)
        and isinstance(item, str)
        and not _WHOLE_ENV_REFERENCE.match(item.strip())
        else item
        for key, item in value.items()
    }


_SECRET_KEY_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "credential",
    *_CREDENTIAL_HEADER_WORDS,
)


def is_reference(value: Any) -> bool:
    """Whether ``value`` (as stored) is a secret reference: ``"${NAME}"`` or
    ``{"file": PATH}``; references are no secrets and may be shown."""
    if isinstance(value, str):
        return bool(_WHOLE_ENV_REFERENCE.match(value.strip()))
    return isinstance(value, dict) and set(value) == {"file"}


def redact_value(value: Any, key: str = "") -> Any:
    """A stored configuration value (a row's JSON columns) safe to print: values under keys
    that name a credential become ``***`` unless they are references; URL passwords and
    ``key=value`` secrets in any string are redacted."""
    if isinstance(value, dict):
        if is_reference(value):
            return value
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, key) for v in value]
    lowered = key.lower()
    if (
        value
        and any(word in lowered for word in _SECRET_KEY_WORDS)
        and lowered != "key_path"
        and not is_reference(value)
    ):
        return "***"
    return redact(value) if isinstance(value, str) else value


def redact(text: str) -> str:
    """Remove credentials from URLs and ``key=value`` secrets in free text (logs, errors).
    A password written as a reference (``${NAME}``) is no secret and stays."""
    # Every log line passes here: skip a pattern when the text cannot hold a match.
    if "://" in text:
        text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: f"{m['key']}***", text)
    return text


def basic_auth(secret: Secret, where: str) -> tuple[str, str]:
    """``(username, password)`` of a secret holding the JSON object Secrets Manager holds
    for an event source mapping's ``BASIC_AUTH`` / ``SASL_SCRAM_*_AUTH`` access
    configuration; ConfigError naming ``where`` when it holds something else."""
    try:
        value = json.loads(secret.reveal())
    except ValueError:
        value = None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("username"), str)
        or not isinstance(value.get("password"), str)
    ):
        raise ConfigError(
            f'{where}: the secret must be the JSON object {{"username": "...", "password": "..."}}'
        )
    return value["username"], value["password"]
