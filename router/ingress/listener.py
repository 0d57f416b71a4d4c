"""The ingress listener: one aiohttp server for every front-end of pushed events.

Front-ends do not own aiohttp routes: they register :class:`Route` objects (a method and a
path pattern) or JSON 1.1 actions (``X-Amz-Target`` values posted to ``/``) while they run, and
remove them when they stop, so a mapping that starts or stops at run time (an SNS
subscription endpoint, a function URL) comes and goes without restarting the server.

For each request the listener, before the front-end's handler runs:

1. finds the route (exact paths first, then patterns; ``{name}`` matches one path segment,
   ``{name+}`` the rest of the path); none: 404 ``UnknownOperationException``;
2. refuses a body larger than the route's ``max_body`` (413 ``RequestTooLargeException``,
   checked against ``Content-Length`` before anything is read, and while reading);
3. with ``router.ingress.credentials`` set and a ``signed`` route, verifies the SigV4
   signature (:mod:`router.ingress.sigv4`); an unsigned or badly signed request gets 403;
4. calls the handler with an :class:`IngressRequest` (the body already read).

A handler answers with any aiohttp response, or raises :class:`~router.ingress.errors.AwsError`
(rendered with the route's ``errors`` format). Any other exception is logged and answered 500
``ServiceException``: a client never sees a traceback. Every answer carries
``x-amzn-RequestId``.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

from router.config.convert import IngressSettings
from router.errors import ConfigError, SetupError
from router.ingress.errors import (
    REQUEST_ID_HEADER,
    AwsError,
    ErrorFormat,
    internal_error,
    json_error,
    not_found,
    rest_json_error,
)
from router.ingress.sigv4 import SigV4Verifier

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 6 * 1024 * 1024
"""Lambda's synchronous payload limit: the largest body any front-end takes by default."""
TARGET_HEADER = "X-Amz-Target"


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressRequest:
    """A request that passed the listener's checks."""

    http: web.Request
    """The aiohttp request (headers, query, peer); its body is already read: use ``body``."""
    body: bytes
    params: Mapping[str, str]
    """Values of the route pattern's ``{name}`` segments (URL-decoded)."""
    request_id: str
    """A fresh id for this request, answered as ``x-amzn-RequestId``."""
    received: float
    """Epoch seconds the request arrived."""
    access_key_id: str | None = None
    """The access key that signed the request (None: not verified)."""


