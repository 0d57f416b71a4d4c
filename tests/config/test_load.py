"""Loading and validating configuration files: accepted forms, defaults, located errors."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from router.config import RouterSettings, load_config, load_config_text
from router.errors import ConfigError, ConfigErrors, Location
from router.secrets import SecretUrl

pytestmark = pytest.mark.usefixtures("test_plugins")

BRIEF_EXAMPLE = """\
router:            # optional
  store: sqlite+aiosqlite:///router.db
functions:
  echo:
    invoker: python          # python | http | runtime-api | lambda  (router.invokers)
    handler: bar_handler:handle
    timeout: 3               # seconds, common key for all invokers, default 3, 1..900
mappings:
  - name: inbox
    function: echo           # must name a function declared under functions:
    source:
      type: directory        # router.sources entry points
      path: ./inbox
    batch_size: 1
"""

FUNCTIONS = """\
functions:
  echo:
    invoker: python
    handler: app:handle
"""


def errors_of(text: str, filename: str = "c.yaml") -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_config_text(textwrap.dedent(text), filename)
    return str(info.value).splitlines()


def one_mapping(body: str) -> str:
    """FUNCTIONS plus one mapping whose keys are ``body`` (dedented, indented under ``- ``)."""
    lines = textwrap.dedent(body).strip().splitlines()
    first, rest = lines[0], lines[1:]
    return FUNCTIONS + "mappings:\n  - " + first + "\n" + "".join(f"    {x}\n" for x in rest)


def test_brief_example_is_accepted() -> None:
    config = load_config_text(BRIEF_EXAMPLE, "router.yaml")
    assert config.settings == RouterSettings(store=SecretUrl("sqlite+aiosqlite:///router.db"))
    assert config.files == ("router.yaml",)
    echo = config.functions["echo"]
    assert (echo.name, echo.invoker, echo.timeout) == ("echo", "python", 3.0)
    assert echo.settings.model_dump() == {"handler": "bar_handler:handle"}
    (m,) = config.mappings
    assert (m.name, m.function, m.source.type, m.batch_size) == ("inbox", "echo", "directory", 1)
    assert m.source.settings.model_dump() == {"path": "./inbox", "suffix": ""}
    # directory is an asynchronous source: AWS async-invocation defaults.
    assert (m.maximum_retry_attempts, m.maximum_record_age) == (2, 21_600)
    assert m.enabled and m.origin == "yaml" and m.uuid == ""
    assert str(config.locations["inbox"]) == "router.yaml:9: mappings[0].name"


def test_what_a_running_router_keeps_still_locates_its_functions() -> None:
    config = load_config_text(BRIEF_EXAMPLE, "router.yaml")
    running = config.running()
    assert running.mappings == () and running.functions == config.functions
    # The lines of the mappings' keys go with them; the functions' stay, for later errors.
    assert all(path[:1] != ("mappings",) for path in running.key_lines["router.yaml"])
    error = running.relocate(ConfigError("bad", Location(path="functions.echo.handler")))
    assert str(error.location) == str(config.locate_function("echo", ("handler",)))
    assert error.location.line == 6


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "\n\n  \n# a\n---\n"])
def test_empty_or_comment_only_file_is_an_error(text: str) -> None:
    # Applying an empty file would delete every mapping (a file truncated while an editor
    # rewrites it, a volume mounted empty).
    assert errors_of(text, "empty.yaml") == [
        "empty.yaml: the file is empty (or holds only comments); nothing is applied. Declare "
        "router:, functions: or mappings: (write mappings: [] to remove every mapping)"
    ]


def test_an_explicit_empty_mapping_list_is_accepted() -> None:
    config = load_config_text("mappings: []\n", "none.yaml")
    assert (dict(config.functions), config.mappings) == ({}, ())
    assert config.settings == RouterSettings()


def test_an_empty_file_among_others_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(FUNCTIONS)
    (tmp_path / "b.yaml").write_text("# emptied\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'b.yaml'}: the file is empty")


SNAKE = """\
name: orders
function: echo
enabled: false
source: {type: kafka, bootstrap_servers: "127.0.0.1:9092", topics: [orders]}
batch_size: 500
maximum_batching_window: 2
starting_position: AT_TIMESTAMP
starting_position_timestamp: 2024-05-01T10:00:00Z
filter_criteria:
  filters:
    - pattern: '{"value": {"kind": ["order"]}}'
