"""``router import-sam``: a SAM template's functions and their events as router YAML.

Functions (``AWS::Serverless::Function``, with ``Globals: Function:`` applied, and
``AWS::Lambda::Function``) become
``functions:``: Python runtimes the ``python`` invoker (``runtime-api`` with ``awslambdaric``
when the function has environment variables, which need a process of their own), Node.js
and ``provided`` runtimes managed ``runtime-api`` environments, other runtimes a
``runtime-api`` listener their AWS base image connects to. Each ``Events:`` entry becomes a
mapping written with the event's own ``Properties`` (see "Porting from SAM" in
docs/configuration.md), and so do ``AWS::Lambda::EventSourceMapping``,
``AWS::Scheduler::Schedule``, ``AWS::Events::Rule``, ``AWS::SNS::Topic`` subscriptions and
an ``AWS::S3::Bucket``'s ``LambdaConfigurations`` aimed at a function. ``FunctionUrlConfig``
and ``AWS::Lambda::Url`` become ``http`` mappings, ``EventInvokeConfig`` and
``AWS::Lambda::EventInvokeConfig`` the function's ``event_invoke_config``. Everything that
could not be carried over is listed in the notes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from router.sam.template import Template, load_template

EVENT_TYPES = frozenset(
    {
        "SQS",
        "Kinesis",
        "DynamoDB",
        "MSK",
        "SelfManagedKafka",
        "MQ",
        "S3",
        "SNS",
        "Schedule",
        "ScheduleV2",
        "EventBridgeRule",
        "CloudWatchEvent",
        "HttpApi",
    }
)
"""SAM event types a mapping is made of."""

PUSHED = frozenset({"SNS", "EventBridgeRule", "CloudWatchEvent", "HttpApi"})
"""Event types whose events are pushed to the router's ingress listener."""

INGRESS_LISTEN = "127.0.0.1:9000"
"""The ingress listener written when a mapping or an asynchronous invocation needs it."""

AWS_SOURCES = frozenset({"SQS", "Kinesis", "DynamoDB", "S3"})
"""Event types read through an AWS API (``--endpoint-url`` is written beside them)."""

DROPPED = {
    "SNS": ("SqsSubscription", "Region"),
    "ScheduleV2": ("GroupName", "KmsKeyArn", "RoleArn", "PermissionsBoundary"),
    "HttpApi": ("ApiId", "Auth", "RouteSettings", "TimeoutInMillis"),
    "EventBridgeRule": ("DeadLetterConfig",),
    "CloudWatchEvent": ("DeadLetterConfig",),
}
"""Event properties with no counterpart here, left out and reported."""

DROPPED_ALL = ("ProvisionedPollerConfig", "MetricsConfig", "KmsKeyArn", "Tags")
"""Properties of any event or ``AWS::Lambda::EventSourceMapping`` with no counterpart here
(pollers are the router's own, its metrics are always on, filter criteria are not
encrypted), left out and reported."""

FUNCTION_KEYS_USED = frozenset(
    {
        "Handler",
        "Runtime",
        "CodeUri",
        "Timeout",
        "MemorySize",
        "Environment",
        "Events",
        "FunctionName",
        "Description",
        "Tags",
        "ReservedConcurrentExecutions",
        "FunctionUrlConfig",
        "EventInvokeConfig",
    }
)
"""Function properties that are carried over (or, like Description and Tags, mean nothing
to the router); every other one is reported."""

NOT_RESOLVED = frozenset({"Events", "FunctionUrlConfig", "EventInvokeConfig"})
"""Function properties read on their own (each event, the URL and the asynchronous
invocation settings)."""

RESERVED_ENV = re.compile(r"^(AWS_REGION|AWS_DEFAULT_REGION|_HANDLER|LAMBDA_\w+|AWS_LAMBDA_\w+)$")
CREDENTIAL_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|CREDENTIAL|AUTH")


