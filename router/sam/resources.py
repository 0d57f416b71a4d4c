"""The resources of a template, besides a function's ``Events:``, that aim events at one of
its functions: ``AWS::Lambda::EventSourceMapping``, ``AWS::Scheduler::Schedule``,
``AWS::Events::Rule`` targets, SNS subscriptions with ``Protocol: lambda``, an
``AWS::S3::Bucket``'s ``NotificationConfiguration.LambdaConfigurations``, ``AWS::Lambda::Url``
and ``AWS::Lambda::EventInvokeConfig``. Every other resource is reported: those with no
meaning for the router in grouped lines saying why, the rest one line each."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.sam.importer import Importer

TARGET_KEYS = {"Input": "Input", "InputPath": "InputPath", "InputTransformer": "InputTransformer"}


def _function(importer: Importer, value: Any) -> str | None:
    return importer.t.function_of(value, importer.names)


def _event_source_mapping(importer: Importer, logical: str, props: dict[str, Any]) -> None:
    function = _function(importer, props.get("FunctionName"))
    if function is None:
        importer.notes.append(f"{logical}: FunctionName names no function of the template")
        return
    resolved = importer.t.resolve({k: v for k, v in props.items() if k != "FunctionName"}, logical)
    arn = str(resolved.get("EventSourceArn", ""))
    service = arn.split(":")[2] if arn.count(":") >= 5 else ""
    kind = {
        "sqs": "SQS",
        "kinesis": "Kinesis",
        "dynamodb": "DynamoDB",
        "kafka": "MSK",
        "mq": "MQ",
    }.get(service, "SelfManagedKafka" if "Topics" in resolved else "")
    importer.add(logical, function, kind, resolved, logical)


def _schedule(importer: Importer, logical: str, props: dict[str, Any]) -> None:
    target = props.get("Target") or {}
    function = _function(importer, target.get("Arn")) if isinstance(target, dict) else None
    if function is None:
        importer.notes.append(f"{logical}: the schedule's Target is not a function of the template")
        return
    unresolved = dict(props)
    unresolved["Target"] = {k: v for k, v in target.items() if k not in ("Arn", "RoleArn")}
    resolved = importer.t.resolve(unresolved, logical)
    target = resolved.pop("Target")
    for key in ("Input", "RetryPolicy", "DeadLetterConfig"):
        if key in target:
            resolved[key] = target[key]
    left = sorted(set(target) - {"Arn", "RoleArn", "Input", "RetryPolicy", "DeadLetterConfig"})
    if left:
        importer.notes.append(f"{logical}: Target {', '.join(left)} not carried over")
    importer.add(logical, function, "ScheduleV2", resolved, logical)


def _rule(importer: Importer, logical: str, props: dict[str, Any]) -> None:
    for i, target in enumerate(props.get("Targets") or []):
        function = _function(importer, target.get("Arn")) if isinstance(target, dict) else None
        if function is None:
            continue
        where = f"{logical}.Targets[{i}]"
        resolved = importer.t.resolve(props, where)
        target_props = importer.t.resolve(target, where)
        out: dict[str, Any] = {}
        if "ScheduleExpression" in resolved:
            out["ScheduleExpression"] = resolved["ScheduleExpression"]
            kind = "ScheduleV2"
        else:
            out["Pattern"] = resolved.get("EventPattern", {})
            if "EventBusName" in resolved:
                out["EventBusName"] = resolved["EventBusName"]
            kind = "EventBridgeRule"
            out.update(
                (ours, target_props[k]) for k, ours in TARGET_KEYS.items() if k in target_props
            )
        if "State" in resolved:
            out["State"] = resolved["State"]
        if "RetryPolicy" in target_props:
            out["RetryPolicy"] = target_props["RetryPolicy"]
        name = f"{logical}.{target_props.get('Id', i)}"[:64]
        importer.add(name, function, kind, out, where)


def _subscriptions(importer: Importer, logical: str, kind: str, props: dict[str, Any]) -> None:
    if kind == "AWS::SNS::Topic":
        topic = importer.t.get_att(logical, "TopicArn")
        subscriptions = props.get("Subscription") or []
    else:
        topic = importer.t.resolve(props.get("TopicArn"), logical)
        subscriptions = [props]
    for sub in subscriptions:
        if not isinstance(sub, dict) or sub.get("Protocol") != "lambda":
            continue
        function = _function(importer, sub.get("Endpoint"))
        if function is None:
            continue
        out: dict[str, Any] = {"Topic": topic}
        for key in ("FilterPolicy", "FilterPolicyScope"):
            if key in sub:
                out[key] = importer.t.resolve(sub[key], logical)
        importer.add(f"{logical}.{function}"[:64], function, "SNS", out, logical)


def _bucket(importer: Importer, logical: str, props: dict[str, Any]) -> None:
    """CloudFormation's S3 notifications: each ``LambdaConfigurations`` entry is the mapping
    SAM's ``Type: S3`` event gives (``Bucket``, ``Events``, ``Filter``)."""
    notification = props.get("NotificationConfiguration")
    if not isinstance(notification, dict):
        return
    configs = notification.get("LambdaConfigurations") or []
    for key in sorted(set(notification) - {"LambdaConfigurations"}):
        importer.notes.append(
            f"{logical}.NotificationConfiguration.{key}: not mapped (only "
            "LambdaConfigurations aim at a function); skipped"
        )
    for i, config in enumerate(configs if isinstance(configs, list) else []):
        where = f"{logical}.NotificationConfiguration.LambdaConfigurations[{i}]"
        if not isinstance(config, dict):
            importer.notes.append(f"{where}: not a mapping; skipped")
            continue
        function = _function(importer, config.get("Function"))
        if function is None:
            importer.notes.append(f"{where}: Function names no function of the template; skipped")
            continue
        out: dict[str, Any] = {"Bucket": importer.t.ref(logical)}
        if "Event" in config:
            out["Events"] = importer.t.resolve(config["Event"], where)
        if "Filter" in config:
            out["Filter"] = importer.t.resolve(config["Filter"], where)
        name = f"{logical}.{function}" + (f".{i}" if len(configs) > 1 else "")
        importer.add(name[:64], function, "S3", out, where)