maximum_retry_attempts: 3
maximum_record_age: 3600
bisect_batch_on_function_error: true
function_response_types: [ReportBatchItemFailures]
destination_config:
  on_failure: {destination: "arn:aws:sqs:us-east-1:123456789012:dlq"}
  on_success: {type: http, url: "https://example.com/ok"}
"""

PASCAL = """\
name: orders
FunctionName: echo
Enabled: false
source: {type: kafka, bootstrap_servers: "127.0.0.1:9092", topics: [orders]}
BatchSize: 500
MaximumBatchingWindowInSeconds: 2
StartingPosition: AT_TIMESTAMP
StartingPositionTimestamp: 1714557600
FilterCriteria:
  Filters:
    - Pattern: '{"value": {"kind": ["order"]}}'
MaximumRetryAttempts: 3
MaximumRecordAgeInSeconds: 3600
BisectBatchOnFunctionError: true
FunctionResponseTypes: [ReportBatchItemFailures]
DestinationConfig:
  OnFailure: {Destination: "arn:aws:sqs:us-east-1:123456789012:dlq"}
  OnSuccess: {type: http, url: "https://example.com/ok"}
"""


def test_every_aws_alias_means_the_same() -> None:
    snake = load_config_text(one_mapping(SNAKE)).mappings[0]
    pascal = load_config_text(one_mapping(PASCAL)).mappings[0]
    assert snake == pascal
    assert snake.enabled is False
    assert snake.batch_size == 500
    assert snake.maximum_batching_window == 2.0
    assert snake.starting_position == "AT_TIMESTAMP"
    assert snake.starting_position_timestamp == datetime(2024, 5, 1, 10, tzinfo=UTC)
    # JSON text is kept as written (number and string forms matter to matching).
    assert snake.filter_patterns == ('{"value": {"kind": ["order"]}}',)
    assert (snake.maximum_retry_attempts, snake.maximum_record_age) == (3, 3600)
    assert snake.bisect_batch_on_function_error and snake.report_batch_item_failures
    assert snake.on_failure is not None and snake.on_failure.type == "sqs"
    assert snake.on_failure.settings.model_dump()["arn"].endswith(":dlq")
    assert snake.on_success is not None and snake.on_success.type == "http"


def test_scaling_config_alias_and_parallelization_factor() -> None:
    queue = "source: {type: sqs, queue_url: 'http://127.0.0.1:4566/000000000000/q'}"
    a = load_config_text(one_mapping(f"name: q\nfunction: echo\n{queue}\nmaximum_concurrency: 5"))
    b = load_config_text(
        one_mapping(f"name: q\nfunction: echo\n{queue}\nScalingConfig: {{MaximumConcurrency: 5}}")
    )
    assert a.mappings[0] == b.mappings[0]
    assert a.mappings[0].maximum_concurrency == 5
    shard = load_config_text(
        one_mapping(
            "name: s\nfunction: echo\nsource: {type: kinesis, bootstrap_servers: x, topics: [t]}\n"
            "starting_position: LATEST\nParallelizationFactor: 10"
        )
    )
    assert shard.mappings[0].parallelization_factor == 10


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "{type: directory, path: /in}",
            {"batch_size": 1, "window": 0.0, "retries": 2, "age": 21600.0, "position": None},
        ),
        (
            "{type: kafka, bootstrap_servers: x, topics: [t]}",
            {"batch_size": 100, "window": 0.5, "retries": -1, "age": -1.0, "position": "LATEST"},
        ),
        (
            "{type: sqs, queue_url: 'http://h/000000000000/q'}",
            {"batch_size": 10, "window": 0.0, "retries": -1, "age": -1.0, "position": None},
        ),
        (
            "{type: sqs, queue_url: 'http://h/000000000000/q.fifo'}",
            {"batch_size": 10, "window": 0.0, "retries": -1, "age": -1.0, "position": None},
        ),
    ],
    ids=["directory", "kafka", "sqs", "sqs-fifo"],
)
def test_defaults_per_source_type(source: str, expected: dict[str, object]) -> None:
    position = "\nstarting_position: LATEST" if "kafka" in source else ""
    config = load_config_text(one_mapping(f"name: m\nfunction: echo\nsource: {source}{position}"))
    m = config.mappings[0]
    got = {
        "batch_size": m.batch_size,
        "window": m.maximum_batching_window,
        "retries": m.maximum_retry_attempts,
        "age": m.maximum_record_age,
        "position": m.starting_position,
    }
    assert got == expected
    assert (m.parallelization_factor, m.maximum_concurrency, m.on_failure) == (1, None, None)
    assert not m.bisect_batch_on_function_error and not m.report_batch_item_failures


# -- errors, each with its exact FILE:LINE: path: message ------------------------------------


def test_unknown_top_level_key() -> None:
    assert errors_of(FUNCTIONS + "mapings: []\n") == [
        "c.yaml:5: mapings: unknown key 'mapings'; did you mean 'mappings'?"
    ]


def test_unknown_key_in_mapping() -> None:
    text = one_mapping(
        "name: a\nfunction: echo\nsource: {type: directory, path: /in}\nbatchsize: 2"
    )
    assert errors_of(text) == [
        "c.yaml:9: mappings[0].batchsize: unknown key 'batchsize'; did you mean 'batch_size'?"
    ]


def test_unknown_key_in_source_settings() -> None:
    text = one_mapping(
        "name: a\nfunction: echo\nsource:\n  type: directory\n  path: /in\n  glob: x"
    )
    assert errors_of(text) == [
        "c.yaml:11: mappings[0].source.glob: unknown key 'glob'; known keys: path, suffix"
    ]


def test_unknown_key_in_function_suggests_common_keys() -> None:
    text = "functions:\n  echo:\n    invoker: python\n    handler: a:b\n    timeuot: 4\n"
    assert errors_of(text) == [
        "c.yaml:5: functions.echo.timeuot: unknown key 'timeuot'; did you mean 'timeout'?"
    ]


def test_wrong_types() -> None:
    text = one_mapping(
        "name: a\nfunction: echo\nsource: {type: directory, path: /in}\n"
        "batch_size: '5'\nenabled: 1\nfunction_response_types: ReportBatchItemFailures"
    )
    assert errors_of(text) == [
        "c.yaml:9: mappings[0].batch_size: must be an integer, got a string",
        "c.yaml:10: mappings[0].enabled: must be true or false, got a number",
        "c.yaml:11: mappings[0].function_response_types: must be a list, got a string",
    ]


def test_missing_required_keys_point_at_the_enclosing_mapping() -> None:
    text = one_mapping("name: a\nsource:\n  path: /in")
    assert errors_of(text) == [
        "c.yaml:6: mappings[0].function: required key is missing",
        "c.yaml:7: mappings[0].source.type: required key is missing",
    ]


def test_unknown_function_names_the_known_ones() -> None:
    text = one_mapping("name: a\nfunction: ehco\nsource: {type: directory, path: /in}")
    assert errors_of(text) == [
        "c.yaml:7: mappings[0].function: unknown function 'ehco'; "
        "functions declared under functions: echo"
    ]


def test_unknown_source_and_destination_types() -> None:
    text = one_mapping(
        "name: a\nfunction: echo\nsource: {type: ftp, host: x}\n"
        "destination_config:\n  on_failure: {destination: 'gopher://x'}"
    )
    assert errors_of(text) == [
        "c.yaml:8: mappings[0].source.type: unknown source type 'ftp'; known types: "
        "directory, kafka, kinesis, needs-lib, s3, sqs",
    ]
    text = one_mapping(
        "name: a\nfunction: echo\nsource: {type: directory, path: /in}\n"
        "destination_config:\n  on_failure: {destination: 'gopher://x'}\n"
        "  on_success: {type: pigeon}"
    )
    assert errors_of(text) == [
        "c.yaml:10: mappings[0].destination_config.on_failure.destination: unknown destination "
        "'gopher://x'; use table, an sqs/sns/s3 ARN, an http(s):// URL, file:///PATH or "
        "kafka://TOPIC",
        "c.yaml:11: mappings[0].destination_config.on_success.type: unknown destination type "
        "'pigeon'; known types: directory, http, kafka, s3, sns, sqs, table",
    ]


def test_plugin_module_missing_or_library_missing() -> None:
    text = one_mapping("name: a\nfunction: echo\nsource: {type: needs-lib}")
    assert errors_of(text) == [
        "c.yaml:8: mappings[0].source.type: the source type 'needs-lib' needs the "
        "'fancylib_not_installed' library: pip install 'event-router[fancy]'"
    ]
    text = one_mapping("name: a\nfunction: echo\nsource: {type: s3}")
    (line,) = errors_of(text)
    assert line.startswith(
        "c.yaml:8: mappings[0].source.type: the source type 's3' is not available in this build"
    )


def test_duplicate_mapping_names() -> None:
    text = FUNCTIONS + textwrap.dedent("""\
        mappings:
          - name: a
            function: echo
            source: {type: directory, path: /in}
          - name: a
            function: echo
            source: {type: directory, path: /other}
        """)
    assert errors_of(text) == [
        "c.yaml:9: mappings[1].name: duplicate mapping name 'a' (first used at c.yaml:6); "
        "names must be unique"
    ]


def test_duplicate_yaml_keys() -> None:
    text = one_mapping("name: a\nfunction: echo\nsource: {type: directory, path: /in}\nname: b")
    assert errors_of(text) == [
        "c.yaml:9: mappings[0].name: duplicate key 'name' (first given on line 6)"
    ]


def test_same_key_under_two_spellings() -> None:
    text = one_mapping(
        "name: a\nfunction: echo\nsource: {type: directory, path: /in}\nBatchSize: 1\nbatch_size: 1"
    )
    assert errors_of(text) == [
        "c.yaml:9: mappings[0].BatchSize: 'BatchSize' is the same key as 'batch_size'; give it once"
    ]


def test_bad_yaml_syntax() -> None:
    text = FUNCTIONS + "mappings:\n  - name: [a\n"
    assert errors_of(text) == [
        "c.yaml:7: invalid YAML: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence started on line 6)"
    ]


def test_tabs_and_bad_indentation_are_syntax_errors_with_a_line() -> None:
    (line,) = errors_of("functions:\n  echo:\n\tinvoker: python\n")
    assert line.startswith("c.yaml:3: invalid YAML: ")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "batch_size: 0",
            "c.yaml:10: mappings[0].batch_size: must be between 1 and 10000 for source type "
            "'kafka', got 0",
        ),
        (
            "batch_size: 10001",
            "c.yaml:10: mappings[0].batch_size: must be between 1 and 10000 for source type "
            "'kafka', got 10001",
        ),
        (
            "MaximumBatchingWindowInSeconds: 301",
            "c.yaml:10: mappings[0].MaximumBatchingWindowInSeconds: must be between 0 and 300 for "
            "source type 'kafka', got 301",
        ),
        (
            "maximum_retry_attempts: -2",
            "c.yaml:10: mappings[0].maximum_retry_attempts: must be between -1 and 10000 for "
            "source type 'kafka', got -2",
        ),
        (
            "maximum_record_age: 59",
            "c.yaml:10: mappings[0].maximum_record_age: must be -1 or between 60 and 604800 for "
            "source type 'kafka', got 59",
        ),
        (
            "starting_position: EARLIEST",
            "c.yaml:9: mappings[0].starting_position: must be one of TRIM_HORIZON, LATEST, "
            "AT_TIMESTAMP for source type 'kafka'",
        ),
        (
            "starting_position_timestamp: 2024-01-01T00:00:00Z",
            "c.yaml:10: mappings[0].starting_position_timestamp: only allowed with "
            "starting_position AT_TIMESTAMP",
        ),
        (
            "function_response_types: [ReportItemFailures]",
            "c.yaml:10: mappings[0].function_response_types[0]: must be one of: "
            "'ReportBatchItemFailures'",
        ),
    ],
)
def test_out_of_range_values(extra: str, expected: str) -> None:
    position = "" if extra.startswith("starting_position:") else "starting_position: LATEST\n"
    text = one_mapping(
        "name: a\nfunction: echo\nsource: {type: kafka, bootstrap_servers: x, topics: [t]}\n"
        f"{position}{extra}"
    )
    assert errors_of(text) == [expected]


def test_static_limits_and_function_timeout() -> None:
    text = (
        "functions:\n  echo:\n    invoker: python\n    handler: a:b\n    timeout: 901\n"
        "mappings:\n  - name: a\n    function: echo\n"
        "    source: {type: kinesis, bootstrap_servers: x, topics: [t]}\n"
        "    starting_position: TRIM_HORIZON\n    parallelization_factor: 11\n"
        "  - name: b\n    function: echo\n    source: {type: sqs, queue_url: 'http://h/1/q'}\n"
        "    maximum_concurrency: 1\n"
    )
    assert errors_of(text) == [
        "c.yaml:5: functions.echo.timeout: must be <= 900",
        "c.yaml:11: mappings[0].parallelization_factor: must be between 1 and 10 for source "
        "type 'kinesis', got 11",
        "c.yaml:15: mappings[1].maximum_concurrency: must be between 2 and 1000, got 1",
    ]


def test_fields_a_source_does_not_support() -> None:
    text = one_mapping(
        "name: a\nfunction: echo\nsource: {type: directory, path: /in}\n"
        "starting_position: LATEST\nparallelization_factor: 2\n"
        "bisect_batch_on_function_error: true\nScalingConfig: {MaximumConcurrency: 5}"
    )
    assert errors_of(text) == [
        "c.yaml:9: mappings[0].starting_position: not supported by source type 'directory'",
        "c.yaml:10: mappings[0].parallelization_factor: not supported by source type 'directory'",
        "c.yaml:11: mappings[0].bisect_batch_on_function_error: not supported by source type "
        "'directory'",
        "c.yaml:12: mappings[0].ScalingConfig.MaximumConcurrency: not supported by source type "
        "'directory'",
    ]


def test_async_source_limits() -> None:
    text = one_mapping(
        "name: a\nfunction: echo\nsource: {type: directory, path: /in}\n"
        "maximum_retry_attempts: 3\nmaximum_record_age: -1\nbatch_size: 2"
    )
    assert errors_of(text) == [
        "c.yaml:9: mappings[0].maximum_retry_attempts: must be between 0 and 2 for source type "
        "'directory', got 3",
        "c.yaml:10: mappings[0].maximum_record_age: must be between 60 and 21600 for source type "
        "'directory', got -1",
        "c.yaml:11: mappings[0].batch_size: must be between 1 and 1 for source type "
        "'directory', got 2",
    ]


def test_starting_position_rules() -> None:
    kafka = "source: {type: kafka, bootstrap_servers: x, topics: [t]}"
    assert errors_of(one_mapping(f"name: a\nfunction: echo\n{kafka}")) == [
        "c.yaml:6: mappings[0].starting_position: required for source type 'kafka': one of "
        "TRIM_HORIZON, LATEST, AT_TIMESTAMP"
    ]
    assert errors_of(
        one_mapping(f"name: a\nfunction: echo\n{kafka}\nstarting_position: AT_TIMESTAMP")
    ) == ["c.yaml:9: mappings[0].starting_position: AT_TIMESTAMP needs starting_position_timestamp"]


def test_sqs_batch_size_above_10_needs_a_window() -> None:
    queue = "source: {type: sqs, queue_url: 'http://h/1/q'}"
    assert errors_of(one_mapping(f"name: a\nfunction: echo\n{queue}\nbatch_size: 11")) == [
        "c.yaml:9: mappings[0].batch_size: a batch_size above 10 needs maximum_batching_window "
        "of at least 1 second (as AWS requires for SQS)"
    ]
    ok = load_config_text(
        one_mapping(f"name: a\nfunction: echo\n{queue}\nbatch_size: 11\nmaximum_batching_window: 1")
    )
    assert ok.mappings[0].batch_size == 11
    fifo = "source: {type: sqs, queue_url: 'http://h/1/q.fifo'}"
    assert errors_of(
        one_mapping(f"name: a\nfunction: echo\n{fifo}\nbatch_size: 11\nmaximum_batching_window: 1")
    ) == [
        "c.yaml:9: mappings[0].batch_size: must be between 1 and 10 for source type 'sqs', got 11",
        "c.yaml:10: mappings[0].maximum_batching_window: not supported by source type 'sqs'",
    ]


def test_a_source_type_brings_its_own_mapping_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule lives with the source class, whatever its type is called."""
    from router import registry
    from tests.config import plugins

    tables = {**plugins.PLUGINS, "source": {"elasticmq": f"{plugins.HERE}:QueueSource"}}
    monkeypatch.setattr(registry, "plugins", lambda kind: dict(tables[kind]))
    queue = "source: {type: elasticmq, queue_url: 'http://h/1/q'}"
    assert errors_of(one_mapping(f"name: a\nfunction: echo\n{queue}\nBatchSize: 11")) == [
        "c.yaml:9: mappings[0].BatchSize: a batch_size above 10 needs maximum_batching_window "
        "of at least 1 second (as AWS requires for SQS)"
    ]


