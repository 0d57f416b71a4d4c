"""Store URLs, engines and error classification shared by the store and the migrations."""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event, exc, pool
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from router.errors import ConfigError, MissingDependencyError, StoreError
from router.secrets import redact

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite+aiosqlite:///router.db"

SQLITE_BUSY_TIMEOUT_MS = 10_000


class TemporaryStoreError(StoreError):
    """The store could not be reached or was busy; trying again later may help."""

    retriable = True


class PermanentStoreError(StoreError):
    """A statement failed for a reason waiting will not fix (constraint, bad data, bad SQL)."""

    retriable = False


def normalize_url(url: str) -> str:
    """Turn what a user types into an async SQLAlchemy URL.

    ``sqlite:///path.db`` and a bare file path become ``sqlite+aiosqlite:///...``;
    ``postgresql://``, ``postgres://`` and ``postgresql+<other driver>://`` become
    ``postgresql+asyncpg://``; libpq's ``sslmode=`` becomes asyncpg's ``ssl=``.
    """
    url = url.strip()
    if not url:
        raise ConfigError("the store URL is empty; use e.g. sqlite:///router.db")
    if "://" not in url:
        return f"sqlite+aiosqlite:///{url}"
    scheme, rest = url.split("://", 1)
    base = scheme.split("+", 1)[0].lower()
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if base in ("postgresql", "postgres", "pgsql"):
        parsed = make_url(f"postgresql+asyncpg://{rest}")
        query = dict(parsed.query)
        if "sslmode" in query and "ssl" not in query:
            query["ssl"] = query.pop("sslmode")
        return parsed.set(query=query).render_as_string(hide_password=False)
    raise ConfigError(
        f"unsupported store URL scheme {scheme!r} in {redact(url)}; "
        "use sqlite:///path.db or postgresql://user:password@host/dbname"
    )


def display_url(url: str | URL) -> str:
    """The one spelling of a store URL in logs, errors and output: as users write it, without
    the driver (``sqlite:///router.db``, ``postgresql://router:***@db/router``), any password
    replaced by ``***``."""
    text = url.render_as_string(hide_password=True) if isinstance(url, URL) else url
    try:
        text = normalize_url(text)
    except ConfigError:
        return redact(text)
    scheme, rest = text.split("://", 1)
    return redact(f"{scheme.split('+', 1)[0]}://{rest}")


_DRIVERS = {"postgresql": ("asyncpg", "postgres")}
"""Per backend: the driver library and the pip extra that brings it."""


def check_driver(url: str) -> None:
    """Raise :class:`MissingDependencyError` naming the extra when the driver of a store URL
    is not installed (SQLAlchemy would fail later with a bare ModuleNotFoundError)."""
    backend = make_url(url).get_backend_name()
    if backend not in _DRIVERS:
        return
    library, extra = _DRIVERS[backend]
    try:
        importlib.import_module(library)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != library:
            raise
        raise MissingDependencyError(
            f"the {backend} store ({display_url(url)}) needs the {library!r} library: "
            f"pip install 'event-router[{extra}]'"
        ) from e


def check_sqlite_location(url: str) -> None:
    """Fail clearly (and before aiosqlite opens anything) if a SQLite file's folder is missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    folder = Path(parsed.database).expanduser().parent
    if not folder.is_dir():
        raise PermanentStoreError(
            f"store {display_url(url)}: the folder {folder} of the SQLite file does not exist; "
            "create it or choose another --store path"
        )


def _orjson_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for a normalized store URL, with the SQLite pragmas set per connection."""
    check_driver(url)
    check_sqlite_location(url)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {
        "echo": echo,
        "json_serializer": _orjson_dumps,
        "json_deserializer": orjson.loads,
    }
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, or every connection would see its own empty database.
            kwargs["poolclass"] = pool.StaticPool
            kwargs["connect_args"] = {"check_same_thread": False}
        engine = create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    kwargs["pool_pre_ping"] = True
    return create_async_engine(parsed, **kwargs)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers (the change poller, the CLI) run beside the single writer.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


_PG_RETRIABLE_SQLSTATE = ("08", "40", "53", "57P", "58")
_CLASS_PREFIX = re.compile(r"^<class '[\w.]+'>:\s*")


def _driver_message(error: BaseException) -> str:
    orig = error.orig if isinstance(error, exc.DBAPIError) and error.orig is not None else error
    text = str(orig).strip() or type(orig).__name__
    # Only the driver's message: SQLAlchemy's own text repeats the statement and its
    # parameters, and parameters may hold connection secrets from source_config.
    return redact(_CLASS_PREFIX.sub("", text.splitlines()[0] if text else text))


def is_retriable(error: BaseException, backend: str) -> bool:
    """Whether ``error`` is temporary: PostgreSQL connection / contention failures, SQLite
    lock timeouts. Constraint violations and bad SQL never are."""
    if isinstance(error, exc.IntegrityError | exc.ProgrammingError | exc.DataError):
        return False
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if backend == "sqlite":
        message = str(getattr(error, "orig", error)).lower()
        return isinstance(error, exc.OperationalError) and (
            "locked" in message or "busy" in message
        )
    if isinstance(error, OSError | TimeoutError | exc.TimeoutError | exc.DisconnectionError):
        return True
    if isinstance(error, exc.OperationalError | exc.InterfaceError):
        return True
    source = getattr(error, "orig", None) or error
    sqlstate = str(getattr(source, "sqlstate", "") or "")
    return sqlstate.startswith(_PG_RETRIABLE_SQLSTATE)


def wrap_error(error: BaseException, *, url: str, backend: str, action: str) -> StoreError:
    """A StoreError for ``error`` that names the store (password redacted) and what failed."""
    cls = TemporaryStoreError if is_retriable(error, backend) else PermanentStoreError
    detail = _driver_message(error)
    wrapped = cls(f"store {display_url(url)}: {action} failed: {detail}")
    wrapped.detail = detail
    return wrapped


@contextlib.contextmanager
def store_errors(url: str, backend: str, action: str) -> Iterator[None]:
    """Re-raise driver / SQLAlchemy / network errors as StoreError (chained)."""
    try:
        yield
    except StoreError:
        raise
    except (exc.SQLAlchemyError, OSError, TimeoutError) as e:
        raise wrap_error(e, url=url, backend=backend, action=action) from e
    except Exception as e:
        # asyncpg raises its own exception tree on connect (e.g. InvalidCatalogNameError for
        # a missing database) without SQLAlchemy wrapping it.
        if type(e).__module__.startswith("asyncpg"):
            raise wrap_error(e, url=url, backend=backend, action=action) from e
        raise


def backend_of(url: str) -> str:
    return make_url(url).get_backend_name()


__all__ = [
    "DEFAULT_URL",
    "PermanentStoreError",
    "TemporaryStoreError",
    "backend_of",
    "check_driver",
    "display_url",
    "make_engine",
    "normalize_url",
    "store_errors",
    "wrap_error",
]
