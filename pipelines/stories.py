"""Stories in the pipeline: the story book of `pipelines.storybook` as a Beam step.

    ClassifyArticles ─▶ AssignStories (one key, in event-time order) ─▶ RouteOutcomes

Every change of a story is written to the compacted stories topic (`Story`,
keyed by story id), and each story alert to the story-alerts topic. State lives
in the worker process (one `StoryBook` per stories topic), bounded by eviction.
The messages of an article's story changes travel in the same outbound record
as its decision, so the article's offset is committed only after they are
written; a restarted worker rebuilds its open stories and last alerts from the
two topics, and an article seen again joins nothing twice.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp
from kafka import errors as kafka_errors

from newswatch import metrics
from newswatch.config import StorySettings
from newswatch.retry import retry_kafka
from newswatch.schemas import (
    Article,
    SchemaError,
    Story,
    StoryAlert,
)
from newswatch.topics import read_topic
from pipelines.kafka_write import OutboundMessage
from pipelines.storybook import StoryBook, StoryChange, article_time

__all__ = [
    "AssignStories",
    "AssignStoriesFn",
    "AssignStoriesInOrderFn",
    "reset_books",
]

logger = logging.getLogger(__name__)


#: One book per worker process and stories topic: Beam may run several instances of
#: the DoFn (one per bundle processor); they must share the stories.
_BOOKS: dict[tuple[str, str], StoryBook] = {}
_BOOKS_LOCK = threading.Lock()


def reset_books(*_: Any) -> None:
    """Forget every worker-process story book and the articles it held: a new run, or a
    worker that got the story step (back) from the group, recovers from the topics."""
    with _BOOKS_LOCK:
        _BOOKS.clear()
        _WAITING.clear()


def _recovered_book(servers: str, kafka: Any, settings: StorySettings) -> StoryBook:
    key = (servers, kafka.stories_topic)
    with _BOOKS_LOCK:
        book = _BOOKS.get(key)
        if book is not None:
            return book
        book = StoryBook(settings)
        stories = _records(Story, _read_waiting(servers, kafka.stories_topic), kafka.stories_topic)
        alerts = _records(
            StoryAlert,
            _read_waiting(servers, kafka.story_alerts_topic),
            kafka.story_alerts_topic,
        )
        count = book.recover(stories, alerts)
        if count:
            logger.info("recovered %d open stories from %s", count, kafka.stories_topic)
        _BOOKS[key] = book
        return book


def _read_waiting(servers: str, topic: str) -> list[Any]:
    """`read_topic`, waiting out a broker outage of any length (a worker must not die of it)."""
    return retry_kafka(
        f"reading {topic}",
        lambda: read_topic(servers, topic),
        seconds=None,
        retry_on=(kafka_errors.KafkaError, TimeoutError, OSError),
    )


def _records(cls: Any, records: Iterable[Any], topic: str) -> list[Any]:
    parsed = []
    for record in records:
        if record.value is None:
            continue
        try:
            parsed.append(cls.from_bytes(record.value))
        except SchemaError as exc:
            logger.warning("%s/%d@%d skipped: %s", topic, record.partition, record.offset, exc)
    return parsed


class _Waiting:
    """Articles waiting for the watermark, earliest event time first (one per article)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, str, Any, Any]] = []
        self._held: set[str] = set()
        self.released = 0
        """Event time (micros) up to which articles were released."""

    def add(self, micros: int, ack: Any, prediction: Any) -> bool:
        """Hold an article's record; False if that record is already held (a retried bundle).

        Records, not articles: the same article sent twice is two records, and each
        needs its outcome for its offset to be committed.
        """
        key = f"{ack.topic}/{ack.partition}@{ack.start}-{ack.end}"
        if key in self._held:
            return False
        self._held.add(key)
        heapq.heappush(self._heap, (micros, key, ack, prediction))
        return True

    def release(self, limit: int) -> list[tuple[Any, Any]]:
        """Every article at or before ``limit``, in event-time order."""
        self.released = max(self.released, limit)
        out = []
        while self._heap and self._heap[0][0] <= limit:
            _micros, key, ack, prediction = heapq.heappop(self._heap)
            self._held.discard(key)
            out.append((ack, prediction))
        return out

    def latest(self) -> int | None:
        return max((item[0] for item in self._heap), default=None)


