"""``router import-sam``: a SAM template's functions and events as router YAML that
``router validate`` accepts, with what could not be carried over on standard error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

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
    assert (
        f"{SHOP}: ApiFunction.Events.Legacy: event type Api is not mapped; skipped (a REST "
        "API's payload format 1.0 is not produced here: an HttpApi event or a FunctionUrlConfig "
        "gives the 2.0 event)"
    ) in notes
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


PORTS = SHOP.parents[1] / "ports" / "template.yaml"


def test_cloudformation_notifications_urls_invoke_configs_and_conditions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _import(capsys, str(PORTS))
    assert code == 0
    config = load_config_text(out, "imported.yaml")
    mappings = {m.name: m for m in config.mappings}
    assert {name: m.source.type for name, m in mappings.items()} == {
        "ImagesBucket.ResizeFunction.0": "s3",
        "ImagesBucket.CleanupFunction.1": "s3",
        "ReportsBucket.ResizeFunction": "s3",
        "ResizeFunction.Url": "http",
        "ResizeFunction.Url.root": "http",
        "CleanupUrl": "http",
        "CleanupUrl.root": "http",
    }
    images: Any = mappings["ImagesBucket.ResizeFunction.0"].source.settings
    assert (images.bucket, images.prefix, images.suffix) == ("prod-images", "incoming/", ".jpg")
    assert mappings["ImagesBucket.ResizeFunction.0"].function == "resize"
    trash: Any = mappings["ImagesBucket.CleanupFunction.1"].source.settings
    assert (trash.bucket, trash.prefix) == ("prod-images", "trash/")
    reports: Any = mappings["ReportsBucket.ResizeFunction"].source.settings
    assert reports.bucket == "reportsbucket"
    url: Any = mappings["ResizeFunction.Url"].source.settings
    assert (url.path, url.auth_type) == ("/{proxy+}", "AWS_IAM")
    assert url.cors.allow_origins == ("https://example.com",) and url.cors.max_age == 300
    assert config.settings.ingress is not None  # the function URLs are served there
    assert config.settings.ingress.listen == "127.0.0.1:9000"
    root: Any = mappings["ResizeFunction.Url.root"].source.settings
    assert (root.path, root.auth_type, root.cors) == ("/", "AWS_IAM", url.cors)
    cleanup_url: Any = mappings["CleanupUrl"].source.settings
    assert (cleanup_url.path, cleanup_url.auth_type) == ("/cleanup/{proxy+}", "NONE")
    cleanup_root: Any = mappings["CleanupUrl.root"].source.settings
    assert cleanup_root.path == "/cleanup"
    functions = config.functions
    # DevOnlyFunction's condition is false; AlarmFunction's cannot be decided (taken as true)
    assert set(functions) == {"resize", "cleanup", "alarms", "everystage"}
    resize = functions["resize"]
    assert resize.timeout == 30  # !If [IsProd, 30, 5]
    assert "memory_size" not in out  # !If [IsDev, 128, !Ref AWS::NoValue]
    invoke = resize.event_invoke
    assert (invoke.maximum_retry_attempts, invoke.maximum_event_age) == (1, 3600)
    assert invoke.on_success is not None and invoke.on_failure is not None
    cleanup = functions["cleanup"].event_invoke
    assert cleanup.maximum_retry_attempts == 0 and cleanup.on_failure is not None
    notes = err.splitlines()
    for note in (
        "DevOnlyFunction: Condition IsDev is false: skipped",
        "AlarmFunction: condition WithAlarms cannot be decided (parameter AlarmEmail has no "
        "Default): assumed true",
        "ImagesBucket.NotificationConfiguration.TopicConfigurations: not mapped (only "
        "LambdaConfigurations aim at a function); skipped",
        "StateMachine: resource type AWS::StepFunctions::StateMachine is not mapped; skipped",
        "CleanupUrl: InvokeMode RESPONSE_STREAM is not served here; answers are buffered",
        "CleanupInvokeConfig: not carried over: Qualifier",
        "CleanupUrl: the function URL is http://127.0.0.1:9000/cleanup (the ingress "
        "listener; mappings CleanupUrl and CleanupUrl.root)",
        "router.ingress.listen: 127.0.0.1:9000 (function URLs, SNS, EventBridge and "
        "asynchronous Invoke calls reach the functions there), adjust",
        "ResizePermission, CleanupPermission: ignored (who may invoke a function: the router "
        "invokes its own)",
        "ResizeRole: ignored (IAM roles and policies: the router does not check permissions)",
        "ResizeLogs: ignored (log groups: functions log to the router's output)",
    ):
        assert f"{PORTS}: {note}" in notes
    assert not any("FailedQueue" in n for n in notes)  # read for its ARN: mapped
    assert not any("DevOnly" in n for n in notes[1:])


def test_a_cloudformation_function(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        """
Parameters:
  StreamArn: {Type: String, Default: StreamARNNotPassed}
