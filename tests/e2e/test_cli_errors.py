"""What the `router` command says when something is wrong: one line naming the fix, exit 2,
never a traceback; and `mappings show` on both stores."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
from pathlib import Path

from router.models import StatsDelta
from router.store import SQLStore
from tests.helpers import router_command
from tests.store.helpers import make_row


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*router_command(), *args], capture_output=True, text=True, cwd=cwd, env=full_env
    )


def store_url(store: SQLStore) -> str:
    return store.engine.url.render_as_string(hide_password=False)


async def test_mappings_show_with_stats(store: SQLStore, tmp_path: Path) -> None:
    row = make_row("orders")
    await store.create_mapping(row)
    await store.add_stats(row.uuid, StatsDelta(records_in=3, invoked=2, failed=1))
    shown = cli(
        "mappings", "show", "orders", "--output", "json", "--store", store_url(store), cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["name"] == "orders"
    assert (document["stats"]["records_in"], document["stats"]["invoked"]) == (3, 2)
    assert document["stats"]["failed"] == 1


BROKEN_HANDLER = """\
functions:
  fine:
    invoker: python
    handler: router.examples.hello:handler
  broken:
    invoker: python
    handler: no_such_module:handle
mappings:
  - name: inbox
    function: fine
    source: {type: directory, path: ./inbox}
"""


def _rows(db: Path) -> list[str]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM event_source_mappings")]
    finally:
        conn.close()


def test_validate_imports_python_handlers(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(BROKEN_HANDLER)
    result = cli("validate", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{config}:7: functions.broken.handler: cannot import module 'no_such_module' of "
        "handler 'no_such_module:handle': ModuleNotFoundError: No module named "
        "'no_such_module' (check the module name, 'path' and sys.path)"
    ]
    (tmp_path / "no_such_module.py").write_text("def handle(event, context):\n    return 1\n")
    # Imported as `run` imports it: from the working directory the router runs in.
    ok = cli("validate", "--config", str(config), cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert ok.returncode == 0, ok.stderr
    missing = config.read_text().replace("no_such_module:handle", "no_such_module:other")
    config.write_text(missing)
    result = cli("validate", "--config", str(config), cwd=tmp_path, env={"PYTHONPATH": "."})
    assert result.returncode == 2
    assert f"{config}:7: functions.broken.handler: handler 'no_such_module:other': " in (
        result.stderr
    )


def test_run_applies_nothing_when_a_function_cannot_load(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(BROKEN_HANDLER)
    db = tmp_path / "router.db"
    result = cli(
        "run", "--config", str(config), "--store", f"sqlite:///{db}", "--http-listen", "off",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{config}:7: functions.broken.handler: cannot import module" in result.stderr
    assert "Traceback" not in result.stderr
    assert _rows(db) == []


def test_validate_checks_invoker_settings(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(
        "functions:\n"
        "  remote:\n"
        "    invoker: http\n"
        "    url: http://router:${INVOKE_PASSWORD}@127.0.0.1:9000\n"
        "    headers:\n"
        "      authorization: ${INVOKE_TOKEN}\n"
        "mappings: []\n"
    )
    env = {"INVOKE_PASSWORD": "pw", "INVOKE_TOKEN": "Bearer t"}
    result = cli("validate", "--config", str(config), cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"{config}:6: functions.remote.headers.authorization: the url has credentials "
        "(user:password@) and an Authorization header is set too"
    )


def test_a_function_that_cannot_start_applies_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "router.yaml"
        config.write_text(
            "functions:\n"
            "  rt:\n"
            "    invoker: runtime-api\n"
            f"    listen: 127.0.0.1:{port}\n"
            "mappings:\n"
            "  - name: inbox\n"
            "    function: rt\n"
            "    source: {type: directory, path: ./inbox}\n"
        )
        db = tmp_path / "router.db"
        result = cli(
            "run", "--config", str(config), "--store", f"sqlite:///{db}", "--http-listen", "off",
            cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"{config}:4: functions.rt.listen: cannot listen on 127.0.0.1:{port} for the Lambda "
        "Runtime API: Address already in use"
    )
    assert _rows(db) == []


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


FINE = """\
functions:
  fine:
    invoker: python
    handler: router.examples.hello:handler
