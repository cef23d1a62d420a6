"""Evidence sentences in the context of their article.

Alerts and stories carry the evidence sentences and the article's title, not its
text. `ArticleLookup` finds the article on the articles topic: the key (article
id) names the partition (Kafka's default partitioner, as the connectors'
producer used it) and a time near the record's (the alert's ingest time, the
decision's time) names the offset, via ``offsets_for_times``; it scans at most a
window of records around that. Found articles are cached. Articles older than
the topic's retention (7 days) are gone; the page then shows the sentences alone.

`in_context` cuts the text into passages around the evidence and marks it, as
(text, marked) segments the template escapes.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from kafka import errors as kafka_errors
from kafka.partitioner.default import murmur2

from newswatch.config import Settings
from newswatch.schemas import Article, SchemaError
from newswatch.topics import make_consumer

__all__ = ["ArticleLookup", "Passage", "in_context"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Passage:
    """A stretch of the article: segments of text, the evidence among them marked."""

    segments: tuple[tuple[str, bool], ...]
    cut_before: bool
    cut_after: bool


def _find(text: str, sentence: str) -> tuple[int, int] | None:
    """Where ``sentence`` is in ``text``, tolerating different whitespace."""
    sentence = sentence.strip()
    if not sentence:
        return None
    at = text.find(sentence)
    if at >= 0:
        return at, at + len(sentence)
    words = sentence.split()
    if not words:
        return None
    match = re.search(r"\s+".join(re.escape(w) for w in words), text)
    return (match.start(), match.end()) if match else None


def in_context(text: str, sentences: Sequence[str], radius: int = 320) -> list[Passage]:
    """Passages of ``text`` around each evidence sentence, the sentences marked.

    Returns [] when no sentence is found in the text.
    """
    spans = sorted(span for s in sentences if (span := _find(text, s)) is not None)
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if not merged:
        return []
    windows: list[list[Any]] = []
    for start, end in merged:
        lo, hi = max(0, start - radius), min(len(text), end + radius)
        # Widen to word boundaries so no word is cut in half.
        while lo > 0 and not text[lo - 1].isspace():
            lo -= 1
        while hi < len(text) and not text[hi].isspace():
            hi += 1
        if windows and lo <= windows[-1][1]:
            windows[-1][1] = hi
            windows[-1][2].append((start, end))
        else:
            windows.append([lo, hi, [(start, end)]])
    passages = []
    for lo, hi, marks in windows:
        segments: list[tuple[str, bool]] = []
        at = lo
        for start, end in marks:
            if start > at:
                segments.append((text[at:start], False))
            segments.append((text[start:end], True))
            at = end
        if at < hi:
            segments.append((text[at:hi], False))
        passages.append(Passage(tuple(segments), lo > 0, hi < len(text)))
    return passages


def partition_for(article_id: str, partitions: int) -> int:
    """The partition the connectors' producer wrote an article id to (Kafka's default)."""
    return (murmur2(article_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


class ArticleLookup:
    """Finds articles on the articles topic by id near a time; thread-safe, cached.

    Args:
        window: Seconds before and after the given time to scan.
        max_records: Records scanned at most per lookup.
        timeout: Seconds one lookup may take.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        window: float = 900.0,
        max_records: int = 20_000,
        timeout: float = 3.0,
        cache_size: int = 256,
    ) -> None:
        self._settings = settings
        self._topic = settings.kafka.articles_topic
        self._window_ms = int(window * 1000)
        self._max_records = max_records
        self._timeout = timeout
        self._cache: OrderedDict[str, Article | None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._consumer: Any = None

    def find(self, article_id: str, around: float | None) -> Article | None:
        """The article with this id whose record was written near ``around`` (Unix seconds)."""
        with self._lock:
            if article_id in self._cache:
                self._cache.move_to_end(article_id)
                return self._cache[article_id]
            try:
                article, conclusive = self._scan(article_id, around)
            except (kafka_errors.KafkaError, OSError) as exc:
                logger.debug("article %s lookup failed: %s", article_id, exc)
                self._close()
                return None
            if article is not None or conclusive:
                self._cache[article_id] = article
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            return article

    def _scan(self, article_id: str, around: float | None) -> tuple[Article | None, bool]:
        """(article or None, whether the answer is final rather than cut short)."""
        if self._consumer is None:
            self._consumer = make_consumer(
                self._settings.bootstrap_servers,
                group_id=None,
                client_id="newswatch-web-lookup",
                bootstrap_timeout_ms=3000,
                request_timeout_ms=5000,
            )
        consumer = self._consumer
        partitions = sorted(consumer.partitions_for_topic(self._topic) or ())
        if not partitions:
            return None, False
        tp = TopicPartition(self._topic, partitions[partition_for(article_id, len(partitions))])
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        if around is None:
            start = max(consumer.beginning_offsets([tp])[tp], end - self._max_records)
            until_ms = None
        else:
            around_ms = int(around * 1000)
            found = consumer.offsets_for_times({tp: around_ms - self._window_ms})[tp]
            if found is None:
                return None, True
            start, until_ms = found.offset, around_ms + self._window_ms
        consumer.seek(tp, start)
        key = article_id.encode("utf-8")
        scanned = 0
        deadline = time.monotonic() + self._timeout
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                return None, False
            for record in consumer.poll(timeout_ms=300, max_records=1000).get(tp, []):
                scanned += 1
                if record.key == key:
                    with contextlib.suppress(SchemaError):
                        return Article.from_bytes(record.value), True
                if (until_ms is not None and record.timestamp > until_ms) or (
                    scanned >= self._max_records
                ):
                    return None, True
        return None, True

    def _close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None

    def close(self) -> None:
        with self._lock:
            self._close()
