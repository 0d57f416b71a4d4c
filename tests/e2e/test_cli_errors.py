"""What the `router` command says when something is wrong: one line naming the fix, exit 2,
never a traceback; and `mappings show` on both stores."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from router.models import StatsDelta
from router.store import SQLStore
from tests.helpers import router_command
from tests.store.helpers import make_row


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

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
    shown = cli("mappings", "show", "orders", "--store", store_url(store), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["name"] == "orders"
    assert (document["stats"]["records_in"], document["stats"]["invoked"]) == (3, 2)
    assert document["stats"]["failed"] == 1
