"""The ``router`` command.

Exit codes: 0 success, 1 a runtime failure (outdated schema, failed replay), 2 bad input or
a setup the router cannot start with (configuration, patterns, arguments, a store it cannot
open, a port in use, a missing extra).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml

from router import __version__, logs
from router.config import (
    RouterConfig,
    apply_config,
    config_files,
    json_schema,
    load_checked_config,
    load_config,
)
from router.errors import (
    ConfigError,
    MissingDependencyError,
    RouterError,
    SchemaOutdatedError,
    SetupError,
)
from router.models import MappingRow
from router.secrets import SecretError, redact, redact_value

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_CONFIG = "config"


# ---------------------------------------------------------------------------- helpers


def _config_path(args: argparse.Namespace) -> str:
    """``router validate PATH``, else ``--config``, else ``$ROUTER_CONFIG``, else
    ``./config``."""
    positional = getattr(args, "path", None)
    if positional and args.config and positional != args.config:
        raise SetupError(
            f"two configurations given ({positional!r} and --config {args.config!r}); "
            "give one, as PATH or with --config"
        )
    return str(positional or args.config or os.environ.get("ROUTER_CONFIG") or DEFAULT_CONFIG)


def _load(args: argparse.Namespace, *, check: bool = False, to_run: bool = False) -> RouterConfig:
    path = _config_path(args)
    if not Path(path).exists():
        how = "PATH" if args.command == "validate" else "--config FILE_OR_DIR"
        raise ConfigError(f"configuration {path!r} not found: pass {how} or set ROUTER_CONFIG")
    return load_checked_config(path, to_run=to_run) if check else load_config(path)


def _store_url(args: argparse.Namespace, config: RouterConfig | None) -> str:
    from router.store import DEFAULT_URL

    if getattr(args, "store", None):
        return str(args.store)
    if os.environ.get("ROUTER_STORE_URL"):
        return os.environ["ROUTER_STORE_URL"]
    if config is not None and config.settings.store:
        try:
            return config.settings.store.reveal()
        except SecretError as e:
            raise SecretError(f"router.store: {e.message}") from None
    return DEFAULT_URL


def _listen_address(args: argparse.Namespace, config: RouterConfig) -> str:
    """``--http-listen``, else ``$ROUTER_HTTP_LISTEN``, else ``router.http_listen``."""
    if args.http_listen:
        value, origin = args.http_listen, "--http-listen"
    elif os.environ.get("ROUTER_HTTP_LISTEN"):
        value, origin = os.environ["ROUTER_HTTP_LISTEN"], "$ROUTER_HTTP_LISTEN"
    else:
        return config.settings.http_listen
    host, sep, port = value.rpartition(":")
    if value != "off" and (not sep or not host or not port.isdigit() or int(port) > 65535):
        raise SetupError(f"{origin} {value!r}: must be HOST:PORT (e.g. 127.0.0.1:9091) or off")
    return str(value)


def _fail(message: str, code: int) -> int:
    print(f"router: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------- run


async def _run(args: argparse.Namespace) -> int:
    from router.service import Service
    from router.watcher import fingerprint

    # Taken before reading: an edit made while the router starts is applied once it runs.
    loaded = await asyncio.to_thread(fingerprint, _config_path(args))
    config = _load(args, check=True, to_run=True)
    listen = _listen_address(args, config)
    logs.setup(
        args.log_format or config.settings.log_format, args.log_level or config.settings.log_level
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = Service(
        config,
        store_url=_store_url(args, config),
        http_listen=listen,
        watch=_config_path(args),
        watch_loaded=loaded,
        replica_id=args.replica_id,
    )
    del config  # the service keeps what it runs with (the mappings go to the store)
    async with service:
        await stop.wait()
    return EXIT_OK


# ---------------------------------------------------------------------------- commands


def _validate(args: argparse.Namespace) -> int:
    config = _load(args, check=True)
    files = ", ".join(str(p) for p in config_files(_config_path(args)))
    print(f"{files}: OK ({len(config.functions)} functions, {len(config.mappings)} mappings)")
    return EXIT_OK


async def _apply(args: argparse.Namespace) -> int:
    from router.store import connect

    config = _load(args)
    store = await connect(_store_url(args, config))
    try:
        plan = await apply_config(config, store, dry_run=args.dry_run)
        print(plan.render() if not plan.is_empty else "no changes")
        if not args.dry_run and not plan.is_empty:
            print("applied")
    finally:
        await store.aclose()
    return EXIT_OK


def _optional_config(args: argparse.Namespace) -> RouterConfig | None:
    path = _config_path(args)
    return load_config(path) if Path(path).exists() else None


def _one_line(value: object, width: int = 0) -> str:
    """``value`` on one line: its first line, and ``...`` when something was cut (more
    lines, or more than ``width`` characters)."""
    text = str(value if value is not None else "")
    first, _, more = text.strip().partition("\n")
    first = first.rstrip("\r")
    if width and len(first) > width:
        return first[: width - 3] + "..."
    return first + " ..." if more.strip() else first


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], right: set[int]) -> str:
    """Columns as wide as their widest cell; every cell one line (the last column is not
    padded); ``right``: indexes of right-aligned columns."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        parts[-1] = row[-1].rjust(widths[-1]) if len(row) - 1 in right else row[-1]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _plain(value: object) -> object:
    """Dates as ISO text, for JSON."""
    return value.isoformat() if hasattr(value, "isoformat") else value


