"""Applying YAML to the store (SQLite and PostgreSQL): creates, updates, deletes, and the
rules that keep SQL-made mappings and operators' ``enabled`` switches alone."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from router.abc import Store
from router.config import RouterConfig, apply_config, apply_plan, load_config_text, plan_apply
from router.errors import ConfigErrors
from router.models import MappingRow
from router.store import SQLStore
from tests.store.helpers import external_execute

pytestmark = pytest.mark.usefixtures("test_plugins")

HEAD = """\
functions:
  echo: {invoker: python, handler: app:handle}
mappings:
"""


def config(*mappings: str) -> RouterConfig:
    body = "".join(
        textwrap.indent(textwrap.dedent(m), "    ").replace("    ", "  - ", 1) for m in mappings
    )
    return load_config_text(HEAD + body, "router.yaml")


INBOX = """\
name: inbox
function: echo
source: {type: directory, path: ./inbox}
"""

ORDERS = """\
name: orders
function: echo
source: {type: kafka, bootstrap_servers: "127.0.0.1:9092", topics: [orders]}
starting_position: LATEST
batch_size: 1
"""


async def sync(cfg: RouterConfig, store: Store) -> str:
    plan = await plan_apply(cfg, store)
    await apply_plan(plan, store)
    return plan.render()


async def by_name(store: Store) -> dict[str, MappingRow]:
    return {row.name: row for row in await store.list_mappings()}


async def test_create_then_nothing_to_do(store: Store) -> None:
    cfg = config(INBOX, ORDERS)
    plan = await plan_apply(cfg, store)
    assert [c.row.name for c in plan.creates] == ["inbox", "orders"]
    assert plan.render() == "+ create inbox (directory -> echo)\n+ create orders (kafka -> echo)"
    await apply_plan(plan, store)
    rows = await by_name(store)
    assert set(rows) == {"inbox", "orders"}
    assert rows["orders"].origin == "yaml" and rows["orders"].batch_size == 1
    again = await plan_apply(cfg, store)
    assert again.is_empty and again.render() == "no changes"
    assert set(again.unchanged) == {"inbox", "orders"}


async def test_update_shows_each_changed_field(store: Store) -> None:
    await sync(config(INBOX, ORDERS), store)
    uuid_before = (await by_name(store))["orders"].uuid
    changed = ORDERS.replace("batch_size: 1", "batch_size: 5").replace("[orders]", "[orders, x]")
    changed += "maximum_batching_window: 1\n"
    plan = await plan_apply(config(INBOX, changed), store)
    assert plan.render() == (
        "~ update orders: source.topics ['orders'] -> ['orders', 'x']; batch_size 1 -> 5; "
        "maximum_batching_window 0.5 -> 1"
    )
    await apply_plan(plan, store)
    row = (await by_name(store))["orders"]
    assert (row.uuid, row.batch_size, row.source_config["topics"]) == (
        uuid_before,
        5,
        ["orders", "x"],
    )
    assert (await plan_apply(config(INBOX, changed), store)).is_empty


async def test_delete_only_yaml_mappings(store: Store) -> None:
    await sync(config(INBOX, ORDERS), store)
    await store.create_mapping(
        MappingRow(
            uuid="",
            name="manual",
            function_name="echo",
            source_type="directory",
            source_config={"path": "/m"},
            origin="sql",
        )
    )
    plan = await plan_apply(config(INBOX), store)
    assert plan.render() == "- delete orders (kafka -> echo)"
    await apply_plan(plan, store)
    assert set(await by_name(store)) == {"inbox", "manual"}
    # An empty configuration deletes every YAML mapping and still leaves the SQL one.
    assert (
        await sync(load_config_text("functions: {}\n"), store)
        == "- delete inbox (directory -> echo)"
    )
    rows = await by_name(store)
    assert set(rows) == {"manual"} and rows["manual"].origin == "sql"


async def test_sql_mapping_is_never_touched_and_its_name_is_taken(store: Store) -> None:
    await store.create_mapping(
        MappingRow(
            uuid="",
            name="inbox",
            function_name="other",
            source_type="directory",
            source_config={"path": "/sql"},
            batch_size=1,
            origin="sql",
        )
    )
    with pytest.raises(ConfigErrors) as info:
        await plan_apply(config(ORDERS, INBOX), store)
    assert str(info.value) == (
        "router.yaml:9: mappings[1].name: a mapping named 'inbox' was created in SQL "
        "(origin=sql); rename this one, or delete the SQL one first"
    )
    row = (await by_name(store))["inbox"]
    assert (row.function_name, row.source_config, row.origin) == ("other", {"path": "/sql"}, "sql")


async def test_operator_disable_survives_unchanged_yaml(store: Store) -> None:
    cfg = config(INBOX, ORDERS)
    await sync(cfg, store)
    rows = await by_name(store)
    await store.set_enabled(rows["orders"].uuid, False)
    assert (await plan_apply(cfg, store)).is_empty
    # A YAML change of another field rewrites the row but keeps the operator's switch.
    await sync(config(INBOX, ORDERS.replace("batch_size: 1", "batch_size: 2")), store)
    row = (await by_name(store))["orders"]
    assert (row.batch_size, row.enabled) == (2, False)


async def test_yaml_enabled_change_is_applied(store: Store) -> None:
    await sync(config(INBOX), store)
    disabled = INBOX + "enabled: false\n"
    assert await sync(config(disabled), store) == "~ update inbox: enabled true -> false"
    assert (await by_name(store))["inbox"].enabled is False
    # The operator turns it back on; the unchanged YAML (still false) does not undo that.
    await store.set_enabled((await by_name(store))["inbox"].uuid, True)
    assert (await plan_apply(config(disabled), store)).is_empty
    assert (await by_name(store))["inbox"].enabled is True
    # Changing the YAML value again is applied.
    assert await sync(config(INBOX), store) == "~ update inbox: YAML enabled true (already true)"
    await store.set_enabled((await by_name(store))["inbox"].uuid, False)
    await sync(config(disabled), store)
    assert await sync(config(INBOX), store) == "~ update inbox: enabled false -> true"
    assert (await by_name(store))["inbox"].enabled is True


async def test_created_disabled(store: Store) -> None:
    assert await sync(config(INBOX + "enabled: false\n"), store) == (
        "+ create inbox (directory -> echo, disabled)"
    )
    assert (await by_name(store))["inbox"].enabled is False


async def test_sql_edit_of_a_yaml_mapping_stays_until_yaml_changes(store: Store) -> None:
    await sync(config(ORDERS), store)
    row = (await by_name(store))["orders"]
    row.batch_size = 300
    await store.update_mapping(row)
    assert (await plan_apply(config(ORDERS), store)).is_empty
    forced = await plan_apply(config(ORDERS), store, force=True)
    assert forced.render() == "~ update orders: batch_size 300 -> 1"
    await apply_plan(forced, store)
    assert (await by_name(store))["orders"].batch_size == 1


def plaintext_config(*mappings: str) -> RouterConfig:
    text = (
        "router: {allow_plaintext_secrets: true}\n"
        + HEAD
        + "".join(
            textwrap.indent(textwrap.dedent(m), "    ").replace("    ", "  - ", 1) for m in mappings
        )
    )
    return load_config_text(text, "router.yaml")


async def test_secrets_do_not_show_in_the_diff(store: Store) -> None:
    # Written in place, which router.allow_plaintext_secrets allows: then stored as written.
    with_secret = ORDERS.replace("[orders]}", "[orders], sasl_password: hunter2}")
    await sync(plaintext_config(with_secret), store)
    plan = await plan_apply(plaintext_config(with_secret.replace("hunter2", "hunter3")), store)
    assert plan.render() == "~ update orders: source.sasl_password *** -> ***"
    await apply_plan(plan, store)
    assert (await by_name(store))["orders"].source_config["sasl_password"] == "hunter3"


async def test_the_store_keeps_references(store: Store) -> None:
    with_secret = ORDERS.replace("[orders]}", "[orders], sasl_password: '${KAFKA_PASSWORD}'}")
    await sync(config(with_secret), store)
    row = (await by_name(store))["orders"]
    assert row.source_config["sasl_password"] == "${KAFKA_PASSWORD}"
    in_a_file = with_secret.replace("'${KAFKA_PASSWORD}'", "{file: /run/secrets/kafka}")
    plan = await plan_apply(config(in_a_file), store)
    assert plan.render() == "~ update orders: source.sasl_password *** -> ***"
    await apply_plan(plan, store)
    row = (await by_name(store))["orders"]
    assert row.source_config["sasl_password"] == {"file": "/run/secrets/kafka"}


async def test_a_mapping_declared_again_resumes_its_checkpoints(store: SQLStore) -> None:
    await sync(config(INBOX, ORDERS), store)
    inbox = (await by_name(store))["inbox"]
    await store.put_checkpoints(inbox.uuid, {"a.txt": "1:1:etag"})
    assert await sync(config(ORDERS), store) == "- delete inbox (directory -> echo)"
    assert "inbox" not in await by_name(store)

    plan = await plan_apply(config(INBOX, ORDERS), store)
    (create,) = plan.creates
    assert create.resumes is not None and create.row.uuid == inbox.uuid
    when = create.resumes.deleted_at.isoformat(timespec="seconds")
    assert plan.render() == (
        "+ create inbox (directory -> echo, resumes the checkpoints it had when it was "
        f"deleted at {when})"
    )
    await apply_plan(plan, store)
    assert (await by_name(store))["inbox"].uuid == inbox.uuid
    assert await store.get_checkpoints(inbox.uuid) == {"a.txt": "1:1:etag"}


async def test_another_source_type_under_the_name_starts_afresh(store: SQLStore) -> None:
    await sync(config(INBOX), store)
    inbox = (await by_name(store))["inbox"]
    await store.put_checkpoints(inbox.uuid, {"a.txt": "1:1:etag"})
    await sync(config(ORDERS), store)
    renamed = ORDERS.replace("name: orders", "name: inbox")
    assert await sync(config(renamed), store) == (
        "+ create inbox (kafka -> echo)\n- delete orders (kafka -> echo)"
    )
    assert (await by_name(store))["inbox"].uuid != inbox.uuid
    assert await store.get_checkpoints(inbox.uuid) == {}


async def test_retention_zero_deletes_checkpoints_at_once(store: SQLStore) -> None:
    head = "router: {deleted_mapping_retention: 0}\n" + HEAD
    text = head + "  - " + textwrap.indent(INBOX, "    ").lstrip()
    await sync(load_config_text(text, "router.yaml"), store)
    inbox = (await by_name(store))["inbox"]
    await store.put_checkpoints(inbox.uuid, {"a.txt": "1:1:etag"})
    await sync(load_config_text(head.replace("mappings:\n", "mappings: []\n")), store)
    assert await store.list_deleted_mappings() == []
    assert await store.get_checkpoints(inbox.uuid) == {}
    await sync(load_config_text(text, "router.yaml"), store)
    assert (await by_name(store))["inbox"].uuid != inbox.uuid


async def test_deleted_mappings_are_forgotten_after_the_retention(store: SQLStore) -> None:
    head = "router: {deleted_mapping_retention: 3600}\n" + HEAD
    text = head + "  - " + textwrap.indent(INBOX, "    ").lstrip()
    await sync(load_config_text(text, "router.yaml"), store)
    inbox = (await by_name(store))["inbox"]
    await store.put_checkpoints(inbox.uuid, {"a.txt": "1:1:etag"})
    await sync(load_config_text(head.replace("mappings:\n", "mappings: []\n")), store)
    await external_execute(
        store,
        "UPDATE deleted_mappings SET deleted_at = '2020-01-01 00:00:00.000000'",
    )
    assert await sync(load_config_text(text, "router.yaml"), store) == (
        "+ create inbox (directory -> echo)"
    )
    assert (await by_name(store))["inbox"].uuid != inbox.uuid
    assert await store.get_checkpoints(inbox.uuid) == {}


def _topic_mapping(name: str, batch_size: int = 1) -> str:
    return (
        ORDERS.replace("name: orders", f"name: {name}")
        .replace("[orders]", f"[{name}]")
        .replace("batch_size: 1", f"batch_size: {batch_size}")
    )


async def test_replicas_applying_at_once_take_turns(store: SQLStore) -> None:
    """Four replicas (stores with engines of their own) apply the same YAML at the same
    moment, twice: each mapping is created once, changed once, deleted once; nobody fails."""
    url = store.engine.url.render_as_string(hide_password=False)
    replicas = [SQLStore(url) for _ in range(4)]
    names = [f"m{i}" for i in range(8)]
    try:
        await asyncio.gather(*(r.start() for r in replicas))
        first = config(*(_topic_mapping(n) for n in names))
        plans = await asyncio.gather(*(apply_config(first, r) for r in replicas))
        assert sorted(len(p.creates) for p in plans) == [0, 0, 0, 8]
        rows = await by_name(store)
        assert sorted(rows) == names
        uuids = {n: r.uuid for n, r in rows.items()}

        # m0 goes, m8 comes, m1 changes.
        second = config(
            _topic_mapping("m1", batch_size=7),
            *(_topic_mapping(n) for n in names[2:]),
            _topic_mapping("m8"),
        )
        plans = await asyncio.gather(*(apply_config(second, r) for r in replicas))
    finally:
        await asyncio.gather(*(r.aclose() for r in replicas))
    assert sorted((len(p.creates), len(p.updates), len(p.deletes)) for p in plans) == [
        (0, 0, 0),
        (0, 0, 0),
        (0, 0, 0),
        (1, 1, 1),
    ]
    rows = await by_name(store)
    assert sorted(rows) == sorted([*names[1:], "m8"])
    assert rows["m1"].batch_size == 7
    assert all(rows[n].uuid == uuids[n] for n in names[1:])


async def test_an_apply_that_fails_half_way_changes_nothing(store: SQLStore) -> None:
    import sqlalchemy as sa

    await apply_config(config(_topic_mapping("a")), store)
    before = await by_name(store)
    seen: list[str] = []

    def second_create_fails(conn: object, cursor: object, statement: str, *args: object) -> None:
        # The creates are written after the delete of "a": failing there leaves the delete
        # made and the creates not, inside the one transaction.
        seen.append(statement)
        if statement.startswith("INSERT INTO event_source_mappings"):
            raise RuntimeError("the store failed half-way")

    engine = store.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", second_create_fails)
    try:
        with pytest.raises(Exception, match="failed half-way"):
            await apply_config(
                config(_topic_mapping("b"), _topic_mapping("c"), _topic_mapping("d")), store
            )
    finally:
        sa.event.remove(engine, "before_cursor_execute", second_create_fails)
    assert any(s.startswith("DELETE FROM event_source_mappings") for s in seen)
    assert await by_name(store) == before
