"""The command-line contract: ``newswatch run --until-idle`` then ``newswatch alerts``."""

from __future__ import annotations

import json
import subprocess
import sys

from newswatch.config import PROJECT_ROOT, Settings


def newswatch(*args: str, settings: Settings, timeout: float = 300) -> subprocess.CompletedProcess:
    kafka = settings.kafka
    topics = [
        f"--bootstrap-servers={kafka.bootstrap_servers}",
        f"--alerts-topic={kafka.alerts_topic}",
    ]
    if args[0] == "run":
        topics += [
            f"--articles-topic={kafka.articles_topic}",
            f"--decisions-topic={kafka.decisions_topic}",
            f"--dead-letter-topic={kafka.dead_letter_topic}",
            f"--stories-topic={kafka.stories_topic}",
            f"--story-alerts-topic={kafka.story_alerts_topic}",
            f"--group-id={kafka.group_id}",
        ]
    return subprocess.run(
        [sys.executable, "-m", "newswatch.cli", *args, *topics, f"--home={settings.home}"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
    )


def test_run_until_idle_on_the_bundled_seeds_alerts_on_the_seed_article(settings):
    ran = newswatch("run", "--until-idle", settings=settings)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "alerts=1" in ran.stderr

    printed = newswatch("alerts", "--from-beginning", "--until-idle", settings=settings)
    assert printed.returncode == 0, printed.stderr[-3000:]
    alerts = [json.loads(line) for line in printed.stdout.splitlines()]
    assert len(alerts) == 1
    (alert,) = alerts
    assert alert["title"].startswith("A high-stakes phone call between Chinese President Xi")
    assert {"rhetoric", "economic", "diplomatic"} <= set(alert["signals"])
    assert alert["evidence"]


def test_a_second_run_publishes_and_alerts_nothing_new(settings):
    assert newswatch("run", "--until-idle", settings=settings).returncode == 0
    again = newswatch("run", "--until-idle", settings=settings)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "articles_decoded=0" in again.stderr
    printed = newswatch("alerts", "--from-beginning", "--until-idle", settings=settings)
    assert len(printed.stdout.splitlines()) == 1


def test_a_bad_option_is_one_clear_line_and_exit_code_2(settings):
    bad = newswatch("run", "--until-idle", "--partitions=0", settings=settings)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "newswatch: error: --partitions (env NEWSWATCH_KAFKA_PARTITIONS, config [kafka]"
        " partitions): input should be greater than or equal to 1"
    )
