"""Hostile input end to end: each case in tests/data/hostile ends in a dead letter or an error.

Each file in ``tests/data/hostile/`` is one case; a new case is a new file. Its header
says what it is and what must happen (feedparser's test style)::

    Description: what the input is
    Expect: 1 decision, 2 dead letters parse/EmptyEntry     (the exact outcomes)

in an XML comment (``feed_*.xml``, served as a feed by a loopback HTTP server and read
by the connector service) or in ``# `` lines up to a ``#---`` line (``record_*.record``,
whose remaining bytes go straight onto the articles topic). ``*.gen`` files hold only a
header, and a ``Generate:`` line for inputs too big to commit (made at test time).
Optional lines: ``Content-Type`` (HTTP header to serve), ``Title`` (an article must have
exactly this title), ``Memory`` (peak memory while the input is read: ``8x`` its
size, or ``1 MiB``), ``Never requested`` (server paths nobody may fetch), ``Key``
(``none``: no record key), ``Value`` (``none``: a tombstone), ``Timestamp`` (``none`` or
``+SECONDS`` from now). ``@SENTINEL@`` and ``@PORT@`` become a secret file's path and
the feed server's port.

Outcomes are counted per case: decisions for its articles, dead letters from the
connector (origin: its URL) or the pipeline (origin: its record, or key: one of its
articles), a feed error when the poll failed with nothing published, a producer error
when the broker refused the record. All cases go through one real pipeline run (Prism,
real model), followed by valid articles on every partition: they must be classified,
so the worker survived the garbage. Nothing may connect outside 127.0.0.0/8, and the
secret's content may appear in no record. ``pytest -s`` prints the outcome table; it is
also written to ``hostile-outcomes.txt`` in the test's temporary directory.
"""

from __future__ import annotations

import gc
import random
import re
import resource
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import errors as kafka_errors

from connectors.publish import Publisher
from connectors.service import ConnectorService, FeedSource
from connectors.state import StateStore
from newswatch.broker import LocalBroker
from newswatch.config import Settings
from newswatch.schemas import Alert, Article, DeadLetter, Decision, SchemaError
from newswatch.topics import make_producer
from pipelines.classify import run
from pipelines.transforms import decode_article
from tests.articles import non_taiwan_articles, seed_article
from tests.conftest import isolated_settings
from tests.connectors.conftest import loopback_guard
from tests.connectors.servers import FeedServer, Reply
from tests.streams import read_topic

HOSTILE = Path(__file__).parent / "data" / "hostile"
_HEADER = re.compile(rb"^(?:# )?([A-Z][a-z]+(?:[- ][A-Za-z][a-z]+)?): ?(.*?)\r?$", re.MULTILINE)
_HEADERS = {
    "Description", "Expect", "Content-Type", "Title", "Memory", "Never requested", "Generate",
    "Key", "Value", "Timestamp",
}  # fmt: skip
_OUTCOME = re.compile(r"^(\d+) (decisions?|dead letters? \S+|feed error .+|producer error \S+)$")


@dataclass
class Case:
    """One hostile input and what must become of it."""

    path: Path
    headers: dict[str, list[str]]
    payload: bytes = b""
    url: str = ""
    origin: str = ""
    article_ids: set[str] = field(default_factory=set)
    titles: list[str] = field(default_factory=list)
    feed_health: dict = field(default_factory=dict)
    error: str = ""
    size: int = 0
    peak_memory: int | None = None
    rss_growth: int | None = None
    outcomes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_feed(self) -> bool:
        return self.name.startswith("feed_")

    def header(self, name: str, default: str | None = None) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else default

    @property
    def expected(self) -> list[str]:
        """The Expect line as a sorted list of single outcomes."""
        items = []
        for part in (self.header("Expect") or "").split(","):
            match = _OUTCOME.match(part.strip())
            assert match, f"{self.name}: cannot read Expect item {part.strip()!r}"
            count, what = int(match.group(1)), match.group(2)
            what = re.sub(r"^(decision|dead letter)s\b", r"\1", what)
            items += [what] * count
        return sorted(items)


