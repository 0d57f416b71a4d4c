"""``router import-sam``: a SAM template's functions and events as router YAML that
``router validate`` accepts, with what could not be carried over on standard error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router.cli import main
from router.config import load_config_text

SHOP = Path(__file__).resolve().parents[1] / "data" / "sam" / "shop" / "template.yaml"


def _import(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["import-sam", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_shop_template_converts_and_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _import(capsys, str(SHOP), "--endpoint-url", "http://127.0.0.1:4566")
    assert code == 0
    config = load_config_text(out, "imported.yaml")
    mappings = {m.name: m for m in config.mappings}
    kinds = {name: m.source.type for name, m in mappings.items()}
    assert kinds == {
        "OrdersFunction.Orders": "sqs",
        "ClicksFunction.Clicks": "kinesis",
        "UploadsFunction.Upload": "s3",
        "NightlyFunction.Nightly": "schedule",
        "NightlyFunction.Hourly": "schedule",
        "NightlyFunction.Placed": "eventbridge",
        "ApiFunction.GetOrder": "http",
        "InvoiceFunction.Invoices": "sqs",
        "StockMapping": "dynamodb",
        "WeeklySchedule": "schedule",
        "AlertsTopic.AlertsFunction": "sns",
    }
    orders = mappings["OrdersFunction.Orders"]
    settings: Any = orders.source.settings
    assert settings.queue_url == "http://127.0.0.1:4566/123456789012/dev-orders"
    assert (orders.batch_size, orders.maximum_concurrency) == (10, 5)
    assert orders.filter_patterns == ('{"body": {"state": ["PAID"]}}',)
    clicks = mappings["ClicksFunction.Clicks"]
    assert clicks.on_failure is not None and clicks.on_failure.type == "sqs"
    nightly = mappings["NightlyFunction.Nightly"]
    assert nightly.source.settings.timezone == "Europe/Berlin"  # type: ignore[attr-defined]
    assert (nightly.maximum_retry_attempts, nightly.maximum_record_age) == (3, 3600)
    weekly: Any = mappings["WeeklySchedule"].source.settings
    assert weekly.input == '{"report": "weekly"}'
    assert mappings["ApiFunction.GetOrder"].source.settings.methods == ("GET",)  # type: ignore[attr-defined]
    uploads: Any = mappings["UploadsFunction.Upload"].source.settings
    assert (uploads.bucket, uploads.suffix) == ("shop-uploads", ".csv")
    functions = config.functions
    assert functions["OrdersFunction"].invoker == "runtime-api"  # it has environment variables
    env = functions["OrdersFunction"].settings.runtime.env  # type: ignore[attr-defined]
    assert {k: v.reveal() for k, v in env.items()} == {"STAGE": "dev"}
    assert functions["ClicksFunction"].invoker == "python"
    assert functions["StockFunction"].settings.memory_size == 512  # type: ignore[attr-defined]
    assert functions["InvoiceFunction"].settings.listen == "127.0.0.1:9001"  # type: ignore[attr-defined]
    notes = err.splitlines()
    assert f"{SHOP}: ApiFunction.Events.Legacy: event type Api is not mapped; skipped" in notes
    assert f"{SHOP}: OrdersFunction: not carried over: Policies" in notes
    assert (
        f"{SHOP}: NightlyFunction.Events.Nightly: RoleArn has no counterpart here; left out"
        in notes
    )
    assert any("StockTable.StreamArn: the stream label is made up" in n for n in notes)


def test_not_a_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("functions: {}\n")
    code, out, err = _import(capsys, str(path))
    assert (code, out) == (2, "")
    assert (
        err
        == f"router: {path}: not a SAM / CloudFormation template: there is no Resources: mapping\n"
    )


def test_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _import(capsys, str(tmp_path / "none.yaml"))
    assert code == 2 and err == f"router: {tmp_path / 'none.yaml'}: No such file or directory\n"
