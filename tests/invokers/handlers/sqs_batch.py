"""An SQS handler that reports partial batch failures (``ReportBatchItemFailures``).

Every message whose body contains ``fail`` is reported in ``batchItemFailures``; the others
count as processed. The mapping needs ``function_response_types: [ReportBatchItemFailures]``.
"""

from __future__ import annotations

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = [
        {"itemIdentifier": record["messageId"]}
        for record in event.get("Records", [])
        if "fail" in str(record.get("body", ""))
    ]
    return {"batchItemFailures": failures}
