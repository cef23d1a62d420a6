"""Stories end to end, on the real broker, the Prism runner and the real model.

Real news in (../shared/data/labelled/dev.jsonl with its story labels): the coverage
of two escalation episodes from several outlets, the China "Joint Sword" drills
around Taiwan (Apr 2023) and the US sale of Volcano anti-tank mine systems to
Taiwan (Dec 2022), mixed with unrelated news of the same months.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

import pytest

from connectors.publish import Publisher
from newswatch.cli import main
from newswatch.config import Settings, replace
from newswatch.schemas import Story, StoryAlert
from pipelines.classify import run
from pipelines.replay import ReplayOptions, replay
from tests.conftest import isolated_settings
from tests.episodes import EPISODES, as_article, episode_rows
from tests.processes import start_pipeline, wait_for
from tests.streams import articles_committed, read_topic, settled, totals


def final_stories(settings: Settings) -> dict[str, Story]:
    latest: dict[str, Story] = {}
    for record in read_topic(settings, settings.kafka.stories_topic):
        story = Story.from_bytes(record.value)
        if story.story_id not in latest or story.revision >= latest[story.story_id].revision:
            latest[story.story_id] = story
    return latest


def story_alerts(settings: Settings) -> list[StoryAlert]:
    records = read_topic(settings, settings.kafka.story_alerts_topic)
    return list(
        {a.alert_id: a for a in map(StoryAlert.from_bytes, (r.value for r in records))}.values()
    )


def assert_one_escalated_story_per_episode(stories: list[Story], rows: list[dict]) -> None:
    episode_of = {r["url"]: r.get("story") for r in rows}
    escalated = [s for s in stories if s.escalation]
    assert len(escalated) == 2, [s.headline for s in escalated]
    members = {s.story_id: {episode_of[a.url] for a in s.articles} for s in escalated}
    assert sorted(e for found in members.values() for e in found) == sorted(EPISODES), members
    # No member of an episode that the model found Taiwan-related sits in another story.
    in_story = {a.url: s.story_id for s in stories for a in s.articles}
    for story in escalated:
        (name,) = members[story.story_id]
        strays = {in_story[i] for i, e in episode_of.items() if e == name and i in in_story}
        assert strays == {story.story_id}, name


def test_a_replay_groups_two_episodes_into_two_escalated_stories_with_one_alert_each(
    kafka_broker, tmp_path
):
    rows = episode_rows()
    data = tmp_path / "episodes.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    settings = Settings(home=tmp_path)
    settings.broker = replace(kafka_broker.settings)
    settings.kafka.bootstrap_servers = kafka_broker.bootstrap_servers
    report = tmp_path / "report"

    result = replay(settings, ReplayOptions(sources=(data,), labels=data, report_dir=report))

    backtest = result.backtest
    assert_one_escalated_story_per_episode(backtest.stories, rows)
    firsts = Counter(a.story_id for a in backtest.story_alerts if a.update == 0)
    assert sorted(firsts.values()) == [1, 1]
    assert set(firsts) == {s.story_id for s in backtest.stories if s.escalation}
    for alert in backtest.story_alerts:
        assert alert.reasons, "every alert says why"
        if alert.update:
            assert alert.reasons != ["escalated"]
    # Fewer story alerts than article alerts: one per story, then material changes only.
    assert len(backtest.story_alerts) < len(backtest.alerts)

    # The files our checks read.
    lines = (report / "stories.jsonl").read_text(encoding="utf-8").splitlines()
    written = [json.loads(line) for line in lines]
    assert {s["story_id"] for s in written} == {s.story_id for s in backtest.stories}
    for story in written:
        for member in story["articles"]:
            assert {"url", "article_id", "title", "source", "published"} <= set(member)
    alerts = [json.loads(x) for x in (report / "alerts.jsonl").read_text("utf-8").splitlines()]
    assert {a["article_id"] for a in alerts} == {r.alert.article_id for r in backtest.alerts}
    for alert in alerts:
        assert {"article_id", "url", "title", "escalation_score", "signals"} <= set(alert)

    scores = json.loads((report / "summary.json").read_text("utf-8"))["story_scores"]
    assert scores["rows"] == sum(1 for r in rows if r.get("story"))
    pipeline = scores["scores"]["pipeline"]["f1"]
    assert pipeline > scores["scores"]["one per article"]["f1"]
    assert pipeline >= max(v["f1"] for v in scores["scores"].values())
    assert "Story timeline" in (report / "report.html").read_text("utf-8")


@pytest.fixture
def single_run_stories(kafka_broker, tmp_path_factory) -> dict[str, Story]:
    """The stories of one uninterrupted run over the episode rows, on topics of their own."""
    settings = isolated_settings(
        kafka_broker, tmp_path_factory.mktemp("once"), "stories-once", partitions=1
    )
    with Publisher(settings) as publisher:
        publisher.publish([as_article(r) for r in episode_rows()])
    run(settings, until_idle=True, install_signal_handlers=False)
    return final_stories(settings)


def test_a_worker_killed_mid_stream_recovers_its_stories_without_splitting_them(
    kafka_broker, tmp_path, single_run_stories
):
    # One partition, as a replay reads: the story step then meets the articles in the
    # same order in both runs (see docs/stories.md on backlogs over several partitions).
    settings = isolated_settings(kafka_broker, tmp_path, "stories-killed", partitions=1)
    rows = episode_rows()
    articles = [as_article(r) for r in rows]
    half = len(articles) // 2
    with Publisher(settings) as publisher:
        publisher.publish(articles[:half])
    worker = start_pipeline(settings, tmp_path / "first.log")
    try:
        wait_for(
            lambda: articles_committed(settings) == half and settled(settings),
            240,
            "the first half",
            worker,
        )
        with Publisher(settings) as publisher:
            publisher.publish(articles[half:])
        wait_for(lambda: totals(settings)[0] > 2 * half, 240, "work on the second half", worker)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
    assert not settled(settings), "the kill came after everything was done"

    run(settings, until_idle=True, install_signal_handlers=False)

    stories = final_stories(settings)
    assert_one_escalated_story_per_episode(list(stories.values()), rows)
    assert {k: [a.article_id for a in s.articles] for k, s in stories.items()} == {
        k: [a.article_id for a in s.articles] for k, s in single_run_stories.items()
    }
    firsts = Counter(a.story_id for a in story_alerts(settings) if a.update == 0)
    assert sorted(firsts.values()) == [1, 1]


def test_stories_command_prints_each_change_as_a_line(settings, capsys):
    rows = [r for r in episode_rows() if r.get("story") == EPISODES[0]][:3]
    with Publisher(settings) as publisher:
        publisher.publish([as_article(r) for r in rows])
    run(settings, until_idle=True, install_signal_handlers=False)
    capsys.readouterr()
    flags = [
        f"--bootstrap-servers={settings.kafka.bootstrap_servers}",
        f"--stories-topic={settings.kafka.stories_topic}",
        f"--home={settings.home}",
    ]
    assert main(["stories", "--from-beginning", "--until-idle", *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(read_topic(settings, settings.kafka.stories_topic))
    assert all(" outlets | signals " in line for line in lines)
    assert main(["stories", "--from-beginning", "--until-idle", "--json", *flags]) == 0
    records = [Story.from_dict(json.loads(x)) for x in capsys.readouterr().out.splitlines()]
    assert {a.article_id for s in records for a in s.articles} <= {r["id"] for r in rows}