#: Articles waiting for the watermark, per stories topic (see `AssignStoriesFn`).
_WAITING: dict[tuple[str, str], _Waiting] = {}


class AssignStoriesFn(beam.DoFn):
    """(key, (ack, prediction)) → (ack, prediction, story messages), in event-time order.

    Every element carries the same key, so the runner hands them over one at a
    time (a stateful DoFn). Articles wait until the watermark passes their
    event time (an event-time timer set to the latest one held), then go into the
    worker's `StoryBook` sorted by event time: partitions read at different
    speeds (a replay, a backlog after a restart) still build stories in the
    order things happened, and a story's id comes from its earliest article.

    The waiting articles are held in the worker's memory, like the book: their
    offsets are not committed until their outcomes are written, so a crashed
    worker's successor reads them again.
    """

    NEXT = ReadModifyWriteStateSpec("next_flush", VarIntCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, servers: str, kafka: Any, settings: StorySettings) -> None:
        self._servers = servers
        self._kafka = kafka
        self._settings = settings
        self._stories = Metrics.counter(metrics.NAMESPACE, "story_updates")
        self._alerts = Metrics.counter(metrics.NAMESPACE, "story_alerts")
        self._late = Metrics.counter(metrics.NAMESPACE, "story_late_articles")

    def _state(self) -> tuple[StoryBook, _Waiting]:
        """This worker's book and held articles, recovered from the topics when it (again)
        holds the story step (`reset_books` on a hand-over drops both)."""
        book = _recovered_book(self._servers, self._kafka, self._settings)
        with _BOOKS_LOCK:
            waiting = _WAITING.setdefault((self._servers, self._kafka.stories_topic), _Waiting())
        return book, waiting

    def process(
        self,
        element: Any,
        timestamp=beam.DoFn.TimestampParam,
        next_flush=beam.DoFn.StateParam(NEXT),
        flush=beam.DoFn.TimerParam(FLUSH),
    ) -> Iterator[Any]:
        book, waiting = self._state()
        _key, (ack, prediction) = element
        micros = int(timestamp.micros)
        with book.lock:
            waiting.add(micros, ack, prediction)
            if micros < waiting.released:
                self._late.inc()
                logger.debug(
                    "article %s arrived %.1f h behind stories already built",
                    prediction.example.id,
                    (waiting.released - micros) / 3.6e9,
                )
        # The timer waits for the latest article held: when the watermark passes it,
        # everything held goes in one firing (one firing per article would cost a
        # runner round trip each when a replay's watermark jumps at the end).
        due = next_flush.read()
        if due is None or micros > due:
            next_flush.write(micros)
            flush.set(Timestamp(micros=micros))
        return iter(())

    @on_timer(FLUSH)
    def release(
        self,
        fired=beam.DoFn.TimestampParam,
        next_flush=beam.DoFn.StateParam(NEXT),
        flush=beam.DoFn.TimerParam(FLUSH),
    ) -> Iterator[Any]:
        book, waiting = self._state()
        with book.lock:
            ready = waiting.release(int(fired.micros))
            due = waiting.latest()
        if due is not None:
            next_flush.write(due)
            flush.set(Timestamp(micros=due))
        else:
            next_flush.clear()
        for ack, prediction in ready:
            with book.lock:
                changes = book.add(prediction.example, prediction.inference)
            yield ack, prediction, tuple(self._messages(changes))

    def _messages(self, changes: Iterable[StoryChange]) -> Iterator[OutboundMessage]:
        for change in changes:
            key = change.story.story_id.encode()
            self._stories.inc()
            metrics.STORIES.labels(status=change.story.status).inc()
            yield OutboundMessage(self._kafka.stories_topic, key, change.story.to_bytes())
            if change.alert is not None:
                self._alerts.inc()
                metrics.STORY_ALERTS.inc()
                yield OutboundMessage(self._kafka.story_alerts_topic, key, change.alert.to_bytes())