def test_bad_mapping_name_and_function_name() -> None:
    text = (
        "functions:\n  'bad name':\n    invoker: python\n    handler: a:b\n"
        "mappings:\n  - name: 'has space'\n    function: 'bad name'\n"
        "    source: {type: directory, path: /in}\n"
    )
    assert errors_of(text) == [
        "c.yaml:2: functions.bad name: a function name must match ^[A-Za-z0-9_-]{1,64}$ "
        "(as a Lambda function name)",
        "c.yaml:6: mappings[0].name: must match ^[A-Za-z0-9_.-]{1,64}$",
    ]


def test_handler_shape_is_checked_by_the_invoker_settings() -> None:
    text = "functions:\n  echo:\n    invoker: python\n    handler: no_colon\n"
    assert errors_of(text) == [
        "c.yaml:4: functions.echo.handler: handler 'no_colon' must look like 'module:function'"
    ]


def test_all_errors_of_a_file_are_reported() -> None:
    text = textwrap.dedent("""\
        router:
          log_format: xml
        functions:
          echo: {invoker: python, handler: a:b}
        mappings:
          - name: a
            function: nope
            source: {type: directory, path: /in}
          - name: b
            function: echo
            source: {type: directory}
            batch_size: 0
        """)
    assert errors_of(text) == [
        "c.yaml:2: router.log_format: must be one of: 'console' or 'json'",
        "c.yaml:7: mappings[0].function: unknown function 'nope'; "
        "functions declared under functions: echo",
        "c.yaml:11: mappings[1].source.path: required key is missing",
    ]


