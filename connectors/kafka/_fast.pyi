from collections.abc import Hashable, Sequence
from typing import Any

from router.models import Record

def setup(record: type[Record], fields: Sequence[str], /) -> None: ...
def records(
    messages: Sequence[Any], lane: Hashable, base_size: int, now: float, /
) -> list[Record]: ...
def lambda_records(records: Sequence[Record], /) -> dict[str, list[dict[str, Any]]]: ...
