"""``newswatch notify`` as an operator runs it: a subprocess, killed and restarted.

The routes come from a TOML config file (the secret from the environment), the
broker is the session's, and the receiver a local HTTP server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from newswatch.config import PROJECT_ROOT, Settings, load_settings
from newswatch.errors import ConfigError
from notifiers.routes import build_routes
from notifiers.webhook import sign
from tests.notifiers.conftest import SECRET
from tests.notifiers.harness import (
    committed,
    end_offset,
    publish,
    story_alert,
    wait_until_committed,
)
from tests.notifiers.servers import Answer, WebhookServer


def write_config(settings: Settings, path: Path, url: str) -> Path:
    kafka = settings.kafka
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "{kafka.bootstrap_servers}"
articles_topic = "{kafka.articles_topic}"
alerts_topic = "{kafka.alerts_topic}"
decisions_topic = "{kafka.decisions_topic}"
dead_letter_topic = "{kafka.dead_letter_topic}"
stories_topic = "{kafka.stories_topic}"
story_alerts_topic = "{kafka.story_alerts_topic}"

[notify]
group_id = "{settings.notify.group_id}"

[[notify.routes]]
name = "desk"
group_wait = 0
webhook = {{ url = "{url}", secret_env = "TEST_WEBHOOK_SECRET" }}
""",
        encoding="utf-8",
    )
    return path


def start_notify(config: Path, home: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "newswatch.cli",
                "notify",
                f"--config={config}",
                f"--home={home}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env={**os.environ, "TEST_WEBHOOK_SECRET": SECRET},
            start_new_session=True,
        )


def test_a_kill_in_the_middle_of_a_delivery_delivers_again_after_a_restart(notify, tmp_path):
    alert = story_alert(severity=3)
    publish(notify, alert)
    held = threading.Event()
    log = tmp_path / "notify.log"
    with WebhookServer(Answer(200, hold=held), Answer(200)) as server:
        config = write_config(notify, tmp_path / "newswatch.toml", server.url)
        first = start_notify(config, tmp_path, log)
        try:
            (during,) = server.wait_for(1, timeout=60)  # the receiver holds it open
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
        finally:
            held.set()
            if first.poll() is None:
                first.kill()
        assert committed(notify) < end_offset(notify)  # nothing was acknowledged

        second = start_notify(config, tmp_path, log)
        try:
            _, after = server.wait_for(2, timeout=60)
            wait_until_committed(notify, timeout=60)
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0
        finally:
            if second.poll() is None:
                second.kill()

    assert after.headers["idempotency-key"] == during.headers["idempotency-key"] == alert.alert_id
    assert after.body == during.body
    assert after.headers["x-newswatch-signature"] == sign(SECRET, after.body)
    assert json.loads(after.body)["severity"] == 3
    output = log.read_text()
    assert "newswatch: notify: 1 delivered, 0 dead letters" in output
    assert "Traceback" not in output


def test_a_route_without_its_secret_fails_before_anything_runs(notify, tmp_path):
    config = write_config(notify, tmp_path / "newswatch.toml", "https://hooks.example.org/x")
    settings = load_settings(argparse.Namespace(config=config), env={})
    with pytest.raises(ConfigError) as refused:
        build_routes(settings, env={})
    assert str(refused.value) == (
        "notify route desk: environment variable TEST_WEBHOOK_SECRET is not set or empty"
    )


def test_a_secret_in_the_config_file_is_refused(tmp_path):
    config = tmp_path / "newswatch.toml"
    config.write_text(
        '[[notify.routes]]\nwebhook = { url = "https://hooks.example.org/x", secret = "oops" }\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="unknown option 'secret'") as refused:
        load_settings(argparse.Namespace(config=config), env={})
    assert "oops" not in str(refused.value)


def test_routes_and_their_sinks_load_from_the_config_file(notify, tmp_path):
    config = write_config(notify, tmp_path / "newswatch.toml", "https://hooks.example.org/x")
    settings = load_settings(argparse.Namespace(config=config), env={})
    (desk,) = settings.notify.routes
    assert desk.name == "desk"
    assert desk.group_wait == 0
    assert desk.group_interval == 300  # the default
    assert desk.webhook.url == "https://hooks.example.org/x"
    assert desk.webhook.secret_env == "TEST_WEBHOOK_SECRET"


def test_the_documented_example_configures_a_route_of_every_kind(tmp_path):
    page = (PROJECT_ROOT / "docs" / "notifications.md").read_text(encoding="utf-8")
    section = page[page.index("# Notifications") :]
    start = section.index("```toml\n") + len("```toml\n")
    example = section[start : section.index("```", start)]
    password = tmp_path / "smtp-password"
    password.write_text("hunter2\n", encoding="utf-8")
    config = tmp_path / "newswatch.toml"
    config.write_text(example.replace("/etc/newswatch/smtp-password", str(password)))
    settings = load_settings(argparse.Namespace(config=config), env={})
    routes = build_routes(settings, env={"OPS_WEBHOOK_SECRET": "s"})
    assert [(r.name, r.sink.kind) for r in routes] == [
        ("ops", "webhook"),
        ("chat", "webhook"),
        ("desk", "email"),
        ("pager", "command"),
        ("archive", "file"),
    ]
    assert routes[0].settings.signals == ["military", "grayzone"]
    assert routes[2].settings.email.to == ["desk@example.org", "duty@example.org"]
    shown = " ".join(f"{route} {route.sink!r}" for route in routes)
    assert "hunter2" not in shown and "XXXX" not in shown  # no secret, no webhook path
