"""A SAM function's ``FunctionUrlConfig`` through ``router import-sam``, served by a ``router
run`` process: the URL's root and any path below it reach the function."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import yaml

from router.sam import import_template
from tests.fixtures.procs import free_port
from tests.helpers import start_router_process, terminate

TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Conditions:
  Public: !Equals [!Ref AWS::Region, us-east-1]
Resources:
  Hello:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      CodeUri: src/
      Handler: app.handler
      FunctionUrlConfig:
        AuthType: !If [Public, NONE, AWS_IAM]
"""

HANDLER = """\
def handler(event, context):
    return {"statusCode": 200, "body": event["rawPath"]}
"""


async def _get(url: str) -> tuple[int, str]:
    # The route is registered as the mapping's source starts: retry a 404 briefly.
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as answer:
                body = await answer.text()
                if answer.status != 404 or time.monotonic() > deadline:
                    return answer.status, body


async def test_an_imported_function_url_serves_its_root_and_every_path(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(HANDLER)
    template = tmp_path / "template.yaml"
    template.write_text(TEMPLATE)
    imported = import_template(TEMPLATE, str(template))
    port = free_port()
    config = imported.config
    assert config["router"] == {"ingress": {"listen": "127.0.0.1:9000"}}
    config["router"]["ingress"]["listen"] = f"127.0.0.1:{port}"  # a free port for the test
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "router.log"
    proc = start_router_process(path, f"sqlite:///{tmp_path / 'router.db'}", tmp_path, log)
    try:
        deadline = time.monotonic() + 30
        while "mapping Hello.Url.root started" not in log.read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"the router did not start:\n{log.read_text()}")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        assert await _get(f"{url}/") == (200, "/")
        assert await _get(f"{url}/orders/7?x=1") == (200, "/orders/7")
    finally:
        assert terminate(proc) == 0, log.read_text()
    assert json.dumps(imported.notes).count("Hello.FunctionUrlConfig") == 1
