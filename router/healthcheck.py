"""``python -m router.healthcheck [HOST:PORT]``: exit 0 when the router's ``/healthz`` answers
200, 1 otherwise, saying why on one line.

The container's ``HEALTHCHECK``. The address is the argument, else ``$ROUTER_HTTP_LISTEN``
(which the image sets, and which wins over ``router.http_listen`` in the YAML, so the check
follows the port the router was told to use), else the router's default 127.0.0.1:9090. A
wildcard host (``0.0.0.0``, ``[::]``) is checked on loopback.

Only the standard library is imported: the check runs every few seconds.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_LISTEN = "127.0.0.1:9090"
TIMEOUT = 3.0
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}


def url_for(listen: str) -> str:
    """The ``/healthz`` URL of a listener address (``HOST:PORT``, ``[V6]:PORT``)."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{listen!r} is not HOST:PORT (e.g. 0.0.0.0:9090)")
    host = _WILDCARDS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def check(listen: str) -> tuple[bool, str]:
    """(healthy, what was seen)."""
    if listen.strip() == "off":
        return False, (
            "the operations listener is off (ROUTER_HTTP_LISTEN=off): there is no /healthz "
            "to check; run the container with --no-healthcheck"
        )
    try:
        url = url_for(listen)
    except ValueError as e:
        return False, str(e)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status == 200, f"{url}: {response.status}"
    except urllib.error.HTTPError as e:
        return False, f"{url}: {e.code} {e.read(200).decode('utf-8', 'replace').strip()}"
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return False, f"{url}: {reason}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    listen = args[0] if args else os.environ.get("ROUTER_HTTP_LISTEN") or DEFAULT_LISTEN
    healthy, seen = check(listen)
    print(("healthy: " if healthy else "unhealthy: ") + seen)  # noqa: T201 - the check's report
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
