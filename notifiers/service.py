"""The notifier: alerts topics → routes → sinks, offsets committed only after delivery.

    consumer (group ``notify.group_id``) → `Incoming` → each route's groups (timing)
        → due batches → one delivery thread per route (retries)
        → delivered, or a dead letter (stage ``notify``) → offsets committed

It follows the story-alerts topic (and, with ``follow = ["articles"]``, the
article alerts topic) in a Kafka consumer group. A record's offset is committed
only once every route has settled it: sent, dead-lettered (and that dead letter
acknowledged), filtered out or suppressed. Alerts waiting in a group, being
retried, or in flight when the process dies are therefore read again at the next
start and delivered then, with the same idempotency key; none is lost.

`NotifierService.run` stops when ``stop`` is set (in-flight attempts finish,
waits are cut short, whatever is unsettled stays uncommitted for the next start),
or, once ``finish`` is set, when it has read up to the end offsets of that
moment and delivered everything (groups are then sent at once: nothing more
will fold into them). ``newswatch notify`` runs it; so does ``newswatch run``
when routes are configured.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, OffsetAndMetadata, TopicPartition
from kafka import errors as kafka_errors

from newswatch.config import Settings
from newswatch.errors import ConfigError
from newswatch.schemas import Alert, DeadLetter, SchemaError, StoryAlert
from newswatch.topics import make_consumer, make_producer
from notifiers.retry import Outcome, deliver
from notifiers.routes import Batch, Incoming, Route, build_routes

__all__ = ["NotifierService", "NotifyReport"]

logger = logging.getLogger(__name__)

#: Unsettled records above which the consumer pauses reading (a sink is stuck).
MAX_OPEN_RECORDS = 10_000

#: Consumer group session timeout: how long a dead notifier keeps its partitions.
SESSION_TIMEOUT_MS = 10_000


@dataclass
class NotifyReport:
    """What a notifier run did."""

    delivered: int = 0
    """Notifications delivered."""
    dead_letters: int = 0
    """Notifications (and unreadable records) sent to the dead-letter topic."""
    suppressed: int = 0
    """Alerts not sent because their story state was sent within repeat_interval."""
    left: int = 0
    """Alerts still unsettled at the end: read again at the next start."""
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"notify: {self.delivered} delivered, {self.dead_letters} dead letters, "
            f"{self.suppressed} suppressed, {self.left} left for the next start"
        )


@dataclass(eq=False)
class _Record:
    """A consumed record until every route has settled it."""

    tp: TopicPartition
    offset: int
    remaining: int
    stale: bool = False
    """Its partition was taken away: its settlement no longer counts."""

    @property
    def origin(self) -> str:
        return f"{self.tp.topic}/{self.tp.partition}@{self.offset}"


@dataclass
class _Ledger:
    """Per partition: offsets read and not yet settled, and what may be committed."""

    open: dict[TopicPartition, set[int]] = field(default_factory=dict)
    next: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)

    def read(self, tp: TopicPartition, offset: int) -> None:
        self.open.setdefault(tp, set()).add(offset)
        self.next[tp] = offset + 1

    def settle(self, tp: TopicPartition, offset: int) -> None:
        self.open.get(tp, set()).discard(offset)

    def committable(self) -> dict[TopicPartition, int]:
        """Partitions whose committable offset moved past the last commit."""
        moved = {}
        for tp, next_offset in self.next.items():
            offset = min(self.open[tp]) if self.open.get(tp) else next_offset
            if offset > self.committed.get(tp, -1):
                moved[tp] = offset
        return moved

    def forget(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self.open.pop(tp, None)
            self.next.pop(tp, None)
            self.committed.pop(tp, None)

    def size(self) -> int:
        return sum(len(offsets) for offsets in self.open.values())


class _Worker(threading.Thread):
    """Delivers one route's batches in order, with retries."""

    def __init__(self, service: NotifierService, route: Route, stop: threading.Event) -> None:
        super().__init__(name=f"notify-{route.name}", daemon=True)
        self.service = service
        self.route = route
        self.stop = stop
        self.queue: queue.Queue[Batch | None] = queue.Queue()
        self.busy = 0
        """Batches handed to this worker and not yet reported back."""

    def run(self) -> None:
        settings = self.service.settings.notify
        while (batch := self.queue.get()) is not None:
            if self.stop.is_set():
                outcome = Outcome(False, abandoned=True)
            else:
                try:
                    outcome = deliver(
                        self.route.sink,
                        batch.notification,
                        give_up_after=settings.give_up_after,
                        max_backoff=settings.max_backoff,
                        stop=self.stop,
                        what=_describe(batch),
                    )
                except Exception as exc:  # a sink's bug must not stop every other delivery
                    logger.exception("%s: %s could not be sent", self.route, _describe(batch))
                    outcome = Outcome(False, error=type(exc).__name__, reason=str(exc))
            self.service.results.put((batch, outcome))