# -- filters ------------------------------------------------------------------------------


def _filters(patterns: list[str]) -> str:
    items = "".join(f"\n    - pattern: '{p}'" for p in patterns)
    return one_mapping(
        f"name: a\nfunction: echo\nsource: {{type: directory, path: /in}}\n"
        f"filter_criteria:\n  filters:{items}"
    )


def test_filter_patterns_are_validated_and_kept_as_json() -> None:
    pytest.importorskip("router.filters")
    config = load_config_text(_filters(['{"s3": {"object": {"key": [{"prefix": "in/"}]}}}']))
    (pattern,) = config.mappings[0].filter_patterns
    assert json.loads(pattern) == {"s3": {"object": {"key": [{"prefix": "in/"}]}}}
    (line,) = errors_of(_filters(['{"x": [{"prefix": 5}]}']))
    assert line.startswith(
        "c.yaml:11: mappings[0].filter_criteria.filters[0].pattern: invalid filter pattern: "
    )
    (line,) = errors_of(_filters(["not json"]))
    assert line.startswith("c.yaml:11: mappings[0].filter_criteria.filters[0].pattern: ")


def test_filter_pattern_count_limit_can_be_raised() -> None:
    pytest.importorskip("router.filters")
    six = [f'{{"k": ["{i}"]}}' for i in range(6)]
    assert errors_of(_filters(six)) == [
        "c.yaml:10: mappings[0].filter_criteria.filters: at most 5 filter patterns per mapping "
        "(got 6); raise router.max_filter_patterns to allow more"
    ]
    config = load_config_text("router:\n  max_filter_patterns: 6\n" + _filters(six))
    assert len(config.mappings[0].filter_patterns) == 6


