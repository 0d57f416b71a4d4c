"""What the `router` command prints: `validate PATH`, the `mappings` table and `show` with
multi-line values, `--output json`, one spelling of the store URL, and a README that names
every flag and environment variable."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from pathlib import Path

from router.models import StatsDelta
from router.store import SQLStore
from tests.helpers import router_command
from tests.store.helpers import make_row

README = Path(__file__).parents[2] / "README.md"

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app.py", line 3, in handler\n'
    "    raise ValueError('bad order')\n"
    "ValueError: bad order"
)

CONFIG = """\
functions:
  fn:
    invoker: python
    handler: router.examples.hello:handler
mappings:
  - name: inbox
    function: fn
    source: {type: directory, path: ./inbox}
"""


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    full_env.update(env or {})
    return subprocess.run(
        [*router_command(), *args], capture_output=True, text=True, cwd=cwd, env=full_env
    )


def store_url(store: SQLStore) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def test_output_into_a_pipe_that_closes_early_is_not_an_error(tmp_path: Path) -> None:
    # `router schema | head -1`: the reader goes away after one line.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    with subprocess.Popen(
        [*router_command(), "schema"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().strip() == b"{"
        process.stdout.close()
        stderr = process.stderr.read().decode()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


# ---------------------------------------------------------------------------- validate


def test_validate_takes_the_configuration_as_a_positional_path(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "router.yaml").write_text(CONFIG)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    for given in (["conf/router.yaml"], ["conf"], ["--config", "conf"], ["-c", "conf"]):
        result = cli("validate", *given, cwd=tmp_path)
        assert result.returncode == 0, (given, result.stderr)
        assert "OK (1 functions, 1 mappings)" in result.stdout

    # $ROUTER_CONFIG still works when no PATH is given.
    result = cli("validate", cwd=elsewhere, env={"ROUTER_CONFIG": str(tmp_path / "conf")})
    assert result.returncode == 0, result.stderr

    both = cli("validate", "conf", "--config", "other", cwd=tmp_path)
    assert both.returncode == 2
    assert "give one, as PATH or with --config" in both.stderr
    assert "Traceback" not in both.stderr

    missing = cli("validate", "nowhere.yaml", cwd=tmp_path)
    assert missing.returncode == 2
    assert "configuration 'nowhere.yaml' not found: pass PATH or set ROUTER_CONFIG" in (
        missing.stderr
    )


def test_validate_path_reports_errors_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "broken.yaml").write_text(CONFIG + "    batch_size: lots\n")
    result = cli("validate", "broken.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert re.search(r"broken\.yaml:\d+", result.stderr), result.stderr


# ---------------------------------------------------------------------------- mappings


async def _two_mappings(store: SQLStore) -> None:
    failing = make_row(
        "orders-with-a-name-longer-than-the-old-column", last_processing_result=TRACEBACK
    )
    await store.create_mapping(failing)
    await store.add_stats(failing.uuid, StatsDelta(records_in=12, invoked=10, failed=2))
    fine = make_row("audit", last_processing_result="OK")
    await store.create_mapping(fine)


async def test_mappings_list_keeps_each_mapping_on_one_aligned_line(
    store: SQLStore, tmp_path: Path
) -> None:
    await _two_mappings(store)
    listed = cli("mappings", "list", "--store", store_url(store), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 3, listed.stdout  # the header and one line per mapping
    header, audit, orders = lines
    assert audit.startswith("audit ")
    assert orders.startswith("orders-with-a-name-longer-than-the-old-column ")
    # Every column starts where its header does, however long the name.
    for title in ("STATE", "SOURCE", "FUNCTION", "LAST RESULT"):
        at = header.index(title)
        assert audit[at - 1] == " " and audit[at] != " ", (title, audit)
        assert orders[at - 1] == " " and orders[at] != " ", (title, orders)
    # Counters are right-aligned under their headers.
    assert orders[: header.index("INVOKED") + len("INVOKED")].endswith("10")
    # The traceback is cut to its first line, saying so.
    assert orders.endswith("Traceback (most recent call last): ...")
    assert "ValueError" not in listed.stdout


async def test_mappings_list_cuts_a_long_result_to_the_width(
    store: SQLStore, tmp_path: Path
) -> None:
    await store.create_mapping(make_row("wide", last_processing_result="x" * 500))
    listed = cli("mappings", "list", "--store", store_url(store), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1]
    assert row.endswith("x" * 77 + "...")
    assert "x" * 81 not in row


async def test_mappings_show_prints_multi_line_values_in_full(
    store: SQLStore, tmp_path: Path
) -> None:
    await _two_mappings(store)
    name = "orders-with-a-name-longer-than-the-old-column"
    shown = cli("mappings", "show", name, "--store", store_url(store), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"name: {name}\n" in text
    assert "last_processing_result: |\n" in text
    for line in TRACEBACK.splitlines():
        assert f"  {line}" in text, line
    assert re.search(r"^stats:\n(  .*\n)*  records_in: 12$", text, re.MULTILINE), text
    assert re.search(r"^  failed: 2$", text, re.MULTILINE), text
    # Nested configuration is shown below its key.
    nested = r"^source_config:\n(  .*\n)*  bootstrap_servers: 127\.0\.0\.1:9092$"
    assert re.search(nested, text, re.MULTILINE), text


async def test_output_json_on_mappings_list_and_show(store: SQLStore, tmp_path: Path) -> None:
    await _two_mappings(store)
    url = store_url(store)
    listed = cli("mappings", "list", "--output", "json", "--store", url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    documents = json.loads(listed.stdout)
    assert [d["name"] for d in documents] == [
        "audit",
        "orders-with-a-name-longer-than-the-old-column",
    ]
    orders = documents[1]
    assert orders["last_processing_result"] == TRACEBACK  # in full
    assert orders["stats"]["records_in"] == 12
    assert (orders["enabled"], orders["source_type"], orders["function"]) == (
        True,
        "kafka",
        "handler",
    )
    assert orders["uuid"] and orders["state"]

    shown = cli("mappings", "show", "audit", "-o", "json", "--store", url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["name"] == "audit"
    assert document["last_processing_result"] == "OK"
    assert "stats" in document


# ---------------------------------------------------------------------------- store URL


def test_the_store_url_is_printed_one_way_however_it_is_typed(tmp_path: Path) -> None:
    db = tmp_path / "router.db"
    spellings = [f"sqlite:///{db}", f"sqlite+aiosqlite:///{db}", f"sqlite+pysqlite:///{db}"]
    printed = set()
    for typed in spellings:
        upgraded = cli("db", "upgrade", "--store", typed, cwd=tmp_path)
        assert upgraded.returncode == 0, upgraded.stderr
        printed.add(upgraded.stdout.split(": schema at revision")[0])
    assert printed == {f"sqlite:///{db}"}

    missing = tmp_path / "no-such-folder" / "router.db"
    errors = set()
    for typed in (f"sqlite:///{missing}", f"sqlite+aiosqlite:///{missing}"):
        failed = cli("mappings", "list", "--store", typed, cwd=tmp_path)
        assert failed.returncode == 2
        errors.add(failed.stderr)
    assert len(errors) == 1
    assert f"store sqlite:///{missing}:" in errors.pop()


def test_the_help_names_the_default_store_as_it_is_printed(tmp_path: Path) -> None:
    helped = cli("run", "--help", cwd=tmp_path)
    assert "sqlite:///router.db" in helped.stdout
    assert "aiosqlite" not in helped.stdout


# ---------------------------------------------------------------------------- README


def _commands() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every leaf command of ``router`` (``mappings list``, ``db upgrade``...) with its
    parser, from the parser the command itself uses."""
    from router.cli import _parser
    from router.filters.cli import _parser as test_pattern_parser

    found: list[tuple[str, argparse.ArgumentParser]] = []
    todo = [("", _parser())]
    while todo:
        words, parser = todo.pop(0)
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found.append((words, parser))
            continue
        for name, sub in subs[0].choices.items():
            if name == "test-pattern":  # parsed by its own parser
                sub = test_pattern_parser()
            todo.append((f"{words} {name}".strip(), sub))
    return found