def _describe(batch: Batch) -> str:
    n = batch.notification
    if n.kind == "article":
        return f"article alert {n.alert_id}"
    updates = ", ".join(str(u) for u in n.updates)
    return f"story {n.story_id} update{'s' if len(n.updates) > 1 else ''} {updates} ({n.alert_id})"


class NotifierService:
    """Consumes alerts and delivers them on every configured route."""

    def __init__(
        self,
        settings: Settings,
        routes: list[Route] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.routes = build_routes(settings) if routes is None else routes
        if not self.routes:
            raise ConfigError(
                "no notification routes: add [[notify.routes]] to the config file, or pass "
                "--notify-webhook URL"
            )
        kafka = settings.kafka
        self.topics = {"stories": kafka.story_alerts_topic, "articles": kafka.alerts_topic}
        self.topics = {k: v for k, v in self.topics.items() if k in settings.notify.follow}
        self.clock = clock
        self.results: queue.Queue[tuple[Batch, Outcome]] = queue.Queue()
        self.report = NotifyReport()
        self._ledger = _Ledger()
        self._records: dict[tuple[TopicPartition, int], _Record] = {}
        self._dead: list[tuple[DeadLetter, list[_Record], Any]] = []
        self._producer: Any = None
        self._paused = False
        self._workers: dict[str, _Worker] = {}
        self._commit_warned = float("-inf")

    # -- the loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event, finish: threading.Event | None = None) -> NotifyReport:
        """Deliver until ``stop`` is set, or until the end once ``finish`` is set."""
        finish = finish or threading.Event()
        started = self.clock()
        consumer = make_consumer(
            self.settings.bootstrap_servers,
            group_id=self.settings.notify.group_id,
            client_id="newswatch-notifier",
            # A notifier that died holds its partitions until its session expires: at
            # most 10 s (not the client's default 45 s) before a restart delivers again.
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=SESSION_TIMEOUT_MS // 3,
            # A group joined before the topics' metadata arrived is assigned nothing until
            # the metadata is refreshed: every 5 s here, not every 5 min.
            metadata_max_age_ms=5_000,
        )
        consumer.subscribe(list(self.topics.values()), listener=_Listener(self, consumer))
        workers = self._workers = {route.name: _Worker(self, route, stop) for route in self.routes}
        for worker in workers.values():
            worker.start()
        for route in self.routes:
            logger.info("notify %s from %s", route, ", ".join(self.topics.values()))
        end: dict[TopicPartition, int] | None = None
        try:
            while not stop.is_set():
                self._poll(consumer, self._poll_timeout())
                at_end = False
                if finish.is_set():
                    if end is None:
                        end = self._end_offsets(consumer)
                    at_end = self._read_to(consumer, end)
                self._dispatch(workers, flush=at_end)
                self._collect(block=False)
                self._dead_letters()
                self._commit(consumer)
                self._backpressure(consumer)
                if at_end and self._idle(workers):
                    break
        finally:
            for worker in workers.values():
                worker.queue.put(None)
            for worker in workers.values():
                worker.join(timeout=_attempt_timeout(worker.route) + 5.0)
            self._collect(block=False)
            self._dead_letters(wait=True)
            self._commit(consumer)
            self.report.left = self._ledger.size()  # before close() revokes the partitions
            consumer.close(autocommit=False)
            if self._producer is not None:
                self._producer.close(timeout=10)
            self.report.seconds = self.clock() - started
        logger.info("%s", self.report.summary())
        return self.report

    def _poll_timeout(self) -> float:
        due = [d for d in (r.next_due() for r in self.routes) if d is not None]
        if not due:
            return 0.5
        return min(0.5, max(0.01, min(due) - self.clock()))

    def _poll(self, consumer: Any, timeout: float) -> None:
        batch = consumer.poll(timeout_ms=int(timeout * 1000))
        now = self.clock()
        for tp, records in batch.items():
            for record in records:
                self._take(tp, record, now)

    def _take(self, tp: TopicPartition, record: Any, now: float) -> None:
        self._ledger.read(tp, record.offset)
        kept = _Record(tp, record.offset, remaining=len(self.routes))
        self._records[(tp, record.offset)] = kept
        try:
            if tp.topic == self.topics.get("stories"):
                alert: StoryAlert | Alert = StoryAlert.from_bytes(record.value)
            else:
                alert = Alert.from_bytes(record.value)
            item = Incoming.of(alert, kept)
        except SchemaError as exc:
            logger.warning("unreadable alert at %s: %s (dead letter)", kept.origin, exc)
            key = record.key.decode("utf-8", "replace") if record.key else None
            letter = DeadLetter.of("notify", exc, kept.origin, record.value, key)
            kept.remaining = 1
            self._dead_letter(letter, [kept])
            return
        for route in self.routes:
            if not route.offer(item, now):
                self._settle([kept])

    def _dispatch(self, workers: dict[str, _Worker], flush: bool) -> None:
        now = self.clock()
        for route in self.routes:
            batches, suppressed = route.due(now, flush=flush)
            if suppressed:
                self.report.suppressed += len(suppressed)
                self._settle([i.ref for i in suppressed])
            for batch in batches:
                workers[route.name].busy += 1
                workers[route.name].queue.put(batch)

    def _collect(self, block: bool) -> None:
        while True:
            try:
                batch, outcome = self.results.get(block=block, timeout=0.1 if block else None)
            except queue.Empty:
                return
            self._workers[batch.route.name].busy -= 1
            refs = [i.ref for i in batch.items]
            what = _describe(batch)
            if outcome.delivered:
                self.report.delivered += 1
                logger.info("%s: delivered %s (attempt %d)", batch.route, what, outcome.attempts)
                self._settle(refs)
            elif outcome.abandoned:
                logger.info("%s: %s left for the next start", batch.route, what)
            else:
                logger.error("%s: %s failed: %s (dead letter)", batch.route, what, outcome.reason)
                letter = DeadLetter.of(
                    "notify",
                    f"{batch.route}: {outcome.reason}",
                    refs[-1].origin,
                    batch.notification.body,
                    batch.notification.alert_id,
                )
                self._dead_letter(dataclasses.replace(letter, error=outcome.error), refs)

    def _settle(self, refs: list[_Record]) -> None:
        for record in refs:
            record.remaining -= 1
            if record.remaining <= 0 and not record.stale:
                self._ledger.settle(record.tp, record.offset)
                self._records.pop((record.tp, record.offset), None)

    # -- dead letters ----------------------------------------------------------------

    def _dead_letter(self, letter: DeadLetter, refs: list[_Record]) -> None:
        self._dead.append((letter, refs, None))

    def _dead_letters(self, wait: bool = False) -> None:
        """Send dead letters; settle their records once the broker acknowledged them."""
        if not self._dead:
            return
        if self._producer is None:
            self._producer = make_producer(
                self.settings.bootstrap_servers, client_id="newswatch-notifier"
            )
        topic = self.settings.kafka.dead_letter_topic
        sent = []
        for letter, refs, future in self._dead:
            if future is None:
                key = letter.key.encode("utf-8") if letter.key else None
                future = self._producer.send(topic, key=key, value=letter.to_bytes())
            sent.append((letter, refs, future))
        if wait:
            self._producer.flush(timeout=10)
        self._dead = []
        for letter, refs, future in sent:
            if not future.is_done:
                self._dead.append((letter, refs, future))
            elif future.failed():
                logger.warning(
                    "dead letter for %s not written (%s): retrying", letter.origin, future.exception
                )
                self._dead.append((letter, refs, None))
            else:
                self.report.dead_letters += 1
                self._settle(refs)

    # -- offsets ---------------------------------------------------------------------

    def _commit(self, consumer: Any) -> None:
        moved = {
            tp: o for tp, o in self._ledger.committable().items() if tp in consumer.assignment()
        }
        if not moved:
            return
        try:
            consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in moved.items()})
        except kafka_errors.KafkaError as exc:
            # Retried on every loop: warn once per half minute, not twice a second.
            now = self.clock()
            level = logging.WARNING if now - self._commit_warned > 30 else logging.DEBUG
            self._commit_warned = now if level == logging.WARNING else self._commit_warned
            logger.log(level, "offset commit of %s failed (%s): retrying", _offsets(moved), exc)
            return
        self._ledger.committed.update(moved)
        logger.debug("committed %s", _offsets(moved))

    def _backpressure(self, consumer: Any) -> None:
        size = self._ledger.size()
        if not self._paused and size > MAX_OPEN_RECORDS:
            logger.warning("%d alerts await delivery: reading paused", size)
            consumer.pause(*consumer.assignment())
            self._paused = True
        elif self._paused and size < MAX_OPEN_RECORDS // 2:
            consumer.resume(*consumer.assignment())
            self._paused = False

    def _end_offsets(self, consumer: Any) -> dict[TopicPartition, int]:
        tps = [
            TopicPartition(topic, p)
            for topic in self.topics.values()
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        return consumer.end_offsets(tps)

    def _read_to(self, consumer: Any, end: dict[TopicPartition, int]) -> bool:
        """Whether every partition assigned here has been read up to ``end``."""
        assigned = consumer.assignment()
        if not assigned:
            return False
        return all(consumer.position(tp) >= end.get(tp, 0) for tp in assigned)

    def _idle(self, workers: dict[str, _Worker]) -> bool:
        return (
            not self._dead
            and self.results.empty()
            and all(w.busy == 0 for w in workers.values())
            and all(r.pending() == 0 for r in self.routes)
        )

    def _revoked(self, consumer: Any, revoked: set[TopicPartition]) -> None:
        """Partitions taken away: commit what is settled, forget the rest (read again elsewhere)."""
        self._commit(consumer)
        for (tp, _), record in list(self._records.items()):
            if tp in revoked:
                record.stale = True
                self._records.pop((tp, record.offset), None)
        for route in self.routes:
            route.drop(lambda item: item.ref is not None and item.ref.tp in revoked)
        self._ledger.forget(revoked)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, service: NotifierService, consumer: Any) -> None:
        self.service = service
        self.consumer = consumer

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            self.service._revoked(self.consumer, set(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        names = ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(assigned))
        logger.info("notifier reads %s", names or "no partition")


def _attempt_timeout(route: Route) -> float:
    sink = route.settings
    if route.sink.kind == "email":
        return sink.email.timeout
    if route.sink.kind == "command":
        return sink.command.timeout
    return sink.webhook.timeout


def _offsets(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}@{o}" for tp, o in sorted(offsets.items()))