def load_case(path: Path) -> Case:
    data = path.read_bytes()
    head = data[:4096].decode("utf-16") if data.startswith(b"\xff\xfe") else data[:4096]
    if isinstance(head, str):
        head = head.encode("utf-8")
    headers: dict[str, list[str]] = {}
    for name, value in _HEADER.findall(head.split(b"#---", 1)[0]):
        headers.setdefault(name.decode(), []).append(value.decode("utf-8", "replace").strip())
    assert "Description" in headers and "Expect" in headers, f"{path.name}: no Description/Expect"
    unknown = set(headers) - _HEADERS
    assert not unknown, f"{path.name}: unknown header line(s) {sorted(unknown)}"
    payload = data
    if path.suffix == ".record":
        payload = data.split(b"#---\n", 1)[1]
    return Case(path, headers, payload)


CASES = sorted(p for p in HOSTILE.iterdir() if p.suffix in (".xml", ".record", ".gen"))


# -- generated inputs ----------------------------------------------------------


def _feed(items: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Generated</title><link>https://gen.example/</link>{items}</channel></rss>"
    ).encode()


def generate(spec: str) -> bytes:
    kind, size = spec.split()[0], int(spec.split()[1])
    sentence = "Shipping through the strait resumed after the storm passed. "
    if kind == "feed-body":  # a well-formed start, then item after item
        item = "<item><title>Filler</title><description>" + sentence * 30 + "</description></item>"
        return (_feed(item * (size // len(item) + 1))[:size]).ljust(size, b" ")
    if kind == "feed-entry-text":
        text = (sentence * (size // len(sentence) + 1))[:size]
        return _feed(
            "<item><title>Ten megabytes of text</title><link>https://gen.example/big</link>"
            f"<description>{text}</description></item>"
        )
    if kind == "random-bytes":
        return random.Random(7).randbytes(size)
    if kind == "nested-json":
        return b"[" * size + b"]" * size
    if kind == "article-text":
        text = (sentence * (size // len(sentence) + 1))[:size]
        return Article(
            "hostile-10mb-text", "https://gen.example/10mb", "Ten megabytes", text,
            None, "Generated", "https://gen.example/rss", "2021-03-01T08:05:00Z",
        ).to_bytes()  # fmt: skip
    raise AssertionError(f"unknown Generate kind {kind!r}")


# -- measuring -------------------------------------------------------------------


def measured(case: Case, action: Callable[[], object]) -> object:
    """Run ``action``; record its traced peak memory and the process's peak RSS growth."""
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        return action()
    finally:
        case.peak_memory = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        case.rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


# -- the run ---------------------------------------------------------------------


@dataclass
class HostileRun:
    cases: dict[str, Case]
    valid: list[Article]
    decisions: list[Decision]
    alerts: list[Alert]
    secret: str
    leaks: list[str]
    requested: set[str]
    table: str
    report: object


def _module_settings(broker: LocalBroker, home: Path) -> Settings:
    settings = isolated_settings(broker, home, "hostile")
    settings.connectors.allow_private_addresses = True  # the feed server is on 127.0.0.1
    settings.connectors.read_timeout = 5.0
    settings.connectors.fetch_deadline = 60.0
    return settings


def _serve(case: Case, server: FeedServer, sentinel: Path) -> bytes:
    spec = case.header("Generate")
    body = generate(spec) if spec else case.payload
    body = body.replace(b"@SENTINEL@", str(sentinel).encode()).replace(
        b"@PORT@", str(server.port).encode()
    )
    content_type = case.header("Content-Type", "application/rss+xml")
    if spec and spec.startswith("feed-body"):
        # No Content-Length: the client can only find the size by reading.
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n"
        server.route(f"/{case.name}", Reply(raw=head.encode() + body))
    else:
        server.route(f"/{case.name}", Reply(body=body, headers={"Content-Type": content_type}))
    return body


def _feed_case(case: Case, server, sentinel: Path, service: ConnectorService) -> None:
    body = _serve(case, server, sentinel)
    case.payload = b""  # the body lives in the server; keep one copy
    case.url = server.url(f"/{case.name}")
    source = FeedSource(case.url, "Hostile")
    measured(case, lambda: service.poll_feed(source))
    case.feed_health = service.state.feed(case.url).health()
    case.size = len(body)


def _record_case(case: Case, settings: Settings) -> None:
    spec = case.header("Generate")
    value: bytes | None = generate(spec) if spec else case.payload
    if case.header("Value") == "none":
        value = None
    case.size = len(value or b"")
    if case.header("Memory"):
        # The pipeline's first step over these bytes, measured on its own.
        measured(case, lambda: _decode_or_none(value))
    key = None if case.header("Key") == "none" else f"hostile-{case.path.stem}".encode()
    stamp = case.header("Timestamp")
    timestamp_ms = None
    if stamp == "none":
        timestamp_ms = -1
    elif stamp:
        timestamp_ms = int((time.time() + float(stamp)) * 1000)
    # A producer per case: kafka-python's idempotent producer treats a record the broker
    # refuses (InvalidTimestamp) as fatal and fails every later send.
    producer = make_producer(settings.bootstrap_servers)
    try:
        metadata = producer.send(
            settings.kafka.articles_topic, key=key, value=value, timestamp_ms=timestamp_ms
        ).get(timeout=30)
    except kafka_errors.KafkaError as exc:
        case.error = f"producer error {type(exc).__name__}"
        return
    finally:
        producer.close(timeout=10)
    case.origin = f"{metadata.topic}/{metadata.partition}@{metadata.offset}"
    article = _decode_or_none(value)
    if article is not None:
        case.article_ids.add(article.id)


def _decode_or_none(value: bytes | None) -> Article | None:
    try:
        return decode_article(value)
    except SchemaError:
        return None


def _outcomes(case: Case, decided: set[str], letters: list[DeadLetter]) -> list[str]:
    outcomes = ["decision" for article_id in sorted(case.article_ids) if article_id in decided]
    for letter in letters:
        ours = (
            (case.is_feed and letter.origin == case.url)
            or (case.origin and letter.origin == case.origin)
            or (letter.stage != "parse" and letter.key in case.article_ids and not case.origin)
        )
        if ours:
            outcomes.append(f"dead letter {letter.stage}/{letter.error}")
    if case.error:
        outcomes.append(case.error)
    elif not outcomes and case.feed_health.get("last_error"):
        outcomes.append(f'feed error "{case.feed_health["last_error"]}"')
    return sorted(outcomes)


def _plural(count: int, outcome: str) -> str:
    if count > 1:
        outcome = re.sub(r"^(decision|dead letter)\b", r"\1s", outcome)
    return f"{count} {outcome}"


def _render(cases: list[Case], valid_ok: bool) -> str:
    rows = [("input", "kind", "size", "outcome", "notes")]
    for case in cases:
        counted = Counter(case.outcomes)
        outcome = ", ".join(_plural(n, what) for what, n in sorted(counted.items())) or "NOTHING"
        notes = []
        if case.feed_health.get("last_warning"):
            notes.append("feed health: warning (malformed)")
        elif case.feed_health.get("last_error"):
            notes.append("feed health: error")
        if case.peak_memory is not None:
            notes.append(
                f"peak {case.peak_memory / 2**20:.1f} MiB traced, "
                f"RSS +{max(case.rss_growth or 0, 0) / 2**20:.1f} MiB"
            )
        size = case.size
        human = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size} B"
        kind = "feed (HTTP)" if case.is_feed else "record (topic)"
        rows.append((case.name, kind, human, outcome, "; ".join(notes)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    verdict = "classified" if valid_ok else "NOT classified"
    lines.append(f"valid articles after the garbage, one per partition: {verdict}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def hostile(kafka_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    """Every case through the connector or onto the topic, then one pipeline run."""
    if not kafka_broker.is_running():
        kafka_broker.start()
    tmp = tmp_path_factory.mktemp("hostile")
    settings = _module_settings(kafka_broker, tmp)
    secret = f"NEWSWATCH-SENTINEL-{uuid.uuid4().hex}"
    sentinel = tmp / "sentinel.txt"
    sentinel.write_text(secret + "\n", encoding="utf-8")
    cases = [load_case(path) for path in CASES]
    with loopback_guard() as attempts, FeedServer() as server:
        with StateStore(settings.connectors.state_dir) as state, Publisher(settings) as publisher:
            service = ConnectorService(settings, publisher, state)
            for case in (c for c in cases if c.is_feed):
                _feed_case(case, server, sentinel, service)
        for case in (c for c in cases if not c.is_feed):
            _record_case(case, settings)
        producer = make_producer(settings.bootstrap_servers)
        try:
            # Valid articles after all the garbage, on every partition.
            valid = [seed_article(), *non_taiwan_articles(settings.kafka.partitions - 1)]
            for partition, article in enumerate(valid):
                producer.send(
                    settings.kafka.articles_topic,
                    key=article.id.encode(),
                    value=article.to_bytes(),
                    partition=partition,
                ).get(timeout=30)
        finally:
            producer.close()
        report = run(settings, until_idle=True, install_signal_handlers=False)
        requested = {request.path for request in server.requests}
    assert not attempts, f"connections to non-loopback addresses were attempted: {attempts}"

    kafka = settings.kafka
    records = {topic: read_topic(settings, topic) for topic in (
        kafka.articles_topic, kafka.decisions_topic, kafka.dead_letter_topic, kafka.alerts_topic
    )}  # fmt: skip
    by_feed: dict[str, list[Article]] = {}
    for record in records[kafka.articles_topic]:
        article = _decode_or_none(record.value)
        if article is not None:
            by_feed.setdefault(article.feed, []).append(article)
    decisions = [Decision.from_bytes(r.value) for r in records[kafka.decisions_topic]]
    letters = [DeadLetter.from_bytes(r.value) for r in records[kafka.dead_letter_topic]]
    alerts = [Alert.from_bytes(r.value) for r in records[kafka.alerts_topic]]
    decided = {d.article_id for d in decisions}
    for case in cases:
        if case.is_feed:
            articles = by_feed.get(case.url, [])
            case.article_ids = {a.id for a in articles}
            case.titles = [a.title for a in articles]
        case.outcomes = _outcomes(case, decided, letters)

    leaks = [
        f"{topic}@{r.offset}"
        for topic, topic_records in records.items()
        for r in topic_records
        if secret.encode() in (r.value or b"")
    ] + [f"dead letter payload {d.origin}" for d in letters if secret.encode() in d.payload]
    valid_ok = {a.id for a in valid} <= decided
    table = _render(cases, valid_ok)
    print("\n" + table)
    (tmp / "hostile-outcomes.txt").write_text(table + "\n", encoding="utf-8")
    return HostileRun(
        {c.name: c for c in cases}, valid, decisions, alerts, secret, leaks, requested, table,
        report,
    )  # fmt: skip


def _memory_bound(limit: str, size: int) -> float:
    """Bytes allowed by a Memory line: ``0.6x`` (times the input's size) or ``1 MiB``."""
    if limit.endswith("x"):
        return float(limit[:-1]) * size
    number, unit = limit.split()
    return float(number) * {"KiB": 2**10, "MiB": 2**20}[unit]


@pytest.mark.parametrize("name", [p.name for p in CASES])
def test_hostile_input_ends_in_a_dead_letter_or_a_clear_error(hostile: HostileRun, name: str):
    case = hostile.cases[name]
    assert case.outcomes == case.expected, f"{name}: {case.header('Description')}"
    for title in case.headers.get("Title", []):
        assert title in case.titles, f"{name}: no article titled {title!r} in {case.titles}"
    limit = case.header("Memory")
    if limit is not None:
        bound = _memory_bound(limit, case.size)
        assert case.peak_memory is not None and case.peak_memory <= bound, case.peak_memory
        assert (case.rss_growth or 0) <= bound, case.rss_growth
    for path in (case.header("Never requested") or "").split():
        assert path not in hostile.requested, f"{name}: {path} was requested"


def test_the_worker_classifies_valid_articles_after_the_hostile_corpus(hostile: HostileRun):
    decided = {d.article_id for d in hostile.decisions}
    assert {a.id for a in hostile.valid} <= decided
    assert hostile.valid[0].id in {a.article_id for a in hostile.alerts}  # the seed alerts


def test_no_external_entity_leaks_a_local_file_into_any_record(hostile: HostileRun):
    assert hostile.cases["feed_xxe_local_file.xml"].outcomes  # the case did run
    assert hostile.leaks == []
