"""The resources of a template, besides a function's ``Events:``, that aim events at one of
its functions: ``AWS::Lambda::EventSourceMapping``, ``AWS::Scheduler::Schedule``,
``AWS::Events::Rule`` targets and SNS subscriptions with ``Protocol: lambda``."""

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


def other_resources(importer: Importer) -> None:
    """Add the mappings these resources make to ``importer``."""
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
