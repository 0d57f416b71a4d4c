"""A SAM / CloudFormation template read for ``router import-sam``: the YAML with its short
intrinsic tags (``!Ref``, ``!GetAtt``, ``!Sub``...), and the intrinsics resolved to the
names and ARNs the resources would have, as far as the template says them.

``Conditions`` are evaluated with the parameters' defaults (``Fn::Equals``, ``Fn::Not``,
``Fn::And``, ``Fn::Or``, ``Condition``) for ``!If`` and a resource's ``Condition:``; one that
cannot be decided (a parameter without a default) is taken as true and reported.

What cannot be resolved (an ``!ImportValue``, a parameter without a default) is kept as a
readable placeholder and reported in :attr:`Template.notes`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

STREAM_LABEL = "1970-01-01T00:00:00.000"
"""The stream label of a DynamoDB table's made-up ``StreamArn`` (AWS picks it at creation)."""


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags, each read as its long form."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_Loader.add_multi_constructor("!", _intrinsic)


def load_template(text: str) -> dict[str, Any]:
    """The template as plain data; ValueError when it is not a template."""
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise ValueError(f"not valid YAML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
        raise ValueError("not a SAM / CloudFormation template: there is no Resources: mapping")  # noqa: TRY004 - bad input
    return doc


_SUB = re.compile(r"\$\{([^}]+)\}")


class _Undecided(Exception):
    """A condition depends on what the template does not say (the reason)."""


_NO_VALUE = object()
"""``!Ref AWS::NoValue``: the property it is the value of is left out."""


class Template:
    """The resources of a template and the resolution of intrinsics against them."""

    def __init__(self, doc: dict[str, Any], *, region: str, account: str, stack: str) -> None:
        self.doc = doc
        self.resources: dict[str, dict[str, Any]] = {
            k: v for k, v in doc["Resources"].items() if isinstance(v, dict)
        }
        self.region = region
        self.account = account
        self.stack = stack
        self.notes: list[str] = []
        self._where = ""
        self._conditions: dict[str, bool] = {}
        self._evaluating: set[str] = set()
        for logical, resource in doc["Resources"].items():
            if not isinstance(resource, dict):
                self._note(f"{logical}: not a resource (no Type / Properties mapping); skipped")
        self.skipped: list[str] = []
        """Resources left out because their ``Condition`` is false."""
        for logical, resource in list(self.resources.items()):
            name = resource.get("Condition")
            if isinstance(name, str) and not self.condition(name, logical):
                del self.resources[logical]
                self.skipped.append(logical)
                self._note(f"{logical}: Condition {name} is false: skipped")

    # -- conditions -----------------------------------------------------------------------

    def condition(self, name: str, where: str = "") -> bool:
        """The value of the template's condition ``name``, true when it cannot be decided
        (reported once, with why)."""
        if name in self._conditions:
            return self._conditions[name]
        conditions = self.doc.get("Conditions") or {}
        outer, self._where = self._where, where or self._where
        try:
            if name not in conditions:
                raise _Undecided("no such condition")
            if name in self._evaluating:
                raise _Undecided("it depends on itself")
            self._evaluating.add(name)
            try:
                value = self._decide(conditions[name])
            finally:
                self._evaluating.discard(name)
        except _Undecided as e:
            self._note(f"condition {name} cannot be decided ({e}): assumed true")
            value = True
        finally:
            self._where = outer
        self._conditions[name] = value
        return value

    def _decide(self, expr: Any) -> bool:
        if isinstance(expr, bool):
            return expr
        if not isinstance(expr, dict) or len(expr) != 1:
            raise _Undecided(f"{expr!r} is not a condition function")
        ((key, arg),) = expr.items()
        if key == "Condition" and isinstance(arg, str):
            if arg in self._evaluating:
                raise _Undecided(f"condition {arg} depends on itself")
            return self.condition(arg)
        if key == "Fn::Equals" and isinstance(arg, list) and len(arg) == 2:
            a, b = (self._value(v) for v in arg)
            return str(a) == str(b)
        if key == "Fn::Not" and isinstance(arg, list) and len(arg) == 1:
            return not self._decide(arg[0])
        if key == "Fn::And" and isinstance(arg, list):
            return all(self._decide(v) for v in arg)
        if key == "Fn::Or" and isinstance(arg, list):
            return any(self._decide(v) for v in arg)
        raise _Undecided(f"{key} is not evaluated here")

    def _value(self, value: Any) -> Any:
        """A value a condition compares: undecided when it needs a parameter without a
        default."""
        if isinstance(value, dict) and value.keys() == {"Ref"}:
            params = self.doc.get("Parameters") or {}
            name = value["Ref"]
            if name in params and (params[name] or {}).get("Default") is None:
                raise _Undecided(f"parameter {name} has no Default")
        if isinstance(value, dict) and value.keys() == {"Condition"}:
            return self._decide(value)
        resolved = self._resolve(value)
        if isinstance(resolved, str) and resolved.startswith("<") and resolved.endswith(">"):
            raise _Undecided(f"{resolved} is not known")
        return resolved

    # -- what a resource is called --------------------------------------------------------

    def type_of(self, logical: str) -> str:
        return str(self.resources.get(logical, {}).get("Type", ""))

    def properties(self, logical: str) -> dict[str, Any]:
        props = self.resources.get(logical, {}).get("Properties")
        return props if isinstance(props, dict) else {}

    def _name(self, logical: str, key: str, lower: bool = False) -> str:
        given = self.properties(logical).get(key)
        if given is not None:
            return str(self.resolve(given, self._where))
        return logical.lower() if lower else logical

    def ref(self, logical: str) -> Any:
        """``!Ref logical``."""
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::StackName": self.stack,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }
        if logical in pseudo:
            return pseudo[logical]
        params = self.doc.get("Parameters") or {}
        if logical in params:
            default = (params[logical] or {}).get("Default")
            if default is None:
                self._note(f"parameter {logical} has no Default: written as <{logical}>")
                return f"<{logical}>"
            return default
        kind = self.type_of(logical)
        refs: dict[str, Callable[[], str]] = {
            "AWS::SQS::Queue": lambda: (
                f"https://sqs.{self.region}.amazonaws.com/{self.account}/{self._queue(logical)}"
            ),
            "AWS::SNS::Topic": lambda: self.get_att(logical, "TopicArn"),
            "AWS::S3::Bucket": lambda: self._name(logical, "BucketName", lower=True),
            "AWS::SecretsManager::Secret": lambda: (
                f"arn:aws:secretsmanager:{self.region}:{self.account}:secret:{logical}"
            ),
            "AWS::MSK::Cluster": lambda: self.get_att(logical, "Arn"),
            "AWS::Serverless::Function": lambda: self._name(logical, "FunctionName"),
            "AWS::Lambda::Function": lambda: self._name(logical, "FunctionName"),
            "AWS::Kinesis::Stream": lambda: self._name(logical, "Name"),
            "AWS::DynamoDB::Table": lambda: self._name(logical, "TableName"),
            "AWS::Events::EventBus": lambda: self._name(logical, "Name"),
        }
        if kind in refs:
            return refs[kind]()
        if logical not in self.resources:
            self._note(f"!Ref {logical}: no such parameter or resource; written as <{logical}>")
            return f"<{logical}>"
        return logical

    def _queue(self, logical: str) -> str:
        name = self._name(logical, "QueueName")
        if self.properties(logical).get("FifoQueue") is True and not name.endswith(".fifo"):
            name += ".fifo"
        return name

    def get_att(self, logical: str, attribute: str) -> Any:
        """``!GetAtt logical.attribute``."""
        kind = self.type_of(logical)
        r, a = self.region, self.account
        if kind == "AWS::SQS::Queue":
            name = self._queue(logical)
            return {"Arn": f"arn:aws:sqs:{r}:{a}:{name}", "QueueName": name}.get(
                attribute, self.ref(logical)
            )
        if kind == "AWS::SNS::Topic":
            name = self._name(logical, "TopicName")
            return name if attribute == "TopicName" else f"arn:aws:sns:{r}:{a}:{name}"
        if kind == "AWS::Kinesis::Stream":
            return f"arn:aws:kinesis:{r}:{a}:stream/{self.ref(logical)}"
        if kind == "AWS::DynamoDB::Table":
            table = f"arn:aws:dynamodb:{r}:{a}:table/{self.ref(logical)}"
            if attribute == "StreamArn":
                self._note(
                    f"{logical}.StreamArn: the stream label is made up ({STREAM_LABEL}); "
                    "write the table's stream ARN (DescribeTable's LatestStreamArn)"
                )
                return f"{table}/stream/{STREAM_LABEL}"
            return table
        if kind == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{self.ref(logical)}"
        if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            return f"arn:aws:lambda:{r}:{a}:function:{self.ref(logical)}"
        if kind == "AWS::Events::EventBus":
            return f"arn:aws:events:{r}:{a}:event-bus/{self.ref(logical)}"
        if kind == "AWS::MSK::Cluster":
            name = self._name(logical, "ClusterName")
            return f"arn:aws:kafka:{r}:{a}:cluster/{name}/0"
        if kind == "AWS::IAM::Role":
            return f"arn:aws:iam::{a}:role/{self._name(logical, 'RoleName')}"
        if kind == "AWS::AmazonMQ::Broker":
            name = self._name(logical, "BrokerName")
            return f"arn:aws:mq:{r}:{a}:broker:{name}:b-{name}"
        self._note(f"!GetAtt {logical}.{attribute}: not known; written as <{logical}.{attribute}>")
        return f"<{logical}.{attribute}>"

    # -- intrinsics -----------------------------------------------------------------------

    def _note(self, text: str) -> None:
        line = f"{self._where}: {text}" if self._where else text
        if line not in self.notes:
            self.notes.append(line)

    def resolve(self, value: Any, where: str = "") -> Any:
        """``value`` with every intrinsic function replaced by what it gives."""
        outer, self._where = self._where, where or self._where
        try:
            resolved = self._resolve(value)
            return None if resolved is _NO_VALUE else resolved
        finally:
            self._where = outer

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self._resolve(v) for v in value]
            return [v for v in items if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" and arg == "AWS::NoValue":
                return _NO_VALUE
            if key == "Ref" and isinstance(arg, str):
                return self.ref(arg)
            if key == "Fn::GetAtt":
                parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
                if len(parts) == 2:
                    return self.get_att(str(parts[0]), str(self._resolve(parts[1])))
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join" and isinstance(arg, list) and len(arg) == 2:
                return str(arg[0]).join(str(v) for v in self._resolve(arg[1]))
            if key == "Fn::Select" and isinstance(arg, list) and len(arg) == 2:
                items = self._resolve(arg[1])
                return items[int(self._resolve(arg[0]))] if isinstance(items, list) else items
            if key == "Fn::Split" and isinstance(arg, list) and len(arg) == 2:
                return str(self._resolve(arg[1])).split(str(arg[0]))
            if key == "Fn::FindInMap" and isinstance(arg, list) and len(arg) == 3:
                table = self.doc.get("Mappings") or {}
                keys = [str(self._resolve(k)) for k in arg]
                return self._resolve(table.get(keys[0], {}).get(keys[1], {}).get(keys[2]))
            if key == "Fn::Base64":
                return self._resolve(arg)
            if key == "Fn::If" and isinstance(arg, list) and len(arg) == 3:
                chosen = arg[1] if self.condition(str(arg[0])) else arg[2]
                return self._resolve(chosen)
            if key.startswith("Fn::") or key == "Condition":
                self._note(f"{key} cannot be resolved here; written as <{key}>")
                return f"<{key}>"
        out = {k: self._resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}

    def _sub(self, arg: Any) -> str:
        text, variables = (arg[0], arg[1]) if isinstance(arg, list) and len(arg) == 2 else (arg, {})
        given = {k: self._resolve(v) for k, v in (variables or {}).items()}

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in given:
                return str(given[name])
            if "." in name and not name.startswith("AWS::"):
                logical, attribute = name.split(".", 1)
                return str(self.get_att(logical, attribute))
            return str(self.ref(name))

        return _SUB.sub(one, str(text))

    # -- which function a target names ----------------------------------------------------

    def function_of(self, value: Any, functions: dict[str, str]) -> str | None:
        """The logical id of the function ``value`` (a ``!Ref``, ``!GetAtt X.Arn``, a name or
        ARN) names, among ``functions`` (logical id -> its name here)."""
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" and arg in functions:
                return str(arg)
            if key == "Fn::GetAtt":
                parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
                if parts and parts[0] in functions:
                    return str(parts[0])
        resolved = self.resolve(value)
        for logical in functions:
            if resolved in (self.ref(logical), self.get_att(logical, "Arn")):
                return logical
        return None
