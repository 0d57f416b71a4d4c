"""The ``sns`` source: an HTTP(S) subscription endpoint of one SNS topic.

The mapping serves ``path`` (POST) on the ingress listener while it runs; subscribe
``http://HOST:PORT/PATH`` to the topic. What SNS posts there:

- ``SubscriptionConfirmation`` for the configured ``topic_arn``: verified (unless
  ``verify_signatures`` is off), then confirmed by fetching its ``SubscribeURL``; the answer
  is 200 once the topic took the confirmation. For any other topic nothing is fetched (403):
  the router subscribes only to the topics its configuration lists.
- ``Notification``: verified, then committed to the asynchronous queue as Lambda's
  ``aws:sns`` event before the answer (200), and delivered from there with Lambda's
  asynchronous semantics (retries, maximum event age, destinations). ``filter_criteria`` is
  the subscription's filter policy: matched against the message attributes (or the message
  body with ``filter_policy_scope: MessageBody``).
- ``UnsubscribeConfirmation``: logged, answered 200.

A message that is no SNS message is 400; one whose signature does not verify, or of another
topic, 403 (nothing is queued). An answer other than 2xx makes SNS retry the delivery.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import web
from pydantic import AliasChoices, ConfigDict, Field, field_validator

from connectors.sns.messages import (
    NOTIFICATION,
    SUBSCRIPTION_CONFIRMATION,
    MessageError,
    SnsMessage,
    attributes_view,
    body_view,
    lambda_event,
    parse_message,
)
from connectors.sns.signature import DEFAULT_CERT_HOST, SignatureError, SignatureVerifier
from router.abc import Sink, SourceContext, SourceTraits
from router.errors import ConfigError, RouterError
from router.ingress import Ingress, IngressRequest, text_error
from router.ingress.errors import AwsError
from router.ingress.listener import check_path
from router.ingress.source import PushedSource
from router.models import PluginSettings, Record, SourceKind

logger = logging.getLogger(__name__)

MAX_MESSAGE = 512 * 1024
"""SNS messages are at most 256 KB; the JSON around one (escaped) fits in this."""
MAX_CERT = 64 * 1024
FETCH_TIMEOUT = 10.0


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class SnsSettings(PluginSettings):
    """YAML keys of ``source: {type: sns}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic_arn: str = Field(
        pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}$",
        validation_alias=_alias("topic_arn", "TopicArn", "Topic"),
    )
    path: str
    """Where SNS posts: subscribe ``http://HOST:PORT`` + ``path`` to the topic."""
    verify_signatures: bool = True
    cert_host: str = DEFAULT_CERT_HOST
    """A regular expression the host of ``SigningCertURL`` must match (HTTPS only)."""
    cert_file: Path | None = None
    """A PEM certificate to verify with instead of fetching ``SigningCertURL``."""
    filter_policy_scope: Literal["MessageAttributes", "MessageBody"] = Field(
        default="MessageAttributes",
        validation_alias=_alias("filter_policy_scope", "FilterPolicyScope"),
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        check_path(value)
        return value

    @field_validator("cert_host")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return value


class SnsSource(PushedSource):
    """An SNS HTTP(S) subscription endpoint; see the module's docstring."""

    Settings = SnsSettings
    requires = {"cryptography": "sns"}
    traits = SourceTraits(
        kind=SourceKind.ASYNC,
        filter_view=attributes_view,
        batch_size_default=1,
        batch_size_max=1,
        retry_default=2,
        retry_min=0,
        retry_max=2,
        record_age_default=21600,
        record_age_min=60,
        record_age_max=21600,
        supports=frozenset(
            {
                "maximum_retry_attempts",
                "maximum_record_age",
                "destination_config",
                "filter_criteria",
            }
        ),
    )

    settings: SnsSettings

    def __init__(self, settings: SnsSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self._warned = False

    def filter_viewer(self, fields: frozenset[str] | None) -> Callable[[Record], Any]:
        view_of = (
            body_view if self.settings.filter_policy_scope == "MessageBody" else attributes_view
        )

        def view(record: Record) -> Any:
            return view_of(record.data)

        return view

    def serving(self, ingress: Ingress, sink: Sink) -> AbstractAsyncContextManager[Any]:
        settings = self.settings
        mapping = self.context.mapping

        @contextlib.asynccontextmanager
        async def served() -> AsyncIterator[None]:
            if not settings.verify_signatures and not self._warned:
                self._warned = True
                logger.warning(
                    "mapping %s: SNS signatures are not verified (verify_signatures: false); "
                    "anyone who reaches %s can post notifications",
                    mapping.name,
                    settings.path,
                )
            cert = None
            if settings.cert_file is not None:
                try:
                    cert = settings.cert_file.read_bytes()
                except OSError as e:
                    raise ConfigError(
                        f"mapping {mapping.name}: cannot read cert_file {settings.cert_file}: {e}"
                    ) from None
            timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session:

                async def fetch(url: str) -> bytes:
                    async with session.get(url) as answer:
                        if answer.status != 200:
                            raise OSError(f"HTTP {answer.status}")
                        return await answer.content.read(MAX_CERT)

                try:
                    verifier = SignatureVerifier(
                        fetch=fetch, cert_host=settings.cert_host, cert_pem=cert
                    )
                except SignatureError as e:
                    raise ConfigError(f"mapping {mapping.name}: cert_file: {e}") from None
                try:
                    registration = ingress.listener.add_route(
                        "POST",
                        settings.path,
                        lambda request: self.handle(ingress, session, verifier, request),
                        owner=f"mapping {mapping.name}",
                        signed=False,  # SNS signs its messages, not its requests
                        max_body=MAX_MESSAGE,
                        errors=text_error,
                    )
                except ConfigError as e:
                    raise ConfigError(f"mapping {mapping.name}: {e}") from None
                with registration:
                    yield

        return served()

    async def handle(
        self,
        ingress: Ingress,
        session: aiohttp.ClientSession,
        verifier: SignatureVerifier,
        request: IngressRequest,
    ) -> web.StreamResponse:
        try:
            message = parse_message(request.body)
        except MessageError as e:
            raise AwsError(400, "InvalidMessage", f"not an SNS message: {e}") from None
        if message.topic_arn != self.settings.topic_arn:
            raise AwsError(
                403,
                "UnknownTopic",
                f"this endpoint takes messages of {self.settings.topic_arn} only, "
                f"not of {message.topic_arn}",
            )
        if self.settings.verify_signatures:
            try:
                await verifier.verify(message)
            except SignatureError as e:
                logger.warning(
                    "mapping %s: refused SNS message %s: %s",
                    self.context.mapping.name,
                    message.message_id,
                    e,
                )
                raise AwsError(403, "InvalidSignature", str(e)) from None
        if message.type == NOTIFICATION:
            return await self.accept(ingress, message, request)
        if message.type == SUBSCRIPTION_CONFIRMATION:
            return await self.confirm(session, message)
        logger.info(
            "mapping %s: %s unsubscribed this endpoint",
            self.context.mapping.name,
            message.topic_arn,
        )
        return web.Response(text="OK\n")

    async def accept(
        self, ingress: Ingress, message: SnsMessage, request: IngressRequest
    ) -> web.StreamResponse:
        subscription = request.http.headers.get(
            "x-amz-sns-subscription-arn", f"{message.topic_arn}:{self.context.mapping.uuid}"
        )
        event = lambda_event(message, subscription)
        try:
            await ingress.queue.enqueue(self.context.mapping, event)
        except RouterError as e:
            logger.warning(
                "mapping %s: SNS message %s not accepted (SNS retries it): %s",
                self.context.mapping.name,
                message.message_id,
                e,
            )
            raise AwsError(503, "ServiceUnavailable", "the message could not be stored") from e
        return web.Response(text="OK\n")

    async def confirm(
        self, session: aiohttp.ClientSession, message: SnsMessage
    ) -> web.StreamResponse:
        url = str(message.fields["SubscribeURL"])
        name = self.context.mapping.name
        if not url.startswith(("https://", "http://")):
            raise AwsError(400, "InvalidMessage", f"SubscribeURL {url!r} is not an HTTP URL")
        try:
            async with session.get(url) as answer:
                status = answer.status
                await answer.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            logger.warning(
                "mapping %s: cannot confirm the subscription to %s: %s", name, message.topic_arn, e
            )
            raise AwsError(
                502, "ConfirmationFailed", f"fetching SubscribeURL failed: {e}"
            ) from None
        if status != 200:
            logger.warning(
                "mapping %s: confirming the subscription to %s: SubscribeURL answered %d",
                name,
                message.topic_arn,
                status,
            )
            raise AwsError(502, "ConfirmationFailed", f"SubscribeURL answered HTTP {status}")
        logger.info("mapping %s: confirmed the subscription to %s", name, message.topic_arn)
        return web.Response(text="OK\n")


__all__ = ["SnsSettings", "SnsSource"]