def test_filter_pattern_length_limit() -> None:
    pytest.importorskip("router.filters")
    long = '{"k": ["' + "x" * 4100 + '"]}'
    assert errors_of(_filters([long])) == [
        "c.yaml:11: mappings[0].filter_criteria.filters[0].pattern: a filter pattern may have "
        f"at most 4096 characters (this one has {len(long)})"
    ]


def test_filter_criteria_without_the_engine_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "router.filters", None)
    assert errors_of(_filters(['{"k": ["v"]}'])) == [
        "c.yaml:9: mappings[0].filter_criteria: filter_criteria needs the filter engine, "
        "not available in this build"
    ]


# -- destinations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "type_name", "settings"),
    [
        ("table", "table", {}),
        (
            "arn:aws:sqs:us-east-1:123456789012:dlq",
            "sqs",
            {"arn": "arn:aws:sqs:us-east-1:123456789012:dlq", "region": None},
        ),
        (
            "arn:aws:sns:eu-west-1:123456789012:t",
            "sns",
            {"arn": "arn:aws:sns:eu-west-1:123456789012:t", "region": None},
        ),
        ("arn:aws:s3:::bucket", "s3", {"arn": "arn:aws:s3:::bucket", "region": None}),
        ("https://example.com/hook", "http", {"url": "https://example.com/hook", "timeout": 10.0}),
        ("file:///var/lib/failed", "directory", {"path": "/var/lib/failed"}),
        ("directory:./failed", "directory", {"path": "./failed"}),
        (
            "kafka://127.0.0.1:9092/dlq",
            "kafka",
            {"topic": "dlq", "bootstrap_servers": "127.0.0.1:9092"},
        ),
        ("kafka://dlq", "kafka", {"topic": "dlq", "bootstrap_servers": None}),
    ],
)
def test_destination_strings(target: str, type_name: str, settings: dict[str, object]) -> None:
    text = one_mapping(
        "name: a\nfunction: echo\nsource: {type: directory, path: /in}\n"
        f"DestinationConfig:\n  OnFailure:\n    Destination: '{target}'"
    )
    m = load_config_text(text).mappings[0]
    assert m.on_failure is not None
    assert (m.on_failure.type, m.on_failure.target) == (type_name, target)
    assert m.on_failure.settings.model_dump() == settings


