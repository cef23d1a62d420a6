"""Log output an operator reads: a library's reconnect storm is summarised, not repeated."""

from __future__ import annotations

import logging

from newswatch.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def emitted(records: list[logging.LogRecord], repeat: RepeatFilter) -> list[str]:
    return [r.getMessage() for r in records if repeat.filter(r)]


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_repeated_kafka_error_passes_once_per_window_then_says_how_many_were_held():
    clock = Clock()
    repeat = RepeatFilter("kafka", window=30.0, clock=clock)
    storm = [record("kafka.net.manager", "Connection failed: %s", f"node {i}") for i in range(50)]
    assert emitted(storm, repeat) == ["Connection failed: node 0"]

    clock.now = 31.0
    (line,) = emitted([record("kafka.net.manager", "Connection failed: %s", "node 9")], repeat)
    assert line == "Connection failed: node 9 [and 49 more like it in the last 30 s]"


def test_different_messages_levels_and_other_loggers_are_not_held():
    repeat = RepeatFilter("kafka", clock=Clock())
    records = [
        record("kafka.net.manager", "Connection failed: %s", "x"),
        record("kafka.net.manager", "Connection failed: %s", "x", level=logging.WARNING),
        record("kafka.cluster", "Metadata refresh failed: %s", "x"),
        record("newswatch.topics", "replaced the producer: %s", "x"),
        record("newswatch.topics", "replaced the producer: %s", "x"),
    ]
    assert len(emitted(records, repeat)) == 5