Handler = Callable[[IngressRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """What a front-end serves at a path.

    ``path`` is an exact path (``/sns/alerts``) or a pattern with ``{name}`` (one segment)
    and a final ``{name+}`` (the rest, at least one character). ``owner`` names who
    registered it in messages (``mapping alerts``). ``signed``: SigV4 is required when the
    listener has credentials (an SNS subscription endpoint, which SNS does not sign with
    SigV4, sets False). ``service`` is the SigV4 signing name a signature must be scoped to
    (``lambda``, ``events``; empty: any)."""

    methods: frozenset[str]
    path: str
    handler: Handler
    owner: str
    signed: bool = True
    service: str = ""
    max_body: int = DEFAULT_MAX_BODY
    errors: ErrorFormat = rest_json_error
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    @property
    def is_pattern(self) -> bool:
        return "{" in self.path


class Registration:
    """A registered route or action; :meth:`remove` (idempotent) takes it away. Also a
    context manager: ``with listener.add_route(...): ...``."""

    def __init__(self, remove: Callable[[], None]) -> None:
        self._remove: Callable[[], None] | None = remove

    def remove(self) -> None:
        remove, self._remove = self._remove, None
        if remove is not None:
            remove()

    def __enter__(self) -> Registration:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def _compile(path: str) -> re.Pattern[str]:
    if not path.startswith("/"):
        raise ValueError(f"a route path starts with '/': {path!r}")
    out = []
    for i, segment in enumerate(path.split("/")[1:]):
        if segment.startswith("{") and segment.endswith("+}"):
            if i != path.count("/") - 1:
                raise ValueError(f"{{name+}} must be the last segment of {path!r}")
            out.append(f"(?P<{segment[1:-2]}>.+)")
        elif segment.startswith("{") and segment.endswith("}"):
            out.append(f"(?P<{segment[1:-1]}>[^/]+)")
        else:
            out.append(re.escape(segment))
    return re.compile("/" + "/".join(out) + "$")


def check_path(path: str) -> None:
    """Raise ValueError (saying what is wrong) unless ``path`` is a route path
    :meth:`IngressListener.add_route` takes; for front-ends checking their settings."""
    if "{" in path:
        _compile(path)
    elif not path.startswith("/"):
        raise ValueError(f"a route path starts with '/': {path!r}")


class IngressListener:
    """``async with IngressListener(settings)``: the ingress server bound for the duration
    of the block (a port in use raises :class:`SetupError`). :meth:`stop_accepting` closes
    the listening socket early (requests already received still get their answer)."""

    def __init__(self, settings: IngressSettings, *, shutdown_timeout: float = 30.0) -> None:
        self.settings = settings
        self._shutdown_timeout = shutdown_timeout
        self._exact: dict[tuple[str, str], Route] = {}
        self._patterns: list[Route] = []
        self._targets: dict[str, Route] = {}
        keys = {c.access_key_id: c.secret_access_key.reveal() for c in settings.credentials}
        self._verifier = SigV4Verifier(keys) if keys else None
        self._runner: web.AppRunner | None = None
        self.url = ""
        """``http://HOST:PORT`` once listening (the port chosen when it was 0)."""

    # ------------------------------------------------------------------ registration

    def add_route(
        self,
        methods: str | Collection[str],
        path: str,
        handler: Handler,
        *,
        owner: str,
        signed: bool = True,
        service: str = "",
        max_body: int = DEFAULT_MAX_BODY,
        errors: ErrorFormat = rest_json_error,
    ) -> Registration:
        """Serve ``methods`` at ``path`` (see :class:`Route`) until the registration is
        removed. A method and path another owner serves already raise :class:`ConfigError`
        naming that owner; a malformed pattern raises ValueError."""
        wanted = frozenset(
            [methods.upper()] if isinstance(methods, str) else (m.upper() for m in methods)
        )
        pattern = _compile(path) if "{" in path else None
        route = Route(
            methods=wanted,
            path=path,
            handler=handler,
            owner=owner,
            signed=signed,
            service=service,
            max_body=max_body,
            errors=errors,
            _pattern=pattern,
        )
        for method in wanted:
            taken = (
                self._exact.get((method, path))
                if pattern is None
                else next(
                    (r for r in self._patterns if r.path == path and method in r.methods), None
                )
            )
            if taken is not None:
                raise ConfigError(f"{method} {path} is served by {taken.owner} already")
        if pattern is None:
            for method in wanted:
                self._exact[(method, path)] = route
        else:
            self._patterns.append(route)
            # More literal characters first: /a/{x} before /{y+}.
            self._patterns.sort(key=lambda r: -len(re.sub(r"\{[^}]*\}", "", r.path)))

        def remove() -> None:
            if pattern is None:
                for method in wanted:
                    if self._exact.get((method, path)) is route:
                        del self._exact[(method, path)]
            elif route in self._patterns:
                self._patterns.remove(route)

        return Registration(remove)

    def add_target(
        self,
        target: str,
        handler: Handler,
        *,
        owner: str,
        signed: bool = True,
        service: str = "",
        max_body: int = DEFAULT_MAX_BODY,
        errors: ErrorFormat = json_error,
    ) -> Registration:
        """Serve the JSON 1.1 action ``target`` (``POST /`` with ``X-Amz-Target: target``,
        e.g. ``AWSEvents.PutEvents``) until the registration is removed. A target served
        already raises :class:`ConfigError`."""
        taken = self._targets.get(target)
        if taken is not None:
            raise ConfigError(f"{TARGET_HEADER} {target} is served by {taken.owner} already")
        route = Route(
            methods=frozenset({"POST"}),
            path="/",
            handler=handler,
            owner=owner,
            signed=signed,
            service=service,
            max_body=max_body,
            errors=errors,
        )
        self._targets[target] = route

        def remove() -> None:
            if self._targets.get(target) is route:
                del self._targets[target]

        return Registration(remove)

    # ------------------------------------------------------------------ dispatch

    def _find(self, request: web.Request) -> tuple[Route | None, dict[str, str]]:
        method, path = request.method, request.path
        if method == "POST" and path == "/" and TARGET_HEADER in request.headers:
            return self._targets.get(request.headers[TARGET_HEADER]), {}
        route = self._exact.get((method, path))
        if route is not None:
            return route, {}
        for candidate in self._patterns:
            assert candidate._pattern is not None
            found = candidate._pattern.match(path)
            if found is not None and method in candidate.methods:
                return candidate, found.groupdict()
        return None, {}

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        request_id = str(uuid.uuid4())
        route, params = self._find(request)
        if route is not None:
            errors = route.errors
        elif TARGET_HEADER in request.headers:
            errors = json_error
        else:
            errors = rest_json_error
        try:
            if route is None:
                target = request.headers.get(TARGET_HEADER)
                if target is not None and request.path == "/":
                    raise AwsError(
                        400, "UnknownOperationException", f"unknown operation {target!r}"
                    )
                raise not_found(request.method, request.path)
            body = await _read_body(request, route.max_body)
            key_id = None
            if route.signed and self._verifier is not None:
                key_id = self._verifier.verify(
                    method=request.method,
                    raw_path=request.raw_path,
                    headers=request.headers,
                    body=body,
                    service=route.service,
                )
            response = await route.handler(
                IngressRequest(
                    http=request,
                    body=body,
                    params=params,
                    request_id=request_id,
                    received=received,
                    access_key_id=key_id,
                )
            )
        except AwsError as e:
            return errors(e, request_id)
        except Exception:
            logger.exception(
                "ingress: %s %s failed (request %s)", request.method, request.path, request_id
            )
            return errors(internal_error(), request_id)
        if not response.prepared and REQUEST_ID_HEADER not in response.headers:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> IngressListener:
        app = web.Application(client_max_size=DEFAULT_MAX_BODY + 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        host, _, port = self.settings.listen.rpartition(":")
        site = web.TCPSite(runner, host or "127.0.0.1", int(port))
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise SetupError(
                f"cannot listen on {self.settings.listen} for the ingress listener: "
                f"{os.strerror(e.errno) if e.errno else e}. Choose another port with "
                "router.ingress.listen"
            ) from e
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            address = sockets[0].getsockname()
            self.url = f"http://{_url_host(address[0])}:{address[1]}"
        logger.info(
            "ingress listener on %s%s",
            self.url or self.settings.listen,
            " (SigV4 signatures required)" if self._verifier is not None else "",
        )
        return self

    async def stop_accepting(self) -> None:
        """Close the listening socket; requests in progress still finish."""
        runner = self._runner
        if runner is not None:
            for site in list(runner.sites):
                await site.stop()

    async def __aexit__(self, *exc: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, refusing (413) more than ``limit`` bytes before reading them."""
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> AwsError:
    return AwsError(413, "RequestTooLargeException", f"Request must be smaller than {limit} bytes")


__all__ = [
    "DEFAULT_MAX_BODY",
    "Handler",
    "IngressListener",
    "IngressRequest",
    "Registration",
    "Route",
    "check_path",
    "too_large",
]