_RESULT_WIDTH = 80
"""Characters of the last result shown by ``mappings list`` (``show`` prints it in full)."""


def _listed(row: MappingRow, stats: Mapping[str, Any]) -> dict[str, object]:
    return {
        "name": row.name,
        "uuid": row.uuid,
        "state": row.state,
        "enabled": row.enabled,
        "source_type": row.source_type,
        "function": row.function_name,
        "origin": row.origin,
        "stats": {k: _plain(v) for k, v in stats.items()},
        "last_processing_result": row.last_processing_result,
    }


def _text_document(document: dict[str, object], indent: str = "") -> list[str]:
    """``key: value`` lines; a value of several lines, a list or a mapping below its key,
    indented, in full."""
    lines: list[str] = []
    for key, value in document.items():
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines.extend(_text_document(value, indent + "  "))
        elif isinstance(value, (dict, list)):
            rendered = orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()
            if "\n" in rendered:
                lines.append(f"{indent}{key}:")
                lines.extend(f"{indent}  {line}" for line in rendered.splitlines())
            else:
                lines.append(f"{indent}{key}: {rendered}")
        elif isinstance(value, str) and "\n" in value.strip():
            lines.append(f"{indent}{key}: |")
            lines.extend(f"{indent}  {line}".rstrip() for line in value.strip().splitlines())
        else:
            text = "" if value is None else value
            lines.append(f"{indent}{key}: {text}".rstrip())
    return lines


async def _mappings(args: argparse.Namespace) -> int:
    from router.store import connect

    config = _optional_config(args)
    store = await connect(_store_url(args, config))
    json_output = getattr(args, "output", "text") == "json"
    try:
        if args.action == "list":
            rows = [(row, await store.get_stats(row.uuid)) for row in await store.list_mappings()]
            if json_output:
                listed = [_listed(row, stats) for row, stats in rows]
                print(orjson.dumps(listed, option=orjson.OPT_INDENT_2, default=str).decode())
                return EXIT_OK
            header = ("NAME", "STATE", "SOURCE", "FUNCTION", "IN", "INVOKED", "FAILED")
            table = [
                (
                    _one_line(row.name),
                    _one_line(row.state),
                    _one_line(row.source_type),
                    _one_line(row.function_name),
                    stats.get("records_in", 0),
                    stats.get("invoked", 0),
                    stats.get("failed", 0),
                    _one_line(row.last_processing_result, _RESULT_WIDTH),
                )
                for row, stats in rows
            ]
            print(_table((*header, "LAST RESULT"), table, right={4, 5, 6}))
            return EXIT_OK
        row = await store.get_mapping_by_name(args.name)
        if row is None:
            return _fail(f"no mapping named {args.name!r} (see `router mappings list`)", 2)
        if args.action == "show":
            shown = redact_value({k: _plain(v) for k, v in row.columns().items()})
            shown["stats"] = {k: _plain(v) for k, v in (await store.get_stats(row.uuid)).items()}
            if json_output:
                print(orjson.dumps(shown, option=orjson.OPT_INDENT_2, default=str).decode())
            else:
                print("\n".join(_text_document(shown)))
            return EXIT_OK
        enabled = args.action == "enable"
        await store.set_enabled(row.uuid, enabled)
        print(f"mapping {row.name} {'enabled' if enabled else 'disabled'}")
        return EXIT_OK
    finally:
        await store.aclose()