def test_destination_needs_a_target_or_a_type() -> None:
    text = one_mapping(
        "name: a\nfunction: echo\nsource: {type: directory, path: /in}\n"
        "destination_config:\n  on_failure: {url: 'http://x'}\n"
        "  on_success: {destination: table, type: table}"
    )
    assert errors_of(text) == [
        "c.yaml:10: mappings[0].destination_config.on_failure.destination: needs destination: "
        "<target> (table, an ARN, a URL) or type: <destination type>",
        "c.yaml:11: mappings[0].destination_config.on_success.type: 'type' cannot be combined "
        "with 'destination'; write either destination: <target> or type: <type> with its settings",
    ]


# -- directories of files -----------------------------------------------------------------


def test_directory_of_files_is_merged(tmp_path: Path) -> None:
    (tmp_path / "10-functions.yaml").write_text(FUNCTIONS)
    (tmp_path / "20-inbox.yml").write_text(
        "mappings:\n  - name: inbox\n    function: echo\n    source: {type: directory, path: /a}\n"
    )
    (tmp_path / "30-router.yaml").write_text("router:\n  log_format: json\n")
    (tmp_path / "notes.txt").write_text("not config")
    (tmp_path / ".#20-inbox.yml").write_text("editor lock file: ignored")
    config = load_config(tmp_path)
    assert config.files == tuple(
        str(tmp_path / n) for n in ("10-functions.yaml", "20-inbox.yml", "30-router.yaml")
    )
    assert [m.name for m in config.mappings] == ["inbox"]
    assert config.settings.log_format == "json"
    assert load_config(tmp_path / "10-functions.yaml").files == (
        str(tmp_path / "10-functions.yaml"),
    )


