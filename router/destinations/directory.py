"""The ``directory`` destination: one JSON file per record, written atomically."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson

from router.abc import Destination
from router.errors import DestinationError
from router.models import PluginSettings


class DirectoryDestinationSettings(PluginSettings):
    path: str
    """Folder the records are written to (created if missing)."""


class DirectoryDestination(Destination):
    """Writes ``<path>/<mapping>/<YYYY-MM-DDTHH.MM.SS>-<uuid>.json``. The file appears only
    complete (written under a temporary name, fsynced, then renamed)."""

    Settings: ClassVar[type[PluginSettings]] = DirectoryDestinationSettings

    @classmethod
    def from_target(cls, target: str) -> DirectoryDestinationSettings:
        path = target.removeprefix("file://").removeprefix("directory:")
        return DirectoryDestinationSettings(path=path)

    async def send(self, record: Any) -> None:
        folder = Path(self.settings.path) / self.context.mapping_name
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H.%M.%S")
        name = f"{stamp}-{uuid.uuid4()}.json"
        data = orjson.dumps(record, option=orjson.OPT_INDENT_2)
        try:
            await asyncio.to_thread(_write_atomically, folder, name, data)
        except OSError as e:
            raise DestinationError(f"cannot write to {folder}: {e}") from e


def _write_atomically(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)
