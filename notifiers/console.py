"""Story alerts on the terminal, as ``newswatch run`` finds them.

`StoryAlertPrinter` reads the story-alerts topic from where it ends when the
printer starts (no consumer group: it commits nothing) and prints each alert id
once: one readable line (`notifiers.messages.one_line`), or the record's JSON.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

from kafka import TopicPartition

from newswatch.config import Settings
from newswatch.schemas import SchemaError, StoryAlert
from newswatch.topics import make_consumer
from notifiers.messages import one_line

__all__ = ["StoryAlertPrinter"]

logger = logging.getLogger(__name__)


class StoryAlertPrinter:
    """Prints the story alerts written after `start`.

    ``stop()`` ends at once; ``finish()`` first prints everything up to the
    topic's end at that moment.
    """

    def __init__(
        self, settings: Settings, as_json: bool = False, out: TextIO | None = None
    ) -> None:
        self.topic = settings.kafka.story_alerts_topic
        self.servers = settings.bootstrap_servers
        self.as_json = as_json
        self.out = out or sys.stdout
        self.printed = 0
        self._stop = threading.Event()
        self._finish = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: set[str] = set()

    def start(self) -> None:
        """Take the topic's current end as the starting point, then print in a thread."""
        consumer = make_consumer(self.servers, group_id=None, client_id="newswatch-printer")
        tps = [
            TopicPartition(self.topic, p)
            for p in sorted(consumer.partitions_for_topic(self.topic) or ())
        ]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)  # resolve "end" now, not when the thread first polls
        self._thread = threading.Thread(
            target=self._print, args=(consumer, tps), name="story-alert-printer", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def finish(self) -> None:
        self._finish.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _print(self, consumer: Any, tps: list[TopicPartition]) -> None:
        end: dict[TopicPartition, int] | None = None
        try:
            while not self._stop.is_set():
                if self._finish.is_set() and end is None:
                    end = consumer.end_offsets(tps)
                for records in consumer.poll(timeout_ms=300).values():
                    for record in records:
                        self._show(record)
                if end is not None and all(consumer.position(tp) >= end[tp] for tp in tps):
                    return
        except (BrokenPipeError, ValueError):  # stdout closed (e.g. `| head`)
            return
        finally:
            consumer.close(autocommit=False)

    def _show(self, record: Any) -> None:
        try:
            alert = StoryAlert.from_bytes(record.value)
        except SchemaError as exc:
            logger.warning("unreadable story alert at %s@%d: %s", self.topic, record.offset, exc)
            return
        if alert.alert_id in self._seen:
            return
        self._seen.add(alert.alert_id)
        print(alert.to_json() if self.as_json else one_line(alert), file=self.out, flush=True)
        self.printed += 1