def test_duplicates_across_files_are_errors(tmp_path: Path) -> None:
    mapping = (
        "mappings:\n  - name: inbox\n    function: echo\n    source: {type: directory, path: /a}\n"
    )
    (tmp_path / "a.yaml").write_text(FUNCTIONS + mapping)
    (tmp_path / "b.yaml").write_text(FUNCTIONS + mapping + "router:\n  log_level: DEBUG\n")
    (tmp_path / "c.yaml").write_text("router:\n  log_level: INFO\n")
    a, b, c = (str(tmp_path / n) for n in ("a.yaml", "b.yaml", "c.yaml"))
    with pytest.raises(ConfigErrors) as info:
        load_config(tmp_path)
    assert str(info.value).splitlines() == [
        f"{b}:2: functions.echo: duplicate function 'echo' (first declared at {a}:2)",
        f"{b}:6: mappings[0].name: duplicate mapping name 'inbox' (first used at {a}:6); "
        "names must be unique",
        f"{c}:2: router.log_level: also set at {b}:10: router.log_level; set it once",
    ]


def test_every_file_is_checked(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("functions: [\n")
    (tmp_path / "b.yaml").write_text("mapings: []\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(tmp_path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{tmp_path / 'a.yaml'}:2: invalid YAML: ")
    assert (
        lines[1]
        == f"{tmp_path / 'b.yaml'}:1: mapings: unknown key 'mapings'; did you mean 'mappings'?"
    )


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors, match="no such file or directory"):
        load_config(tmp_path / "nope")
    with pytest.raises(ConfigErrors, match=r"no \*.yaml or \*.yml files"):
        load_config(tmp_path)


def test_config_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        load_config_text("functions: 3\n")
