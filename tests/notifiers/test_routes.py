"""A route's timing per story (group_wait, group_interval, repeat_interval) on a given clock.

`Route.offer` takes an alert at a time, `Route.due` says what is sent at a time:
the times here are plain numbers of seconds, so every rule is checked exactly.
"""

from __future__ import annotations

from newswatch.config import RouteSettings
from notifiers.command import FileSink
from notifiers.routes import Incoming, Route
from tests.notifiers.harness import story_alert

TIMING = {"group_wait": 30.0, "group_interval": 300.0, "repeat_interval": 3600.0}


def make_route(**fields) -> Route:
    settings = RouteSettings(**{**TIMING, **fields})
    return Route(settings, FileSink(settings.file), "test")


def offer(route: Route, at: float, story: str = "s", update: int = 0, **story_fields) -> bool:
    return route.offer(Incoming.of(story_alert(story, update, **story_fields)), at)


def sent(route: Route, at: float) -> list[list[int]]:
    """The updates of each notification due at ``at``."""
    batches, _ = route.due(at)
    return [batch.notification.updates for batch in batches]


def test_the_first_alert_waits_group_wait_and_follow_ups_fold_into_it():
    route = make_route()
    assert offer(route, 0.0, update=0)
    assert offer(route, 10.0, update=1, severity=3)
    assert sent(route, 29.9) == []
    assert sent(route, 30.0) == [[0, 1]]


def test_later_updates_are_sent_at_most_once_per_group_interval():
    route = make_route()
    offer(route, 0.0, update=0)
    assert sent(route, 30.0) == [[0]]
    offer(route, 40.0, update=1, severity=3)
    offer(route, 100.0, update=2, severity=4)
    assert sent(route, 329.9) == []
    assert sent(route, 330.0) == [[1, 2]]
    offer(route, 1000.0, update=3, outlets=9)  # long after: sent without delay
    assert sent(route, 1000.0) == [[3]]


def test_an_identical_state_is_not_sent_again_within_repeat_interval():
    route = make_route()
    offer(route, 0.0, update=0, severity=3)
    assert sent(route, 30.0) == [[0]]
    offer(route, 400.0, update=1, severity=3, reasons=["new headline"])
    batches, settled = route.due(400.0)
    assert batches == [] and [i.update for i in settled] == [1]
    offer(route, 3700.0, update=2, severity=3, reasons=["new headline"])
    assert sent(route, 3700.0) == [[2]]  # repeat_interval has passed


def test_a_state_that_changes_back_is_a_change():
    route = make_route()
    offer(route, 0.0, update=0, severity=3)
    assert sent(route, 30.0) == [[0]]
    offer(route, 400.0, update=1, severity=2)
    assert sent(route, 400.0) == [[1]]
    offer(route, 800.0, update=2, severity=3)
    assert sent(route, 800.0) == [[2]]


def test_duplicates_and_older_updates_are_settled_at_once():
    route = make_route()
    offer(route, 0.0, update=0)
    assert not offer(route, 1.0, update=0)  # waiting already
    assert sent(route, 30.0) == [[0]]
    offer(route, 40.0, update=2, severity=4)
    assert sent(route, 330.0) == [[2]]
    assert not offer(route, 400.0, update=1, severity=3)  # older than the last sent
    assert not offer(route, 400.0, update=2, severity=4)


def test_stories_are_timed_independently():
    route = make_route()
    offer(route, 0.0, story="a")
    offer(route, 20.0, story="b")
    assert [b.notification.story_id for b in route.due(30.0)[0]] == ["a"]
    assert [b.notification.story_id for b in route.due(50.0)[0]] == ["b"]


def test_the_filter_keeps_out_mild_stories_and_other_signals():
    route = make_route(min_severity=2, signals=["military", "grayzone"])
    assert not offer(route, 0.0, story="mild", severity=1)
    assert not offer(route, 0.0, story="trade", severity=3, signals={"economic": 2})
    assert offer(route, 0.0, story="drills", severity=2, signals={"military": 1})


def test_flush_sends_every_waiting_group_now():
    route = make_route()
    offer(route, 0.0, story="a")
    batches, _ = route.due(1.0, flush=True)
    assert [b.notification.story_id for b in batches] == ["a"]
    assert route.next_due() is None
