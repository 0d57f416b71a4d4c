"""The ``http`` destination: POST each record as JSON; any 2xx accepts it."""

from __future__ import annotations

from typing import Any, ClassVar

import aiohttp
import orjson
from pydantic import model_validator

from router.abc import Destination
from router.errors import DestinationError
from router.invokers.http import auth_header_clash
from router.models import PluginSettings
from router.secrets import Secret, redact


class HttpDestinationSettings(PluginSettings):
    url: str
    headers: dict[str, Secret] = {}
    timeout: float = 10.0

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
        return HttpDestinationSettings(url=target)

    async def send(self, record: Any) -> None:
        settings: HttpDestinationSettings = self.settings
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=settings.timeout)
            )
        headers = {k: v.reveal() for k, v in settings.headers.items()}
        headers["Content-Type"] = "application/json"
        try:
            async with self._session.post(
                settings.url, data=orjson.dumps(record), headers=headers
            ) as response:
                if response.status >= 300:
                    body = (await response.text())[:200]
                    raise DestinationError(
                        f"{redact(settings.url)} answered {response.status}: {body}"
                    )
        except (aiohttp.ClientError, TimeoutError) as e:
            raise DestinationError(f"cannot POST to {redact(settings.url)}: {e}") from e

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
