"""The ``table`` destination: the store's ``failed_events`` table, replayable with
``router replay``."""

from __future__ import annotations

from typing import Any, ClassVar

from router.abc import Destination
from router.errors import DestinationError, StoreError
from router.models import FailedEvent, PluginSettings


class TableDestinationSettings(PluginSettings):
    pass


class TableDestination(Destination):
    Settings: ClassVar[type[PluginSettings]] = TableDestinationSettings

    @classmethod
    def from_target(cls, target: str) -> TableDestinationSettings:
        return TableDestinationSettings()

    async def send(self, record: Any) -> None:
        condition = str(record.get("requestContext", {}).get("condition", ""))
        try:
            await self.context.store.add_failed_event(
                FailedEvent(
                    mapping_uuid=self.context.mapping_uuid,
                    function_name=self.context.function_name,
                    condition=condition,
                    payload=dict(record),
                )
            )
        except StoreError as e:
            raise DestinationError(f"cannot write to failed_events: {e}") from e