async def _queue(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from router.store import connect

    config = _optional_config(args)
    store = await connect(_store_url(args, config))
    try:
        names = {
            f"mapping:{row.uuid}": f"mapping {row.name}" for row in await store.list_mappings()
        }

        def shown(target: str) -> str:
            kind, _, name = target.partition(":")
            return names.get(target, f"{kind} {name}")

        target = None
        if args.function:
            target = f"function:{args.function}"
        elif args.mapping:
            row = await store.get_mapping_by_name(args.mapping)
            if row is None:
                return _fail(f"no mapping named {args.mapping!r}", EXIT_BAD_INPUT)
            target = f"mapping:{row.uuid}"
        if args.action == "purge":
            if target is None and not args.all:
                return _fail("say what to purge: --function NAME, --mapping NAME or --all", 2)
            count = await store.purge_events(target=target)
            print(f"purged {count} queued events" + (f" of {shown(target)}" if target else ""))
            return EXIT_OK
        now = datetime.now(UTC)
        print(f"{'TARGET':40} {'EVENTS':>7} {'OLDEST AGE':>11}")
        for depth in await store.queue_depths():
            if target is None or depth.target == target:
                age = (now - depth.oldest).total_seconds() if depth.oldest else 0.0
                print(f"{shown(depth.target):40} {depth.events:>7} {age:>10.1f}s")
        events = await store.list_events(target=target, limit=args.limit)
        if events:
            print()
            print(f"{'ID':36} {'TARGET':24} {'ENQUEUED':24} {'TRIES':>5} {'HELD BY':16} PAYLOAD")
        for event in events:
            held = ""
            if event.lease_owner and event.lease_expires_at and event.lease_expires_at > now:
                held = event.lease_owner
            payload = event.payload if len(event.payload) <= 60 else event.payload[:57] + "..."
            print(
                f"{event.id:36} {shown(event.target):24} "
                f"{event.enqueued_at.isoformat(timespec='seconds'):24} {event.deliveries:>5} "
                f"{held:16} {payload}"
            )
        return EXIT_OK
    finally:
        await store.aclose()


async def _db_upgrade(args: argparse.Namespace) -> int:
    from router.store import display_url, setup_errors
    from router.store.migrate import upgrade_async

    url = _store_url(args, None)
    with setup_errors():
        revision = await upgrade_async(url)
    print(f"{display_url(url)}: schema at revision {revision}")
    return EXIT_OK


async def _replay(args: argparse.Namespace) -> int:
    from router.replay import Replay, replay
    from router.store import connect

    config = _load(args, check=True, to_run=True)
    store = await connect(_store_url(args, config))
    failures = 0
    replayed = 0
    try:
        mapping_uuid = None
        if args.mapping:
            row = await store.get_mapping_by_name(args.mapping)
            if row is None:
                return _fail(f"no mapping named {args.mapping!r}", EXIT_BAD_INPUT)
            mapping_uuid = row.uuid
        events = await store.list_failed_events(mapping_uuid=mapping_uuid)
        if args.id:
            events = [e for e in events if e.id in set(args.id)]
        async for done in replay(config, store, events, dry_run=args.dry_run):
            event, function = done.event.id, done.event.function_name
            if done.what is Replay.UNKNOWN_FUNCTION:
                failures += 1
                print(
                    f"failed event {event}: function {function!r} is not declared in the "
                    "configuration; skipped",
                    file=sys.stderr,
                )
            elif done.what is Replay.NOTHING_TO_REPLAY:
                print(
                    f"failed event {event}: the source could not turn it into an event "
                    f"({done.detail}); nothing to replay, skipped",
                    file=sys.stderr,
                )
            elif done.what is Replay.WOULD_REPLAY:
                print(f"would replay failed event {event} to {function}")
            elif done.what is Replay.REPLAYED:
                replayed += 1
                print(f"replayed failed event {event} to {function}: OK")
            else:
                failures += 1
                print(
                    f"replayed failed event {event} to {function}: {done.detail}",
                    file=sys.stderr,
                )
    finally:
        await store.aclose()
    if not args.dry_run:
        print(f"{replayed} replayed, {failures} failed")
    return EXIT_FAILURE if failures else EXIT_OK


def _import_sam(args: argparse.Namespace) -> int:
    from router.sam import import_template

    try:
        with open(args.template, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        return _fail(f"{args.template}: {e.strerror}", EXIT_BAD_INPUT)
    try:
        imported = import_template(
            text,
            args.template,
            endpoint_url=args.endpoint_url,
            region=args.region,
            inline_code=args.inline_code,
        )
    except ValueError as e:
        return _fail(f"{args.template}: {e}", EXIT_BAD_INPUT)
    sys.stdout.write(yaml.safe_dump(imported.config, sort_keys=False, allow_unicode=True))
    for note in imported.notes:
        print(f"{args.template}: {note}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="router", description="Lambda-style event source mappings, outside AWS."
    )
    parser.add_argument("--version", action="version", version=f"router {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, store: bool = True) -> None:
        p.add_argument(
            "--config", "-c", help="YAML file or directory (default: ./config, or $ROUTER_CONFIG)"
        )
        if store:
            p.add_argument(
                "--store",
                help="store URL (default: $ROUTER_STORE_URL, the "
                "config's router.store, or sqlite:///router.db)",
            )

    p = sub.add_parser("run", help="run the router")
    common(p)
    p.add_argument(
        "--http-listen",
        help="HOST:PORT for /healthz, /readyz, /metrics, or 'off' (default: "
        "$ROUTER_HTTP_LISTEN, the config's router.http_listen, or 127.0.0.1:9090)",
    )
    p.add_argument(
        "--replica-id",
        help="this replica's id for leases and schedule fires (default: $ROUTER_REPLICA_ID "
        "or the host name; distinct per replica)",
    )
    p.add_argument("--log-format", choices=["console", "json"])
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--event-loop",
        choices=["asyncio", "uvloop"],
        help="the event loop (default: $ROUTER_EVENT_LOOP or asyncio; uvloop needs the "
        "'uvloop' extra)",
    )

    p = sub.add_parser("validate", help="check the configuration (exit 0 or 2)")
    p.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="YAML file or directory (the same as --config)",
    )
    common(p, store=False)

    p = sub.add_parser("apply", help="write the YAML mappings into the store")
    common(p)
    p.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")

    p = sub.add_parser("mappings", help="list, show, enable or disable mappings")
    msub = p.add_subparsers(dest="action", required=True)

    def output(q: argparse.ArgumentParser, text: str) -> None:
        q.add_argument(
            "--output",
            "-o",
            choices=["text", "json"],
            default="text",
            help=f"text ({text}, the default) or json",
        )

    q = msub.add_parser("list", help="one line per mapping (the last result cut to one line)")
    common(q)
    output(q, "a table")
    for action in ("show", "enable", "disable"):
        q = msub.add_parser(
            action,
            help={
                "show": "every column of one mapping, and its counters, in full",
                "enable": "set enabled = true",
                "disable": "set enabled = false",
            }[action],
        )
        q.add_argument("name")
        common(q)
        if action == "show":
            output(q, "key: value lines")

    p = sub.add_parser("queue", help="look inside or purge the asynchronous queue")
    qsub = p.add_subparsers(dest="action", required=True)
    for action in ("list", "purge"):
        q = qsub.add_parser(action)
        common(q)
        which = q.add_mutually_exclusive_group()
        which.add_argument("--function", help="only the asynchronous Invoke calls of FUNCTION")
        which.add_argument("--mapping", help="only the events of MAPPING (a front-end's)")
        if action == "list":
            q.add_argument("--limit", type=int, default=20, help="events shown (default 20)")
        else:
            which.add_argument("--all", action="store_true", help="every queued event")

    p = sub.add_parser("db", help="store schema")
    dsub = p.add_subparsers(dest="action", required=True)
    q = dsub.add_parser("upgrade", help="migrate the store to this version's schema")
    q.add_argument("--store", help="store URL")

    sub.add_parser("schema", help="print the JSON Schema of the YAML configuration")

    p = sub.add_parser(
        "import-sam",
        help="print a SAM template's functions and events as router YAML (what could not "
        "be carried over goes to standard error)",
    )
    p.add_argument("template", metavar="TEMPLATE", help="the SAM template (template.yaml)")
    p.add_argument(
        "--endpoint-url",
        help="written beside the SQS, Kinesis, DynamoDB and S3 events (an emulator's URL)",
    )
    p.add_argument("--region", default="us-east-1", help="AWS::Region (default us-east-1)")
    p.add_argument(
        "--inline-code",
        metavar="DIR",
        help="write each Python / Node.js function's InlineCode to DIR/FUNCTION/ (its folder)",
    )

    p = sub.add_parser("replay", help="re-invoke failed events kept by the table destination")
    common(p)
    p.add_argument("--mapping", help="only this mapping's failed events")
    p.add_argument("--id", type=int, action="append", help="only this failed event id")
    p.add_argument("--dry-run", action="store_true")

    sub.add_parser("test-pattern", help="test a filter pattern against an event", add_help=False)
    return parser


EVENT_LOOPS = ("asyncio", "uvloop")
T = TypeVar("T")


def event_loop(flag: str | None) -> str:
    """``--event-loop``, else ``$ROUTER_EVENT_LOOP``, else ``asyncio``."""
    if flag:
        return flag
    value = os.environ.get("ROUTER_EVENT_LOOP", "").strip().lower() or "asyncio"
    if value not in EVENT_LOOPS:
        raise ConfigError(
            f"ROUTER_EVENT_LOOP={value!r} is not an event loop: set it to asyncio or uvloop"
        )
    return value


def run_loop(name: str, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on asyncio's loop or uvloop's (a clear error when uvloop is not
    installed)."""
    if name != "uvloop":
        return asyncio.run(main)
    try:
        import uvloop
    except ImportError:
        main.close()
        raise MissingDependencyError(
            "the uvloop event loop is not installed: pip install 'event-router[uvloop]' "
            "or run with --event-loop asyncio",
            library="uvloop",
            extra="uvloop",
        ) from None
    return uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "test-pattern":
        from router.filters.cli import test_pattern_main

        return test_pattern_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command != "run":
        logs.setup("console", "WARNING")
    try:
        if args.command == "run":
            return run_loop(event_loop(args.event_loop), _run(args))
        if args.command == "validate":
            return _validate(args)
        if args.command == "apply":
            return asyncio.run(_apply(args))
        if args.command == "mappings":
            return asyncio.run(_mappings(args))
        if args.command == "queue":
            return asyncio.run(_queue(args))
        if args.command == "db":
            return asyncio.run(_db_upgrade(args))
        if args.command == "schema":
            print(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode())
            return EXIT_OK
        if args.command == "replay":
            return asyncio.run(_replay(args))
        if args.command == "import-sam":
            return _import_sam(args)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (SetupError, MissingDependencyError) as e:
        return _fail(redact(str(e)), EXIT_BAD_INPUT)
    except SchemaOutdatedError as e:
        return _fail(str(e), EXIT_FAILURE)
    except RouterError as e:
        return _fail(redact(str(e)), EXIT_FAILURE)
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # The reader went away (`router schema | head`): nothing more to say, and nothing to
        # flush at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
