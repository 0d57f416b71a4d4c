"""A router run with secrets from the environment and from files, against real services
(the AWS emulator, the Kafka broker, an HTTP Lambda endpoint and an HTTP destination that
both check their credentials), on SQLite and PostgreSQL: afterwards no table of the store,
no log line and no CLI output holds any of the secret values; the store holds references."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from router.models import MappingRow
from router.store import SQLStore
from tests.aws.util import make_queue
from tests.fixtures.aws import unique
from tests.fixtures.postgres import PG_HOST, PG_PORT, PG_USER
from tests.helpers import eventually, router_command
from tests.kafka.helpers import produce

pytestmark = [pytest.mark.aws, pytest.mark.kafka]

SECRETS = {
    "INVOKE_TOKEN": "Bearer tok-7Hq2wq",  # in a file
    "HOOK_PASSWORD": "hook-pw-Zx81kd",
    "KAFKA_PASSWORD": "kafka-pw-Pq55rt",
    "SSL_PASSWORD": "ssl-pw-Lm09fe",  # in a file
    "AWS_KEY_ID": "AKIAROUTERTEST77",
    "AWS_SECRET": "aws-secret-Gf42ab",  # in a file
    "AWS_TOKEN": "aws-token-Vb13cd",
    "SQL_AWS_SECRET": "sql-aws-secret-Rt66xy",  # in a file, named by a row made in SQL
    "PG_PASSWORD": "pg-pw-Ux30zq",
}
IN_FILES = ("INVOKE_TOKEN", "SSL_PASSWORD", "AWS_SECRET", "SQL_AWS_SECRET")

HANDLER = """\
import json

def handle(event, context):
    with open("events.jsonl", "a") as f:
        f.write(json.dumps(event) + "\\n")
"""

CONFIG = """\
router:
{store}
functions:
  local:
    invoker: python
    handler: secret_handlers:handle
  remote:
    invoker: http
    url: http://127.0.0.1:{http_port}
    headers:
      Authorization: {{file: {secrets}/INVOKE_TOKEN}}
mappings:
  - name: files
    function: remote
    source: {{type: directory, path: ./inbox}}
    maximum_retry_attempts: 0
    destination_config:
      on_failure:
        destination: "http://router:${{HOOK_PASSWORD}}@127.0.0.1:{http_port}/failed"
  - name: queue
    function: local
    source:
      type: sqs
      queue_url: {queue_url}
      endpoint_url: {endpoint}
      region: us-east-1
      wait_time_seconds: 1
      aws_access_key_id: ${{AWS_KEY_ID}}
      aws_secret_access_key: {{file: {secrets}/AWS_SECRET}}
      aws_session_token: ${{AWS_TOKEN}}
  - name: stream
    function: local
    starting_position: TRIM_HORIZON
    source:
      type: kafka
      bootstrap_servers: {broker}
      topics: [{topic}]
      sasl_plain_username: router
      sasl_plain_password: ${{KAFKA_PASSWORD}}
      ssl_password: {{file: {secrets}/SSL_PASSWORD}}
      session_timeout_ms: 6000
      heartbeat_interval_ms: 500
