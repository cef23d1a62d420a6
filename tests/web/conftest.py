"""Helpers of the web tests: ``newswatch serve`` as a subprocess, records to publish.

``serve_page`` starts the real command on the test's topics (the session broker
unless told otherwise) on a free loopback port, waits until ``/healthz`` answers,
and stops it with SIGTERM after the test (killing it if it hangs). Records are
the real schema classes, published with the project's producer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from newswatch.config import PROJECT_ROOT, Settings
from newswatch.schemas import (
    Alert,
    DeadLetter,
    Decision,
    Story,
    StoryArticle,
    StoryEvidence,
    alert_id,
    article_id,
    utc_now,
)
from newswatch.topics import make_producer
from tests.commands import newswatch_command
from tests.conftest import free_port


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def fetch(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0):
    """(status, headers, body) of a GET; HTTP errors are answers too, not exceptions.

    The headers are an `email.message.Message`: case-insensitive.
    """
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any NEWSWATCH_SERVE_* credential, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_SERVE_")}
    env.update(extra)
    return env


@dataclass
class Page:
    """A running ``newswatch serve``."""

    process: subprocess.Popen
    url: str
    log: Path

    def get(self, path: str, headers: dict[str, str] | None = None):
        return fetch(self.url + path, headers)

    def text(self, path: str) -> str:
        status, _, body = self.get(path)
        assert status == 200, f"GET {path}: {status} {body[:300]!r}"
        return body.decode("utf-8")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_serve(
    settings: Settings,
    log: Path,
    *,
    args: list[str] = (),
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> Page:
    """``newswatch serve`` on a free port; returns once /healthz answers."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            newswatch_command(
                settings, "serve", f"--host={host}", f"--port={port}", "--refresh=1", *args
            ),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env=clean_env() if env is None else env,
            start_new_session=True,
        )
    page = Page(process, f"http://127.0.0.1:{port}", log)

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"newswatch serve exited ({process.returncode}):\n{page.output()}")
        try:
            return page.get("/healthz")[0] == 200
        except OSError:
            return False

    wait_until(healthy, 60, "newswatch serve to answer /healthz")
    return page


def stop(process: subprocess.Popen) -> int:
    """SIGTERM, then SIGKILL after 20 s; returns the exit code."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return process.returncode


@pytest.fixture
def serve_page(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Page]]:
    """Start ``newswatch serve`` on the test's topics (several allowed); all stopped after."""
    pages: list[Page] = []

    def start(**kwargs) -> Page:
        target = kwargs.pop("settings", settings)
        page = start_serve(target, tmp_path / f"serve-{len(pages)}.log", **kwargs)
        pages.append(page)
        return page

    yield start
    for page in pages:
        stop(page.process)


# -- records --------------------------------------------------------------------------


def publish(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes | None]]):
    """Publish (key, value) records and wait for the broker's acknowledgement."""
    producer = make_producer(settings.bootstrap_servers)
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)


def make_alert(title: str, evidence: str, *, source: str = "Test Wire", **overrides) -> Alert:
    """An article alert with one evidence sentence."""
    article = overrides.pop("article_id", None) or article_id(f"{title}-{uuid.uuid4()}")
    now = utc_now()
    fields = {
        "alert_id": alert_id(article, "test"),
        "article_id": article,
        "url": f"https://news.example/{article}",
        "title": title,
        "source": source,
        "published": now,
        "escalation_score": 0.91,
        "signals": ["military"],
        "signal_scores": {"military": 0.9, "rhetoric": 0.2},
        "severity": 3,
        "evidence": [evidence],
        "model": "test",
        "model_version": "test",
        "ingested_at": now,
        "alerted_at": now,
    }
    fields.update(overrides)
    return Alert(**fields)


def make_story(headline: str, evidence: str, *, revision: int = 0, **overrides) -> Story:
    """A story of two outlets with one evidence sentence."""
    story_id = overrides.pop("story_id", None) or uuid.uuid4().hex[:16]
    now = utc_now()
    members = [
        StoryArticle(
            article_id=f"{story_id}-{i}",
            url=f"https://news.example/{story_id}/{i}",
            title=f"{headline} ({source})",
            source=source,
            published=now,
            escalation=True,
            escalation_score=0.8 + i / 10,
            signals=["military"],
            severity=3,
        )
        for i, source in enumerate(("Test Wire", "Other Post"))
    ]
    fields = {
        "story_id": story_id,
        "headline": headline,
        "first_seen": now,
        "last_seen": now,
        "articles": members,
        "outlets": 2,
        "escalation": True,
        "max_score": 0.9,
        "signals": {"military": 2},
        "severity": 3,
        "evidence": [
            StoryEvidence(
                sentence=evidence,
                article_id=members[1].article_id,
                url=members[1].url,
                source=members[1].source,
                score=0.9,
            )
        ],
        "status": "escalated",
        "status_changed_at": now,
        "updated_at": now,
        "revision": revision,
    }
    fields.update(overrides)
    return Story(**fields)


def make_decision(article: str, *, alert: bool, signals: list[str] = ()) -> Decision:
    now = utc_now()
    return Decision(
        article_id=article,
        alert=alert,
        escalation_score=0.9 if alert else 0.1,
        taiwan_related=True,
        signals=list(signals),
        severity=3 if alert else 0,
        model_version="test",
        published=now,
        source="Test Wire",
        decided_at=now,
    )


def publish_stories(settings: Settings, stories: list[Story]) -> None:
    publish(
        settings,
        settings.kafka.stories_topic,
        [(s.story_id.encode(), s.to_bytes()) for s in stories],
    )


def publish_alerts(settings: Settings, alerts: list[Alert]) -> None:
    publish(
        settings, settings.kafka.alerts_topic, [(a.alert_id.encode(), a.to_bytes()) for a in alerts]
    )


def publish_dead_letters(settings: Settings, letters: list[DeadLetter]) -> None:
    publish(
        settings,
        settings.kafka.dead_letter_topic,
        [(d.origin.encode(), d.to_bytes()) for d in letters],
    )


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a /metrics page: (sample name, sorted labels) → value."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def json_of(body: bytes) -> dict:
    return json.loads(body.decode("utf-8"))
