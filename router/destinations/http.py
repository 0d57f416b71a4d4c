"""The ``http`` destination: POST each record as JSON; any 2xx accepts it."""

from __future__ import annotations

from typing import Any, ClassVar

import aiohttp
import orjson
from pydantic import field_validator, model_validator

from router.abc import Destination
from router.errors import DestinationError
from router.invokers.http import auth_header_clash, check_http_url
from router.models import PluginSettings
from router.secrets import Secret, SecretUrl, plain_headers, redact


class HttpDestinationSettings(PluginSettings):
    url: SecretUrl
    """A password in it is written as a reference (``https://user:${PASSWORD}@host``)."""
    headers: dict[str, Secret] = {}
    timeout: float = 10.0

    @field_validator("headers", mode="before")
    @classmethod
    def _plain_headers(cls, value: Any) -> Any:
        return plain_headers(value)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretUrl) -> SecretUrl:
        check_http_url(value)
        return value

    @model_validator(mode="after")
    def _credentials_once(self) -> HttpDestinationSettings:
        header = auth_header_clash(self.url, self.headers)
        if header is not None:
            raise ValueError(
                f"the url has credentials (user:password@) and the {header} header is set too; "
                "the HTTP client refuses such requests: keep one of them"
            )
        return self


class HttpDestination(Destination):
    Settings: ClassVar[type[PluginSettings]] = HttpDestinationSettings

    _session: aiohttp.ClientSession | None = None

    @classmethod
    def from_target(cls, target: str) -> HttpDestinationSettings:
        return HttpDestinationSettings.model_validate({"url": target})

    async def send(self, record: Any) -> None:
        settings: HttpDestinationSettings = self.settings
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=settings.timeout)
            )
        headers = {k: v.reveal() for k, v in settings.headers.items()}
        headers["Content-Type"] = "application/json"
        url = settings.url.reveal()
        try:
            async with self._session.post(
                url, data=orjson.dumps(record), headers=headers
            ) as response:
                if response.status >= 300:
                    body = (await response.text())[:200]
                    raise DestinationError(
                        redact(f"{settings.url} answered {response.status}: {body}")
                    )
        except (aiohttp.ClientError, TimeoutError) as e:
            raise DestinationError(redact(f"cannot POST to {settings.url}: {e}")) from e

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