Conditions:
  Never: !Equals [a, b]
Resources:
  Jobs:
    Type: AWS::SQS::Queue
  Placeholder:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      FunctionName: !Ref Worker
      EventSourceArn: !Ref StreamArn
  Worker:
    Type: AWS::Lambda::Function
    Properties:
      FunctionName: worker
      Runtime: python3.12
      Handler: app.handler
      Timeout: !If [Never, 1, 20]
      Role: !GetAtt WorkerRole.Arn
      Code:
        ZipFile: |
          def handler(event, context):
              return event
  WorkerRole:
    Type: AWS::IAM::Role
  WorkerJobs:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      FunctionName: !Ref Worker
      EventSourceArn: !GetAtt Jobs.Arn
      BatchSize: 5
      ProvisionedPollerConfig: {MinimumPollers: 2}
      MetricsConfig: {Metrics: [EventCount]}
"""
    )
    code, out, err = _import(capsys, str(path), "--endpoint-url", "http://127.0.0.1:4566")
    assert code == 0 and "name: Placeholder" in out
    mappings = {m["name"]: m for m in yaml.safe_load(out)["mappings"]}
    assert mappings["Placeholder"]["EventSourceArn"] == "StreamARNNotPassed"
    del mappings["Placeholder"]
    rest = yaml.safe_dump({**yaml.safe_load(out), "mappings": [*mappings.values()]})
    config = load_config_text(rest, "imported.yaml")
    (mapping,) = config.mappings
    assert (mapping.name, mapping.function, mapping.source.type) == ("WorkerJobs", "worker", "sqs")
    assert mapping.batch_size == 5
    assert config.settings.ingress is None  # nothing is pushed to the router
    assert config.functions["worker"].timeout == 20
    assert err.splitlines() == [
        f"{path}: Worker: Code.ZipFile (inline code): write it to a file and give the "
        "function's path",
        f"{path}: Worker: not carried over: Role",
        f"{path}: Placeholder: EventSourceArn 'StreamARNNotPassed' is not an ARN (a "
        "parameter's Default?): give the source's ARN",
        f"{path}: WorkerJobs: ProvisionedPollerConfig has no counterpart here; left out",
        f"{path}: WorkerJobs: MetricsConfig has no counterpart here; left out",
        f"{path}: WorkerRole: ignored (IAM roles and policies: the router does not check "
        "permissions)",
    ]


def test_undecidable_conditions_and_odd_resources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        """
Conditions:
  Loop: !Condition Loop
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      Handler: app.handler
      Timeout: !If [Loop, 7, 8]
      MemorySize: !If [Missing, 256, 512]
      EventInvokeConfig:
        DestinationConfig:
          OnFailure: {Type: Lambda, Destination: arn:aws:lambda:us-east-1:123456789012:function:g}
  Bad: 7
"""
    )
    code, out, err = _import(capsys, str(path))
    assert code == 0
    config = load_config_text(out, "imported.yaml")
    f = config.functions["F"]
    assert f.timeout == 7 and f.settings.memory_size == 256  # type: ignore[attr-defined]
    assert "event_invoke_config" not in out and "ingress" not in out
    assert err.splitlines() == [
        f"{path}: Bad: not a resource (no Type / Properties mapping); skipped",
        f"{path}: F: condition Loop cannot be decided (condition Loop depends on itself): "
        "assumed true",
        f"{path}: F: condition Missing cannot be decided (no such condition): assumed true",
        f"{path}: F.EventInvokeConfig: DestinationConfig.OnFailure of Type Lambda has no "
        "counterpart here; left out",
    ]


INLINE = """
Resources:
  Api:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      Handler: index.handler
      InlineCode: |
        def handler(event, context):
            return {"statusCode": 200, "body": "inline"}
"""


def test_inline_code_written_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(INLINE)
    code, out, err = _import(capsys, str(path))
    assert code == 0 and "path" not in yaml.safe_load(out)["functions"]["Api"]
    assert err.splitlines() == [
        f"{path}: Api: InlineCode is not carried over: write it to a file in a folder and give "
        "the function's path (or CodeUri), or give --inline-code DIR"
    ]
    folder = tmp_path / "inline"
    code, out, err = _import(capsys, str(path), "--inline-code", str(folder))
    assert code == 0
    assert err.splitlines() == [f"{path}: Api: InlineCode written to {folder / 'Api' / 'index.py'}"]
    assert 'return {"statusCode": 200' in (folder / "Api" / "index.py").read_text()
    config = load_config_text(out, "imported.yaml")  # imports index.handler from the folder
    assert config.functions["Api"].settings.path == str(folder / "Api")  # type: ignore[attr-defined]
