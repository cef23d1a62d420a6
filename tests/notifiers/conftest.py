"""Fixtures of the notifier tests (the builders and waits are in `tests.notifiers.harness`)."""

from __future__ import annotations

import pytest

from newswatch.config import Settings

#: The webhook signing secret of the tests, in $TEST_WEBHOOK_SECRET.
SECRET = "s3cret-for-tests"


@pytest.fixture
def notify(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``settings`` with a notifier group of the test's own and quick retries; no route yet.

    The signing secret is in $TEST_WEBHOOK_SECRET.
    """
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    settings.notify.group_id = f"{settings.kafka.group_id}.notify"
    settings.notify.max_backoff = 1.0
    settings.notify.give_up_after = 60.0
    return settings
