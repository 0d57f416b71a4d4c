"""The Dockerfile's promises, read statically (``scripts/docker-smoke`` checks them against a
running container where a Docker engine answers; it takes minutes, so it is not in the suite).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

from router.config.schema import RouterSettingsModel

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    stages: list[list[tuple[str, str]]] = []
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    # As Docker reads it: comment lines go first (they neither continue nor break a line).
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line:
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def final_stage() -> list[tuple[str, str]]:
    return instructions()[-1]


def args_of(stage: list[tuple[str, str]], word: str) -> list[str]:
    return [rest for w, rest in stage if w == word]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in args_of(stage, "ENV"):
        env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


def test_user_is_numeric() -> None:
    (user,) = args_of(final_stage(), "USER")
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), (
        f"USER {user}: Kubernetes' runAsNonRoot can only verify a numeric uid"
    )


def test_stopsignal_is_the_drain_signal() -> None:
    assert args_of(final_stage(), "STOPSIGNAL") == ["SIGTERM"]


def test_listener_is_publishable_and_the_healthcheck_follows_its_port() -> None:
    stage = final_stage()
    listen = env_of(stage)["ROUTER_HTTP_LISTEN"]
    host, _, port = listen.rpartition(":")
    assert host == "0.0.0.0", "a listener on 127.0.0.1 cannot be reached through -p"
    assert port in " ".join(args_of(stage, "EXPOSE")).split()
    (check,) = args_of(stage, "HEALTHCHECK")
    assert "router.healthcheck" in check
    assert not re.search(r"\b\d{4,5}\b", check.partition("CMD")[2]), (
        f"the healthcheck names a port itself: {check}"
    )


def test_dependencies_are_installed_before_the_sources_are_copied() -> None:
    build = next(s for s in instructions() if any("pyproject.toml" in r for _, r in s))
    steps = [(w, r) for w, r in build if w in ("COPY", "RUN")]
    first_source = next(i for i, (w, r) in enumerate(steps) if w == "COPY" and "router" in r)
    before = steps[:first_source]
    assert any(w == "COPY" and "pyproject.toml" in r for w, r in before)
    assert any(w == "RUN" and "pip install" in r for w, r in before), (
        "every source change would download the dependencies again"
    )


def test_no_wheel_is_left_in_the_image() -> None:
    stage = final_stage()
    assert len(instructions()) > 1, "a single stage keeps whatever the build downloaded"
    for word, rest in stage:
        assert "wheel" not in rest and ".whl" not in rest, f"{word} {rest}"
    copied = [r for r in args_of(stage, "COPY") if not r.startswith("--from=")]
    assert copied == ["config /config"], "the runtime stage takes only the configuration"


def test_configuration_at_config_and_relative_paths_under_the_workdir() -> None:
    stage = final_stage()
    env = env_of(stage)
    assert env["ROUTER_CONFIG"] == "/config"
    assert args_of(stage, "WORKDIR") == ["/data"]
    assert "/data" in " ".join(args_of(stage, "VOLUME"))
    assert env["ROUTER_STORE_URL"].startswith("sqlite:////data/")
    config = yaml.safe_load((ROOT / "config" / "router.yaml").read_text())
    for mapping in config["mappings"]:
        path = mapping["source"].get("path")
        if path is not None:
            assert path.startswith("./"), f"{mapping['name']}: {path} is not under /data"


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".git", ".cache", "tests", "**/__pycache__"):
        assert entry in ignored, entry
    copied = " ".join(r for stage in instructions() for r in args_of(stage, "COPY"))
    for entry in ("router", "connectors", "migrations", "config", "pyproject.toml"):
        assert entry in copied and entry not in ignored, entry


def test_documented_stop_timeout_outlasts_the_drain() -> None:
    drain = RouterSettingsModel.model_fields["shutdown_timeout"].default
    for doc in ("docs/container.md", "Dockerfile"):
        timeouts = re.findall(r"--stop-timeout (\d+)", (ROOT / doc).read_text())
        assert timeouts, f"{doc} documents no --stop-timeout"
        assert all(int(t) > drain for t in timeouts), (doc, timeouts, drain)
    assert re.search(r"--stop-timeout (\d+)", (ROOT / "scripts" / "docker-smoke").read_text())


def test_docker_smoke_without_an_engine_says_so_and_passes() -> None:
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    done = subprocess.run(
        [str(ROOT / "scripts" / "docker-smoke")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "nothing checked" in done.stdout