mappings:
  - name: inbox
    function: fine
    source: {type: directory, path: ./inbox}
"""


def test_operations_port_in_use_says_how_to_choose_another(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(FINE)
    db = tmp_path / "router.db"
    with _taken_port() as taken:
        port = taken.getsockname()[1]
        result = cli(
            "run", "--config", str(config), "--store", f"sqlite:///{db}", cwd=tmp_path,
            env={"ROUTER_HTTP_LISTEN": f"127.0.0.1:{port}"},
        )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"router: cannot listen on 127.0.0.1:{port} for /healthz, /readyz and /metrics: "
        "Address already in use. Is another router running on this host? Give each its own "
        "port with --http-listen HOST:PORT, $ROUTER_HTTP_LISTEN or router.http_listen "
        "(off: no listener)"
    )
    assert _rows(db) == []
    bad = cli("run", "--config", str(config), "--http-listen", "9090", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr == (
        "router: --http-listen '9090': must be HOST:PORT (e.g. 127.0.0.1:9091) or off\n"
    )


def _without(tmp_path: Path, *libraries: str) -> dict[str, str]:
    """An environment in which importing ``libraries`` fails as if they were not
    installed."""
    blocked = tmp_path / "blocked"
    for library in libraries:
        (blocked / library).mkdir(parents=True)
        (blocked / library / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{library}'\", name='{library}')\n"
        )
    return {"PYTHONPATH": str(blocked)}


def test_missing_extras_name_the_install_command(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(FINE)
    env = _without(tmp_path, "asyncpg", "aiokafka")
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/router"
    for command in (["run", "--config", str(config)], ["db", "upgrade"]):
        result = cli(*command, "--store", url, cwd=tmp_path, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr == (
            f"router: the postgresql store ({url})"
            " needs the 'asyncpg' library: pip install 'event-router[postgres]'\n"
        )
    config.write_text(
        FINE.replace(
            "source: {type: directory, path: ./inbox}",
            "source: {type: kafka, bootstrap_servers: '127.0.0.1:9092', topics: [t]}",
        )
    )
    # The settings are checked without the library; running needs it.
    result = cli("validate", "--config", str(config), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    result = cli("run", "--config", str(config), cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr == (
        f"{config}:8: mappings[0].source.type: the source type 'kafka' needs the 'aiokafka' "
        "library: pip install 'event-router[kafka]'\n"
    )


AWS_EVERYWHERE = """\
functions:
  remote: {invoker: lambda, function_name: orders}
mappings:
  - name: orders
    function: remote
    source: {type: sqs, queue_url: "http://127.0.0.1:1/000000000000/orders"}
"""


def test_the_aws_package_names_its_extra(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(AWS_EVERYWHERE)
    env = _without(tmp_path, "aioboto3")
    assert cli("validate", "--config", str(config), cwd=tmp_path, env=env).returncode == 0
    result = cli("run", "--config", str(config), cwd=tmp_path, env=env)
    assert result.returncode == 2
    hint = "needs the 'aioboto3' library: pip install 'event-router[aws]'"
    assert result.stderr == (
        f"{config}:2: functions.remote.invoker: the invoker type 'lambda' {hint}\n"
        f"{config}:6: mappings[0].source.type: the source type 'sqs' {hint}\n"
    )


def test_an_unreachable_store_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(FINE)
    port = _free_port()
    url = f"postgresql://router:hunter2@127.0.0.1:{port}/router"
    for command in (["run", "--config", str(config)], ["mappings", "list"], ["db", "upgrade"]):
        result = cli(*command, "--store", url, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"router: store postgresql://router:***@127.0.0.1:{port}/router: ")
        assert line.endswith(
            "; check that the store is reachable and the URL (from --store, "
            "$ROUTER_STORE_URL or router.store)"
        )
        assert "hunter2" not in result.stderr
