"""What the page holds: latest story per key, bounded memory, the index, evidence in context."""

from __future__ import annotations

from datetime import UTC, datetime

from newswatch.schemas import Decision
from newswatch.topics import make_producer
from tests.web.conftest import make_alert, make_story
from web.articles import in_context, partition_for
from web.live import HourlyIndex, LiveState


def apply_story(state: LiveState, story, where: str = "stories/0@0") -> None:
    state.apply("story", story.story_id.encode(), story.to_bytes(), where)


def test_a_story_shows_its_latest_revision_and_keeps_the_ones_seen():
    state = LiveState()
    first = make_story("Drills", "Ships sailed.", revision=0)
    grown = make_story("Drills widen", "More ships.", story_id=first.story_id, revision=2)
    late = make_story("Drills", "Ships sailed.", story_id=first.story_id, revision=1)

    for story in (first, grown, late):
        apply_story(state, story)

    entry = state.stories[first.story_id]
    assert entry.story.headline == "Drills widen"  # a late revision 1 does not win
    assert [r.revision for r in entry.history] == [0, 1, 2]


def test_a_tombstone_removes_the_story():
    state = LiveState()
    story = make_story("Drills", "Ships sailed.")
    apply_story(state, story)

    state.apply("story", story.story_id.encode(), None, "stories/0@1")

    assert state.stories == {}
    assert state.changes_since(0)[-1].kind == "remove"


def test_memory_is_bounded_dropping_the_least_recently_updated():
    state = LiveState(max_stories=3, max_alerts=2)
    stories = [make_story(f"S{i}", "e.") for i in range(4)]
    for story in stories[:3]:
        apply_story(state, story)
    apply_story(state, make_story("S0 again", "e.", story_id=stories[0].story_id, revision=1))
    apply_story(state, stories[3])
    for i in range(3):
        alert = make_alert(f"A{i}", "e.")
        state.apply("alert", alert.alert_id.encode(), alert.to_bytes(), f"alerts/0@{i}")

    assert set(state.stories) == {stories[0].story_id, stories[2].story_id, stories[3].story_id}
    assert [a.title for a in state.alert_list()] == ["A2", "A1"]


def test_an_alert_seen_twice_is_one_alert():
    state = LiveState()
    alert = make_alert("Ships near Kinmen", "Ships entered.")

    for offset in range(2):
        state.apply("alert", alert.alert_id.encode(), alert.to_bytes(), f"alerts/0@{offset}")

    assert len(state.alerts) == 1
    assert [c.kind for c in state.changes_since(0)] == ["alert", "summary"]


def test_unreadable_records_are_counted_not_shown():
    state = LiveState()

    state.apply("story", b"k", b"\xff\xfe", "stories/0@3")
    state.apply("alert", b"k", b'{"alert_id": "x"}', "alerts/0@4")
    state.apply("dead_letter", b"k", None, "dead/0@5")

    assert state.unreadable == {"story": 1, "alert": 1, "dead_letter": 1}
    assert state.stories == {} and state.alerts == {} and not state.dead_letters


def test_a_page_that_fell_behind_or_predates_a_restart_is_told_to_reload():
    state = LiveState()
    for i in range(6000):  # more changes than are remembered
        alert = make_alert(f"A{i}", "e.")
        state.apply("alert", alert.alert_id.encode(), alert.to_bytes(), f"alerts/0@{i}")

    assert state.changes_since(5) is None
    assert state.changes_since(state.seq + 10) is None
    assert state.changes_since(state.seq) == []


def decision(key: str, published: str, alert: bool, signals=()) -> Decision:
    return Decision(
        article_id=key,
        alert=alert,
        escalation_score=0.8 if alert else 0.2,
        taiwan_related=True,
        signals=list(signals),
        severity=2 if alert else 0,
        model_version="t",
        published=published,
        source="s",
        decided_at=published,
    )


def test_the_index_counts_each_article_once_in_the_hour_of_its_event_time():
    now = datetime(2024, 5, 2, 12, 30, tzinfo=UTC).timestamp()
    index = HourlyIndex(hours=24)
    index.add(decision("a", "2024-05-02T10:05:00Z", True, ["military"]), now)
    index.add(decision("b", "2024-05-02T10:55:00Z", False), now)
    index.add(decision("a", "2024-05-02T10:05:00Z", True, ["military"]), now)  # again
    index.add(decision("c", "2024-05-02T11:00:00Z", True, ["grayzone"]), now)
    assert not index.add(decision("old", "2024-04-01T00:00:00Z", True), now)  # out of span

    buckets = {
        datetime.fromtimestamp(b.start, UTC).hour: b
        for b in index.buckets("hour", now)
        if b.articles
    }

    assert buckets[10].articles == 2 and buckets[10].alerts == 1
    assert abs(buckets[10].score_mean - 0.5) < 1e-9
    assert buckets[10].signals["military"] == 1
    assert buckets[11].articles == 1 and buckets[11].signals["grayzone"] == 1
    (day,) = [b for b in index.buckets("day", now) if b.articles]
    assert day.articles == 3 and day.alerts == 2


def test_evidence_is_marked_inside_a_passage_of_the_text():
    text = "First sentence here. The PLA   launched drills near Matsu. The last one is cut off."

    (passage,) = in_context(text, ["The PLA launched drills near Matsu."], radius=8)

    assert [s for s, marked in passage.segments if marked] == [
        "The PLA   launched drills near Matsu."
    ]
    assert passage.cut_before and passage.cut_after
    assert in_context(text, ["Not in the text."]) == []


def test_an_article_is_looked_for_in_the_partition_its_producer_wrote_it_to(settings):
    producer = make_producer(settings.bootstrap_servers)
    try:
        keys = [f"article-{i}" for i in range(30)]
        sent = [
            producer.send(settings.kafka.articles_topic, key=k.encode(), value=b"{}") for k in keys
        ]
        producer.flush()
        written = [future.get(timeout=30).partition for future in sent]
    finally:
        producer.close(timeout=10)

    assert [partition_for(k, settings.kafka.partitions) for k in keys] == written
    assert set(written) == {0, 1, 2}