def _url(importer: Importer, logical: str, props: dict[str, Any]) -> None:
    function = _function(importer, props.get("TargetFunctionArn"))
    if function is None:
        importer.notes.append(f"{logical}: TargetFunctionArn names no function of the template")
        return
    importer.function_url(function, logical, importer.t.resolve(props, logical), logical)


def _event_invoke_config(importer: Importer, logical: str, props: dict[str, Any]) -> None:
    function = _function(importer, props.get("FunctionName"))
    if function is None:
        importer.notes.append(f"{logical}: FunctionName names no function of the template")
        return
    importer.event_invoke_config(function, importer.t.resolve(props, logical), logical)


IGNORED = (
    ("AWS::Lambda::Permission", "who may invoke a function: the router invokes its own"),
    ("AWS::IAM::", "IAM roles and policies: the router does not check permissions"),
    ("AWS::Logs::", "log groups: functions log to the router's output"),
    ("AWS::Lambda::LayerVersion", "layers: install the code into the function's folder"),
    ("AWS::Serverless::LayerVersion", "layers: install the code into the function's folder"),
    ("AWS::Lambda::Version", "versions: the router runs $LATEST"),
    ("AWS::Lambda::Alias", "aliases: the router runs $LATEST"),
    ("AWS::CloudWatch::", "alarms and dashboards: see the router's metrics"),
    ("AWS::KMS::", "keys: the router stores and reads in the clear"),
    ("AWS::EC2::", "networking: the router reaches what its host reaches"),
)
"""Resource types (a prefix ending in ``::``) with no meaning for the router, and why."""

BACKING = (
    "AWS::SQS::Queue",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::S3::Bucket",
    "AWS::S3::BucketPolicy",
    "AWS::Kinesis::Stream",
    "AWS::DynamoDB::Table",
    "AWS::Events::EventBus",
    "AWS::MSK::Cluster",
    "AWS::AmazonMQ::Broker",
    "AWS::SecretsManager::Secret",
)
"""What the sources and destinations read or write: read for the names and ARNs the
mappings use (they are created outside the router, in the emulator or the broker), so not
reported."""

HANDLED = (
    "AWS::Serverless::Function",
    "AWS::Lambda::Function",
    "AWS::Lambda::EventSourceMapping",
    "AWS::Scheduler::Schedule",
    "AWS::Events::Rule",
    "AWS::SNS::Topic",
    "AWS::SNS::Subscription",
    "AWS::Lambda::Url",
    "AWS::Lambda::EventInvokeConfig",
)


def _ignored(kind: str) -> str | None:
    for prefix, why in IGNORED:
        if kind == prefix or (prefix.endswith("::") and kind.startswith(prefix)):
            return why
    return None


def other_resources(importer: Importer) -> None:
    """Add the mappings these resources make to ``importer``; report the others."""
    ignored: dict[str, list[str]] = {}
    for logical, resource in importer.t.resources.items():
        kind = str(resource.get("Type", ""))
        props = resource.get("Properties") or {}
        if kind == "AWS::Lambda::EventSourceMapping":
            _event_source_mapping(importer, logical, props)
        elif kind == "AWS::Scheduler::Schedule":
            _schedule(importer, logical, props)
        elif kind == "AWS::Events::Rule":
            _rule(importer, logical, props)
        elif kind in ("AWS::SNS::Topic", "AWS::SNS::Subscription"):
            _subscriptions(importer, logical, kind, props)
        elif kind == "AWS::Lambda::Url":
            _url(importer, logical, props)
        elif kind == "AWS::Lambda::EventInvokeConfig":
            _event_invoke_config(importer, logical, props)
        if kind == "AWS::S3::Bucket":
            _bucket(importer, logical, props)
        if kind in BACKING or kind in HANDLED:
            continue
        elif (why := _ignored(kind)) is not None:
            ignored.setdefault(why, []).append(logical)
        else:
            importer.notes.append(
                f"{logical}: resource type {kind or '(none)'} is not mapped; skipped"
            )
    for why, logicals in ignored.items():
        importer.notes.append(f"{', '.join(logicals)}: ignored ({why})")