@dataclass
class Imported:
    """The router configuration made of a template, and what could not be carried over."""

    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _merge(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """SAM's Globals: a function's own value wins; Environment Variables merge."""
    out = {**defaults, **own}
    env = {
        **((defaults.get("Environment") or {}).get("Variables") or {}),
        **((own.get("Environment") or {}).get("Variables") or {}),
    }
    if env:
        out["Environment"] = {"Variables": env}
    return out


def _plain_function(logical: str, resource: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """An ``AWS::Lambda::Function``'s properties as a SAM function's: ``Code`` is not a local
    folder (``S3Bucket`` / ``S3Key``, ``ZipFile``, ``ImageUri``), so it is reported."""
    props = dict(resource.get("Properties") or {})
    code = props.pop("Code", None)
    if isinstance(code, dict) and "ZipFile" in code:
        notes.append(
            f"{logical}: Code.ZipFile (inline code): write it to a file and give the "
            "function's path"
        )
    elif code is not None:
        notes.append(f"{logical}: Code is not a local folder: give the function's path / cwd")
    return props


def _mapping_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", ".".join(parts))[:64]


def _env_name(*parts: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", "_".join(parts).upper())


class Importer:
    def __init__(
        self, template: Template, base: str, endpoint_url: str | None, notes: list[str]
    ) -> None:
        self.t = template
        self.base = base
        self.endpoint_url = endpoint_url
        self.notes = notes
        self.functions: dict[str, dict[str, Any]] = {}
        self.names: dict[str, str] = {}
        self.mappings: list[dict[str, Any]] = []
        self._listen_port = 9001
        self.inline_code: str | None = None
        """``--inline-code DIR``: where functions' ``InlineCode`` is written."""
        self._url_paths: set[str] = set()
        self.pushed: list[str] = []
        """What needs the ingress listener (events pushed to it, asynchronous Invoke)."""

    # -- functions --------------------------------------------------------------------------

    def function(self, logical: str, props: dict[str, Any]) -> None:
        where = f"{logical}"
        resolved = {
            k: self.t.resolve(v, where)
            for k, v in props.items()
            if k in FUNCTION_KEYS_USED
            and k not in ("Events", "FunctionUrlConfig", "EventInvokeConfig")
        }
        others = sorted(k for k in props if k not in FUNCTION_KEYS_USED and k != "InlineCode")
        if others:
            self.notes.append(f"{where}: not carried over: {', '.join(others)}")
        runtime = str(resolved.get("Runtime") or "")
        handler = str(resolved.get("Handler") or "")
        code = resolved.get("CodeUri")
        cwd = os.path.normpath(os.path.join(self.base, code)) if isinstance(code, str) else None
        if code is not None and cwd is None:
            self.notes.append(f"{where}: CodeUri {code!r} is not a local folder: give path / cwd")
        if "InlineCode" in props:
            cwd = self._inline_code(logical, where, runtime, handler, props["InlineCode"]) or cwd
        env = {
            str(k): v
            for k, v in ((resolved.get("Environment") or {}).get("Variables") or {}).items()
        }
        out: dict[str, Any] = {}
        if "Timeout" in resolved:
            out["timeout"] = resolved["Timeout"]
        memory = resolved.get("MemorySize")
        if runtime.startswith("python") and not env:
            out.update(invoker="python", handler=handler)
            if cwd:
                out["path"] = cwd
        elif runtime.startswith(("python", "nodejs", "provided", "go")):
            command = {
                "python": ["python", "-m", "awslambdaric", handler],
                "nodejs": ["node_modules/.bin/aws-lambda-ric", handler],
            }.get(re.sub(r"[\d.x]+$", "", runtime), ["./bootstrap"])
            out.update(invoker="runtime-api", runtime={"command": command})
            if cwd:
                out["runtime"]["cwd"] = cwd
            if command[0] != "python":
                self.notes.append(
                    f"{where}: runtime {runtime}: {command[0]} must exist in "
                    f"{cwd or 'the working directory'} (aws-lambda-ric installed, or the "
                    "built bootstrap)"
                )
            runtime_env = self._environment(where, env)
            if runtime_env:
                out["runtime"]["env"] = runtime_env
            if "ReservedConcurrentExecutions" in resolved:
                out["reserved_concurrency"] = resolved["ReservedConcurrentExecutions"]
        else:
            listen = f"127.0.0.1:{self._listen_port}"
            self._listen_port += 1
            out.update(invoker="runtime-api", listen=listen)
            self.notes.append(
                f"{where}: runtime {runtime or 'image'} is not started by the router: run the "
                f"function's AWS base image with AWS_LAMBDA_RUNTIME_API={listen}"
                + (" and its Environment" if env else "")
            )
        if memory is not None and "listen" in out:
            self.notes.append(f"{where}: MemorySize is the base image's to set (listen:)")
        elif memory is not None:
            out["memory_size"] = memory
        self.functions[logical] = out
        self.names[logical] = str(self.t.ref(logical))
        if isinstance(props.get("EventInvokeConfig"), dict):
            invoke = self.t.resolve(props["EventInvokeConfig"], f"{where}.EventInvokeConfig")
            self.event_invoke_config(logical, invoke, f"{where}.EventInvokeConfig")
        if isinstance(props.get("FunctionUrlConfig"), dict):
            url = self.t.resolve(props["FunctionUrlConfig"], f"{where}.FunctionUrlConfig")
            self.function_url(logical, f"{logical}.Url", url, f"{where}.FunctionUrlConfig")

    def _inline_code(
        self, logical: str, where: str, runtime: str, handler: str, code: Any
    ) -> str | None:
        """With ``--inline-code DIR``: a function's ``InlineCode`` written as the module its
        handler names, in ``DIR/FUNCTION/``, which becomes its folder."""
        suffix = ".py" if runtime.startswith("python") else ".js" if "nodejs" in runtime else ""
        if self.inline_code is None or not suffix or "." not in handler:
            self.notes.append(
                f"{where}: InlineCode is not carried over: write it to a file in a folder and "
                "give the function's path (or CodeUri)"
                + (", or give --inline-code DIR" if suffix and self.inline_code is None else "")
            )
            return None
        folder = os.path.join(self.inline_code, logical)
        module = handler.rsplit(".", 1)[0]
        file = os.path.join(folder, module.replace(".", "/").replace("/", os.sep) + suffix)
        os.makedirs(os.path.dirname(file), exist_ok=True)
        with open(file, "w", encoding="utf-8") as f:
            f.write(str(self.t.resolve(code, where)))
        self.notes.append(f"{where}: InlineCode written to {file}")
        return os.path.normpath(folder)

    def event_invoke_config(self, function: str, props: dict[str, Any], where: str) -> None:
        """SAM's ``EventInvokeConfig`` or an ``AWS::Lambda::EventInvokeConfig``: the
        function's ``event_invoke_config``."""
        out: dict[str, Any] = {}
        for key, ours in (
            ("MaximumRetryAttempts", "maximum_retry_attempts"),
            ("MaximumEventAgeInSeconds", "maximum_event_age"),
        ):
            if key in props:
                out[ours] = props[key]
        destinations = props.get("DestinationConfig") or {}
        for key, ours in (("OnSuccess", "on_success"), ("OnFailure", "on_failure")):
            given = destinations.get(key) if isinstance(destinations, dict) else None
            if not isinstance(given, dict):
                continue
            kind = given.get("Type")
            if "Destination" not in given:
                self.notes.append(
                    f"{where}: DestinationConfig.{key} {kind or ''} has no Destination (SAM "
                    "would create one): left out, give its destination"
                )
                continue
            if kind in ("Lambda", "EventBridge"):
                self.notes.append(
                    f"{where}: DestinationConfig.{key} of Type {kind} has no counterpart here; "
                    "left out"
                )
                continue
            out.setdefault("destination_config", {})[ours] = {"destination": given["Destination"]}
        left = sorted(
            set(props)
            - {
                "MaximumRetryAttempts",
                "MaximumEventAgeInSeconds",
                "DestinationConfig",
                "FunctionName",
            }
        )
        if left:
            self.notes.append(f"{where}: not carried over: {', '.join(left)}")
        if function in self.functions and out:
            self.functions[function]["event_invoke_config"] = out
            self.pushed.append(where)

    def function_url(self, function: str, name: str, props: dict[str, Any], where: str) -> None:
        """SAM's ``FunctionUrlConfig`` or an ``AWS::Lambda::Url``: ``http`` mappings on the
        ingress listener serving every path and method (the first one at ``/``, later ones
        under ``/FUNCTION/``): ``NAME`` at ``/{proxy+}``, ``NAME.root`` at ``/``."""
        path = "/{proxy+}"
        if path in self._url_paths:
            path = f"/{self.names[function]}/{{proxy+}}"
            self.notes.append(
                f"{where}: another function URL serves every path: this one serves {path}"
            )
        self._url_paths.add(path)
        self.pushed.append(where)
        out: dict[str, Any] = {"Path": path, "Method": "ANY"}
        if "AuthType" in props:
            out["AuthType"] = props["AuthType"]
        if isinstance(props.get("Cors"), dict):
            out["Cors"] = props["Cors"]
        if props.get("InvokeMode", "BUFFERED") != "BUFFERED":
            self.notes.append(
                f"{where}: InvokeMode {props['InvokeMode']} is not served here; answers are "
                "buffered"
            )
        left = sorted(set(props) - {"AuthType", "Cors", "InvokeMode", "TargetFunctionArn"})
        if left:
            self.notes.append(f"{where}: not carried over: {', '.join(left)}")
        root = path.removesuffix("/{proxy+}") or "/"
        self.notes.append(
            f"{where}: the function URL is http://{INGRESS_LISTEN}{root} (the ingress "
            f"listener; mappings {_mapping_name(name)} and {_mapping_name(name, 'root')})"
        )
        function_name = self.names[function]
        self.mappings.append({"name": _mapping_name(name), "function": function_name, **out})
        # {proxy+} takes one character or more: the URL itself is a route of its own.
        root_props = {**out, "Path": root}
        self.mappings.append(
            {"name": _mapping_name(name, "root"), "function": function_name, **root_props}
        )

    def _environment(self, where: str, env: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in env.items():
            if RESERVED_ENV.match(name):
                self.notes.append(f"{where}: Environment {name} is set by the router; left out")
            elif CREDENTIAL_ENV.search(name.upper()):
                out[name] = "${" + name + "}"
                self.notes.append(
                    f"{where}: Environment {name} holds a credential: set {name} in the "
                    "router's environment"
                )
            else:
                out[name] = value if isinstance(value, str) else str(value)
        return out

    # -- events -----------------------------------------------------------------------------

    def event(self, function: str, event: str, entry: Any) -> None:
        where = f"{function}.Events.{event}"
        if not isinstance(entry, dict):
            self.notes.append(f"{where}: not a mapping; skipped")
            return
        kind = str(entry.get("Type", ""))
        if kind == "Api":
            self.notes.append(
                f"{where}: event type Api is not mapped; skipped (a REST API's payload format "
                "1.0 is not produced here: an HttpApi event or a FunctionUrlConfig gives the "
                "2.0 event)"
            )
            return
        if kind not in EVENT_TYPES:
            self.notes.append(f"{where}: event type {kind or '(none)'} is not mapped; skipped")
            return
        props = self.t.resolve(entry.get("Properties") or {}, where)
        self.add(_mapping_name(function, event), function, kind, props, where)

    def add(self, name: str, function: str, kind: str, props: dict[str, Any], where: str) -> None:
        props = dict(props)
        if kind in PUSHED:
            self.pushed.append(where)
        for key in ("Queue", "Stream", "EventSourceArn"):
            value = props.get(key)
            if isinstance(value, str) and not value.startswith(("arn:", "<")):
                self.notes.append(
                    f"{where}: {key} {value!r} is not an ARN (a parameter's Default?): give the "
                    "source's ARN"
                )
        for key in dict.fromkeys((*DROPPED.get(kind, ()), *DROPPED_ALL)):
            if key in props:
                props.pop(key)
                self.notes.append(f"{where}: {key} has no counterpart here; left out")
        if kind == "HttpApi" and "Path" not in props:
            props.update(Path="/{proxy+}", Method="ANY")
            self.notes.append(
                f"{where}: no Path (the API's default route): /{{proxy+}}, any method"
            )
        if kind == "SNS":
            props["path"] = f"/sns/{name}"
            self.notes.append(
                f"{where}: subscribe http://HOST:PORT/sns/{name} (the ingress listener) to the "
                "topic"
            )
        if kind == "S3" and "queue_url" not in props:
            self.notes.append(
                f"{where}: the bucket is polled (new objects only); give queue_url for its "
                "notifications"
            )
        if kind == "MSK":
            props.setdefault("bootstrap_servers", ["127.0.0.1:9092"])
            self.notes.append(
                f"{where}: the MSK cluster's bootstrap_servers: 127.0.0.1:9092, adjust"
            )
        if kind == "MQ":
            props.setdefault("url", "amqp://127.0.0.1:5672/")
            self.notes.append(f"{where}: the broker's url: amqp://127.0.0.1:5672/, adjust")
        if isinstance(props.get("SourceAccessConfigurations"), list):
            self._access(name, where, props)
        if kind in AWS_SOURCES and self.endpoint_url:
            props.setdefault("endpoint_url", self.endpoint_url)
            props.setdefault("region", self.t.region)
        self.mappings.append({"name": name, "function": self.names[function], **props})

    def _access(self, name: str, where: str, props: dict[str, Any]) -> None:
        items = []
        for item in props["SourceAccessConfigurations"]:
            kind = item.get("Type") if isinstance(item, dict) else None
            if kind in ("BASIC_AUTH", "SASL_SCRAM_256_AUTH", "SASL_SCRAM_512_AUTH"):
                env = _env_name(name, "credentials")
                self.notes.append(
                    f"{where}: {kind}: set {env} to the secret's JSON "
                    '{"username": ..., "password": ...}'
                )
                items.append({"Type": kind, "URI": "${" + env + "}"})
            else:
                items.append(item)
        props["SourceAccessConfigurations"] = items


def import_template(
    text: str,
    path: str,
    *,
    endpoint_url: str | None = None,
    region: str = "us-east-1",
    account: str = "123456789012",
    inline_code: str | None = None,
) -> Imported:
    """The router configuration of the SAM template ``text`` read from ``path``; with
    ``inline_code``, functions' ``InlineCode`` is written to files under that folder."""
    from router.sam.resources import other_resources

    doc = load_template(text)
    stack = os.path.splitext(os.path.basename(path))[0] or "stack"
    template = Template(doc, region=region, account=account, stack=stack)
    notes: list[str] = []
    importer = Importer(template, os.path.dirname(path), endpoint_url, notes)
    importer.inline_code = inline_code
    defaults = ((doc.get("Globals") or {}).get("Function")) or {}
    for logical, resource in template.resources.items():
        if resource.get("Type") == "AWS::Serverless::Function":
            importer.function(logical, _merge(defaults, resource.get("Properties") or {}))
        elif resource.get("Type") == "AWS::Lambda::Function":
            importer.function(logical, _plain_function(logical, resource, notes))
    if not importer.functions:
        notes.append("no AWS::Serverless::Function or AWS::Lambda::Function in the template")
    for logical, resource in template.resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        events = (resource.get("Properties") or {}).get("Events") or {}
        for event, entry in events.items():
            importer.event(logical, str(event), entry)
    other_resources(importer)
    config: dict[str, Any] = {}
    if importer.pushed:
        config["router"] = {"ingress": {"listen": INGRESS_LISTEN}}
        notes.append(
            f"router.ingress.listen: {INGRESS_LISTEN} (function URLs, SNS, EventBridge and "
            "asynchronous Invoke calls reach the functions there), adjust"
        )
    config["functions"] = {importer.names[k]: v for k, v in importer.functions.items()}
    config["mappings"] = importer.mappings
    return Imported(config, [*template.notes, *notes])