def test_the_readme_documents_every_flag() -> None:
    readme = README.read_text()
    commands = _commands()
    names = {words for words, _ in commands}
    assert {"run", "validate", "mappings list", "mappings show", "db upgrade"} <= names, names
    missing = []
    for words, parser in commands:
        if not re.search(rf"`router {words}\b", readme):
            missing.append(f"router {words}")
        flags = {
            flag
            for action in parser._actions
            for flag in action.option_strings
            if flag.startswith("--") and flag != "--help"
        }
        for flag in sorted(flags):
            if not re.search(rf"`[^`]*router {words}[^`]*{flag}\b", readme) and (
                f"`{flag}" not in readme
            ):
                missing.append(f"router {words} {flag}")
    assert not missing, f"not in README.md: {missing}"


def test_the_readme_documents_every_environment_variable() -> None:
    readme = README.read_text()
    root = Path(__file__).parents[2]
    used: set[str] = set()
    for folder in ("router", "connectors"):
        for source in (root / folder).rglob("*.py"):
            used.update(re.findall(r"[\"'](ROUTER_[A-Z_]+)[\"']", source.read_text()))
    assert used, "no ROUTER_ variables found: the pattern is wrong"
    missing = sorted(name for name in used if f"`{name}`" not in readme)
    assert not missing, f"not in README.md: {missing}"
