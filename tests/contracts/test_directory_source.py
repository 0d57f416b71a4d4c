"""The Source contract for the directory source: files in a real folder, the real watcher,
checkpoints in a real SQLite store."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from connectors.directory import DirectorySettings, DirectorySource
from router.abc import Source, SourceContext, Store
from router.models import MappingConfig, Record, SourceSpec
from router.store import SQLStore
from tests.contracts.source_contract import Item, SourceAdapter, SourceContract


class DirectoryAdapter(SourceAdapter):
    """One file per record, named by its body; every file is a lane of its own."""

    ordered = False
    redelivery = 5.0

    def __init__(self, folder: Path, store: Store) -> None:
        self.folder = folder
        self.store = store
        self.uuid = str(uuid.uuid4())

    async def produce(self, items: Sequence[Item]) -> None:
        for _, body in items:
            (self.folder / body).write_text(body)

    def source(self, *, replica: str = "replica-1") -> Source:
        settings = DirectorySettings(path=str(self.folder), settle=0.05)
        mapping = MappingConfig(
            name="contract",
            function="fn",
            source=SourceSpec(type="directory", settings=settings),
            uuid=self.uuid,
        )
        context = SourceContext(mapping=mapping, store=self.store, replica_id=replica)
        return DirectorySource(settings, context)

    def body(self, record: Record) -> str:
        return str(record.data["s3"]["object"]["key"])


class TestDirectorySource(SourceContract):
    @pytest.fixture
    def adapter(self, tmp_path: Path, sqlite_store: SQLStore) -> SourceAdapter:
        folder = tmp_path / "inbox"
        folder.mkdir()
        return DirectoryAdapter(folder, sqlite_store)