"""


@dataclass
class Endpoint:
    """The HTTP Lambda endpoint and on-failure destination, each checking credentials."""

    port: int
    invocations: list[Any]
    failures: list[Any]
    refused: list[str]


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    invocations: list[Any] = []
    failures: list[Any] = []
    refused: list[str] = []

    async def invoke(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != SECRETS["INVOKE_TOKEN"]:
            refused.append("invoke")
            return web.json_response({"message": "denied"}, status=403)
        event = await request.json()
        invocations.append(event)
        key = event["Records"][0]["s3"]["object"]["key"]
        if key.startswith("fail"):
            error = {"errorMessage": "refused on purpose", "errorType": "ValueError"}
            return web.json_response(error, headers={"X-Amz-Function-Error": "Unhandled"})
        return web.json_response({"ok": True})

    async def failed(request: web.Request) -> web.Response:
        expected = base64.b64encode(f"router:{SECRETS['HOOK_PASSWORD']}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            refused.append("destination")
            return web.Response(status=401)
        failures.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
    app.router.add_post("/failed", failed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Endpoint(port, invocations, failures, refused)
    finally:
        await runner.cleanup()


async def _pg_database() -> tuple[str, str]:
    from tests.fixtures.postgres import create_pg_database

    name = await create_pg_database()
    return name, f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def _dump_sqlite(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert "event_source_mappings" in tables
        parts = [f"{t}: {conn.execute(f'SELECT * FROM {t}').fetchall()!r}" for t in tables]
    finally:
        conn.close()
    # The files themselves too (the write-ahead log included).
    for file in path.parent.glob(path.name + "*"):
        parts.append(file.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def _dump_postgres(database: str) -> str:
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))
    if not bindir:
        pytest.skip("pg_dump is not installed")
    result = subprocess.run(
        [str(bindir[-1]), "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, database],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "event_source_mappings" in result.stdout
    return result.stdout


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [*router_command(), *args], capture_output=True, text=True, cwd=cwd, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_no_secret_reaches_the_store_the_logs_or_the_cli(
    backend: str,
    tmp_path: Path,
    aws: Any,
    kafka_broker: str,
    make_topic: Any,
    endpoint: Endpoint,
) -> None:
    from tests.fixtures.postgres import drop_pg_database

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in IN_FILES:
        (secrets / name).write_text(SECRETS[name] + "\n")
    (tmp_path / "inbox").mkdir()
    (tmp_path / "secret_handlers.py").write_text(HANDLER)
    database = ""
    if backend == "postgres":
        database, _ = await _pg_database()
        store = f"  store: postgresql://{PG_USER}:${{PG_PASSWORD}}@{PG_HOST}:{PG_PORT}/{database}"
        store_url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"
    else:
        store = f"  store: sqlite:///{tmp_path / 'router.db'}"
        store_url = f"sqlite:///{tmp_path / 'router.db'}"
    topic = await make_topic()
    async with aws.client("sqs") as sqs:
        queue_url = await make_queue(sqs, unique("secrets"))
        sql_queue_url = await make_queue(sqs, unique("sql-secrets"))
    config = tmp_path / "router.yaml"
    config.write_text(
        CONFIG.format(
            store=store,
            http_port=endpoint.port,
            secrets=secrets,
            queue_url=queue_url,
            endpoint=aws.endpoint,
            broker=kafka_broker,
            topic=topic,
        )
    )
    env = {
        **os.environ,
        **{k: v for k, v in SECRETS.items() if k not in IN_FILES},
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parents[2])]),
        "PYTHONUNBUFFERED": "1",
        "ROUTER_RETRY_BASE_DELAY": "0.05",
        "ROUTER_RETRY_MAX_DELAY": "0.5",
    }
    env.pop("ROUTER_STORE_URL", None)
    log = tmp_path / "router.log"
    try:
        if backend == "postgres":
            _cli("db", "upgrade", "--store", store_url, cwd=tmp_path, env=env)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [*router_command(), "run", "--config", str(config), "--http-listen", "127.0.0.1:0"],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            await eventually(
                lambda: "running" in log.read_text() or proc.poll() is not None, what="start"
            )
            assert proc.poll() is None, log.read_text()
            # An operator adds a mapping in SQL whose secret is a reference too.
            async with SQLStore(store_url) as admin:
                await admin.create_mapping(
                    MappingRow(
                        uuid=str(uuid.uuid4()),
                        name="sql-queue",
                        function_name="local",
                        source_type="sqs",
                        source_config={
                            "queue_url": sql_queue_url,
                            "endpoint_url": aws.endpoint,
                            "region": "us-east-1",
                            "wait_time_seconds": 1,
                            "aws_access_key_id": "${AWS_KEY_ID}",
                            "aws_secret_access_key": {"file": f"{secrets}/SQL_AWS_SECRET"},
                        },
                        origin="sql",
                    )
                )
            (tmp_path / "inbox" / "ok.txt").write_text("fine")
            (tmp_path / "inbox" / "fail.txt").write_text("refused")
            async with aws.client("sqs") as sqs:
                await sqs.send_message(QueueUrl=queue_url, MessageBody="from-yaml")
                await sqs.send_message(QueueUrl=sql_queue_url, MessageBody="from-sql")
            await produce(kafka_broker, topic, [b"from-kafka"])

            def delivered() -> set[str]:
                path = tmp_path / "events.jsonl"
                if not path.exists():
                    return set()
                out = set()
                for line in path.read_text().splitlines():
                    for record in json.loads(line).get("Records") or []:
                        out.add(record.get("body", ""))
                    for records in (json.loads(line).get("records") or {}).values():
                        out |= {base64.b64decode(r["value"]).decode() for r in records}
                return out

            await eventually(
                lambda: {"from-yaml", "from-sql", "from-kafka"} <= delivered(),
                timeout=60,
                what="the SQS and Kafka records delivered",
            )
            await eventually(lambda: len(endpoint.failures) == 1, what="the failure sent")
            await eventually(lambda: len(endpoint.invocations) == 2, what="both files invoked")
            assert endpoint.refused == []
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 60)
        assert code == 0, log.read_text()

        outputs = [log.read_text()]
        for name in ("files", "queue", "stream", "sql-queue"):
            outputs.append(_cli("mappings", "show", name, "--config", str(config), cwd=tmp_path,
                                env=env))  # fmt: skip
        outputs.append(_cli("mappings", "list", "--config", str(config), cwd=tmp_path, env=env))
        changed = config.read_text().replace("maximum_retry_attempts: 0", "")
        config.write_text(changed)
        outputs.append(_cli("apply", "--dry-run", "--config", str(config), cwd=tmp_path, env=env))
        dump = (
            _dump_postgres(database)
            if backend == "postgres"
            else _dump_sqlite(tmp_path / "router.db")
        )
    finally:
        if database:
            await drop_pg_database(database)

    for name, value in SECRETS.items():
        assert value not in dump, f"{name} is in the store"
        for text in outputs:
            assert value not in text, f"{name} is in the output: {text}"
    # What the store keeps instead: the references.
    assert "${HOOK_PASSWORD}" in dump
    assert "${KAFKA_PASSWORD}" in dump
    assert f"{secrets}/AWS_SECRET" in dump
    assert f"{secrets}/SQL_AWS_SECRET" in dump