class AssignStoriesInOrderFn(beam.DoFn):
    """("stories", [(ack, prediction), ...]) → (ack, prediction, story messages), bounded.

    A bounded run (a replay on the DaskRunner, which has neither state nor
    timers) has all its Taiwan-related articles in one group: they go into a
    fresh `StoryBook` sorted by event time, then article id, the order in which
    `AssignStoriesFn` releases them once the watermark has passed them all.
    Nothing is recovered from Kafka: a bounded run starts with no stories.
    """

    _messages = AssignStoriesFn._messages  # the same story and story-alert records

    def __init__(self, kafka: Any, settings: StorySettings) -> None:
        self._kafka = kafka
        self._settings = settings
        self._stories = Metrics.counter(metrics.NAMESPACE, "story_updates")
        self._alerts = Metrics.counter(metrics.NAMESPACE, "story_alerts")

    def process(self, element: Any) -> Iterator[Any]:
        _key, items = element
        book = StoryBook(self._settings)
        for ack, prediction in sorted(items, key=_event_order):
            changes = book.add(prediction.example, prediction.inference)
            yield ack, prediction, tuple(self._messages(changes))


def _event_micros(article: Article) -> int:
    return int(article_time(article) * 1e6)


def _event_order(item: Any) -> tuple[int, str]:
    """(event time, article id): the order `AssignStoriesFn` releases articles in."""
    return _event_micros(item[1].example), item[1].example.id


def _at_event_time(element: Any) -> Any:
    """Back at the article's own event time (RunInference's batches carry one timestamp)."""
    _ack, prediction = element
    micros = _event_micros(prediction.example)
    return window.TimestampedValue(("stories", element), Timestamp(micros=micros))


def _is_taiwan_related(element: Any, partitions: int) -> int:
    return 0 if element[1].inference.taiwan_related else 1


class AssignStories(beam.PTransform):
    """(ack, prediction) → (ack, prediction, story messages); see `AssignStoriesFn`.

    Articles the classifier finds unrelated to Taiwan join no story and pass
    straight through with no messages. ``bounded``: the input is finite and
    the runner may lack state and timers; all Taiwan-related articles are
    grouped and assigned in event-time order (`AssignStoriesInOrderFn`).
    """

    def __init__(
        self, servers: str, kafka: Any, settings: StorySettings, *, bounded: bool = False
    ) -> None:
        super().__init__()
        self._bounded = bounded
        self._fn = (
            AssignStoriesInOrderFn(kafka, settings)
            if bounded
            else AssignStoriesFn(servers, kafka, settings)
        )

    def expand(self, predictions):
        taiwan, other = predictions | "TaiwanRelated" >> beam.Partition(_is_taiwan_related, 2)
        passed = other | "NoStory" >> beam.Map(lambda element: (*element, ()))
        if self._bounded:
            storied = (
                taiwan
                | "OneKey" >> beam.Map(lambda element: ("stories", element))
                | "AllTogether" >> beam.GroupByKey()
                | "InEventTimeOrder" >> beam.ParDo(self._fn)
            )
        else:
            storied = (
                taiwan
                # A str key: a deterministic key coder for the state and timer.
                | "AtEventTime" >> beam.Map(_at_event_time).with_output_types(tuple[str, Any])
                | "InEventTimeOrder" >> beam.ParDo(self._fn)
            )
        return (passed, storied) | "WithStories" >> beam.Flatten()
