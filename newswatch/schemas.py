"""Every record that crosses a process or topic boundary.

Connectors turn feed entries and files into `Article`s, the pipeline turns
articles into `Classification`s and then into `Alert`s, `Decision`s or
`DeadLetter`s, and counts them into `IndexPoint`s. Each record is a frozen
dataclass serialised as UTF-8 JSON with a ``schema_version``; pass the
dataclasses around and serialise only at edges.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

__all__ = [
    "SCHEMA_VERSION",
    "SIGNAL_TYPES",
    "STORY_STATUSES",
    "Alert",
    "Article",
    "Classification",
    "ClassifiedArticle",
    "DeadLetter",
    "Decision",
    "IndexPoint",
    "SchemaError",
    "Story",
    "StoryAlert",
    "StoryArticle",
    "StoryEvidence",
    "alert_id",
    "article_id",
    "parse_ms",
    "parse_seconds",
    "parse_time",
    "story_alert_id",
    "utc_now",
]

SCHEMA_VERSION = 1

#: The six signal types of the labelling guide, in their canonical order.
SIGNAL_TYPES: tuple[str, ...] = (
    "military",
    "rhetoric",
    "economic",
    "diplomatic",
    "arms",
    "grayzone",
)


class SchemaError(ValueError):
    """A payload is not a valid record of the expected type."""


def parse_time(value: str) -> datetime:
    """An ISO 8601 time, ``Z`` or an offset or naive (taken as UTC), as an aware datetime.

    Raises:
        ValueError: not an ISO 8601 time.
    """
    moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_seconds(value: str | None) -> float | None:
    """Unix seconds of an ISO 8601 time (naive means UTC); None when absent or invalid."""
    if not value or not isinstance(value, str):
        return None
    try:
        return parse_time(value).timestamp()
    except ValueError:
        return None


def parse_ms(value: str | None) -> int | None:
    """Epoch milliseconds of an ISO 8601 time (naive means UTC); None when absent or invalid."""
    seconds = parse_seconds(value)
    return None if seconds is None else int(seconds * 1000)


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string with a trailing ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def article_id(identity: str) -> str:
    """A stable id for an article from its GUID or canonical URL.

    The same entry seen in many snapshots of a feed, or replayed, gets the same
    id, so every stage can deduplicate by key.
    """
    return hashlib.sha256(identity.strip().encode("utf-8")).hexdigest()[:16]


def alert_id(article: str, model_version: str) -> str:
    """A stable alert id: one alert per article and model version."""
    return hashlib.sha256(f"{article}|{model_version}".encode()).hexdigest()[:16]


def story_alert_id(story: str, update: int) -> str:
    """A stable id for the ``update``-th alert of a story (0: the first escalation)."""
    return hashlib.sha256(f"{story}|{update}".encode()).hexdigest()[:16]


_JSON_TYPES = (str, int, float, bool, list, dict, type(None))


@functools.cache
def _field_kinds(cls: type) -> tuple[dict[str, tuple[type, ...]], dict[str, tuple[type, bool]]]:
    """What each field of a record takes: the JSON types of a plain field, and for a
    field holding records their class and whether it holds a list of them."""
    hints = typing.get_type_hints(cls)
    plain, nested = {}, {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        kinds = [typing.get_origin(a) or a for a in (typing.get_args(hint) if union else (hint,))]
        if all(kind in _JSON_TYPES for kind in kinds):
            plain[f.name] = (*kinds, int) if float in kinds else tuple(kinds)
            items = typing.get_args(hint)
            if kinds == [list] and items and issubclass(items[0], _Record):
                nested[f.name] = (items[0], True)
        elif len(kinds) == 1 and issubclass(kinds[0], _Record):
            nested[f.name] = (kinds[0], False)
    return plain, nested


def _record(kind: Any, value: Any) -> Any:
    return value if isinstance(value, kind) else kind.from_dict(value)


class _Record:
    """JSON (de)serialisation shared by all records: `from_dict` checks each field's JSON
    type and builds the records nested in it."""

    _required: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    def to_bytes(self) -> bytes:
        return self.to_json().encode("utf-8")

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        if not isinstance(data, dict):
            raise SchemaError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        missing = [name for name in cls._required if data.get(name) in (None, "")]
        if missing:
            raise SchemaError(f"{cls.__name__}: missing required field(s) {', '.join(missing)}")
        plain, nested = _field_kinds(cls)
        values = {}
        for name, value in data.items():
            kinds = plain.get(name)
            if kinds and (
                not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
            ):
                named = [k for k in kinds if not (k is int and float in kinds)]
                wanted = " or ".join("null" if k is type(None) else k.__name__ for k in named)
                raise SchemaError(
                    f"{cls.__name__}: {name} must be {wanted}, not {type(value).__name__}"
                )
            if name in nested:
                kind, many = nested[name]
                value = [_record(kind, v) for v in value] if many else _record(kind, value)
            values[name] = value
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        try:
            return cls(**{k: v for k, v in values.items() if k in names})
        except TypeError as exc:
            raise SchemaError(f"{cls.__name__}: {exc}") from exc

    @classmethod
    def from_bytes(cls, payload: bytes | None) -> Self:
        if payload is None:
            raise SchemaError(f"{cls.__name__}: empty payload (tombstone)")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SchemaError(f"{cls.__name__}: payload is not UTF-8 ({exc.reason})") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{cls.__name__}: payload is not JSON ({exc.msg})") from exc
        return cls.from_dict(data)


@dataclass(frozen=True, slots=True)
class Article(_Record):
    """A news item as published to the articles topic."""

    _required: ClassVar[tuple[str, ...]] = ("id", "title")

    id: str
    """Deterministic id, see `article_id`; also the Kafka record key."""
    url: str
    """Canonical link of the item ('' for local documents without one)."""
    title: str
    """Headline, plain text."""
    text: str
    """Body or summary, plain text (HTML stripped)."""
    published: str | None
    """Publication time from the source, ISO-8601 UTC; None if the source gave none."""
    source: str
    """Outlet name, e.g. 'BBC News'."""
    feed: str
    """Where it came from: a feed URL or a file path."""
    ingested_at: str
    """When the connector read it, ISO-8601 UTC."""
    language: str | None = None
    """Language tag from the source, if any."""
    schema_version: int = SCHEMA_VERSION

    @property
    def content(self) -> str:
        """Title and text as one document for classification."""
        return f"{self.title}\n{self.text}".strip()


@dataclass(frozen=True, slots=True)
class Classification(_Record):
    """The classifier's judgement of one article."""

    taiwan_related: bool
    """The article is about Taiwan (per the labelling guide)."""
    taiwan_score: float
    """Probability that the article is Taiwan-related."""
    escalation: bool
    """The article reports a Taiwan-related escalation signal."""
    escalation_score: float
    """Calibrated probability of escalation."""
    signals: list[str]
    """Signal types over their thresholds, in `SIGNAL_TYPES` order."""
    signal_scores: dict[str, float]
    """Score of every signal type."""
    severity: int
    """0 (none) to 4 (acute), per the labelling guide."""
    evidence: list[str]
    """The sentence(s) that drove the decision, most decisive first."""
    model: str
    """Model name."""
    model_version: str
    """Model artefact version."""
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class ClassifiedArticle(_Record):
    """A Taiwan-related article and its classification, on the classified topic (keyed by
    article id): the hand-off from the workers that classify to the one that builds stories."""

    article: Article
    classification: Classification
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class Alert(_Record):
    """An escalation alert as written to the alerts topic (keyed by alert_id)."""

    _required: ClassVar[tuple[str, ...]] = ("alert_id", "article_id")

    alert_id: str
    article_id: str
    url: str
    title: str
    source: str
    published: str | None
    escalation_score: float
    signals: list[str]
    signal_scores: dict[str, float]
    severity: int
    evidence: list[str]
    model: str
    model_version: str
    ingested_at: str
    alerted_at: str
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_classification(
        cls, article: Article, result: Classification, alerted_at: str | None = None
    ) -> Alert:
        return cls(
            alert_id=alert_id(article.id, result.model_version),
            article_id=article.id,
            url=article.url,
            title=article.title,
            source=article.source,
            published=article.published,
            escalation_score=result.escalation_score,
            signals=list(result.signals),
            signal_scores=dict(result.signal_scores),
            severity=result.severity,
            evidence=list(result.evidence),
            model=result.model,
            model_version=result.model_version,
            ingested_at=article.ingested_at,
            alerted_at=alerted_at or utc_now(),
        )


@dataclass(frozen=True, slots=True)
class Decision(_Record):
    """The compact outcome recorded for every classified article (alert or not)."""

    _required: ClassVar[tuple[str, ...]] = ("article_id",)

    article_id: str
    alert: bool
    escalation_score: float
    taiwan_related: bool
    signals: list[str]
    severity: int
    model_version: str
    published: str | None
    source: str
    decided_at: str
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_classification(cls, article: Article, result: Classification) -> Decision:
        return cls(
            article_id=article.id,
            alert=result.escalation,
            escalation_score=result.escalation_score,
            taiwan_related=result.taiwan_related,
            signals=list(result.signals),
            severity=result.severity,
            model_version=result.model_version,
            published=article.published,
            source=article.source,
            decided_at=utc_now(),
        )


#: Dead letters keep at most this many bytes of the offending payload.
DEAD_LETTER_PAYLOAD_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter(_Record):
    """Input that could not be processed, with why and where it came from."""

    _required: ClassVar[tuple[str, ...]] = ("stage", "error")

    stage: str
    """Where it failed: 'fetch', 'parse', 'decode', 'classify', ..."""
    error: str
    """Exception type or short error code."""
    message: str
    """Human-readable reason."""
    origin: str
    """Where the input came from: feed URL, file path or topic/partition@offset."""
    payload_b64: str = ""
    """Base64 of the original bytes, cut to `DEAD_LETTER_PAYLOAD_LIMIT`."""
    payload_size: int = 0
    """Size of the original payload in bytes (before cutting)."""
    key: str | None = None
    """Record key or article id, when known."""
    at: str = field(default_factory=utc_now)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def of(
        cls,
        stage: str,
        exc: BaseException | str,
        origin: str,
        payload: bytes | str | None = None,
        key: str | None = None,
    ) -> DeadLetter:
        """Build a dead letter from an exception (or error code) and the raw input."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogateescape")
        raw = payload or b""
        if isinstance(exc, BaseException):
            error, message = type(exc).__name__, str(exc) or type(exc).__name__
        else:
            error, message = exc, exc
        return cls(
            stage=stage,
            error=error,
            message=message[:2000],
            origin=origin,
            payload_b64=base64.b64encode(raw[:DEAD_LETTER_PAYLOAD_LIMIT]).decode("ascii"),
            payload_size=len(raw),
            key=key,
        )

    @property
    def payload(self) -> bytes:
        return base64.b64decode(self.payload_b64)


#: A story's status, in the order a story usually passes through them.
STORY_STATUSES: tuple[str, ...] = ("new", "growing", "escalated", "breaking", "dormant")


@dataclass(frozen=True, slots=True)
class StoryArticle(_Record):
    """One member article of a story, as the story shows it."""

    _required: ClassVar[tuple[str, ...]] = ("article_id",)

    article_id: str
    url: str
    title: str
    source: str
    published: str | None
    """Event time of the article (publication, else ingest time), ISO-8601 UTC."""
    escalation: bool = False
    escalation_score: float = 0.0
    signals: list[str] = field(default_factory=list)
    severity: int = 0


@dataclass(frozen=True, slots=True)
class StoryEvidence(_Record):
    """An evidence sentence of a story and the article it comes from."""

    _required: ClassVar[tuple[str, ...]] = ("sentence",)

    sentence: str
    article_id: str
    url: str
    source: str
    score: float
    """The escalation score of the article the sentence comes from."""


@dataclass(frozen=True, slots=True)
class Story(_Record):
    """An escalation story: coverage of one real-world episode across outlets.

    Written to the compacted stories topic, keyed by ``story_id``, each time it changes.
    """

    _required: ClassVar[tuple[str, ...]] = ("story_id",)

    story_id: str
    """Deterministic: derived from the story's first article."""
    headline: str
    """The most representative member title."""
    first_seen: str
    """Event time of the first article, ISO-8601 UTC."""
    last_seen: str
    """Event time of the latest article, ISO-8601 UTC."""
    articles: list[StoryArticle]
    """Members in the order they joined."""
    outlets: int
    """Distinct sources among the members."""
    escalation: bool
    """At least one member is an escalation."""
    max_score: float
    """Highest escalation score of a member."""
    signals: dict[str, int]
    """Signal type → number of member articles that carry it."""
    severity: int
    """Highest member severity."""
    evidence: list[StoryEvidence]
    """The best evidence sentences across members, best first."""
    status: str
    """One of `STORY_STATUSES`."""
    status_changed_at: str
    """Event time at which the status last changed."""
    updated_at: str
    """Event time of the last change."""
    revision: int = 0
    """How many times the story changed (0 when created)."""
    keywords: dict[str, float] = field(default_factory=dict)
    """The story's weighted key terms, which new articles are matched against."""
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class StoryAlert(_Record):
    """A story alert: the first escalation of a story, then each material change.

    Written to the story-alerts topic keyed by ``story_id``; ``alert_id`` is stable
    per story and update, so consumers deduplicate (and notifiers use it as the
    idempotency key).
    """

    _required: ClassVar[tuple[str, ...]] = ("alert_id", "story_id")

    alert_id: str
    """`story_alert_id` of story and update."""
    story_id: str
    update: int
    """0 for the first escalation, then 1, 2, ... for each material change."""
    reasons: list[str]
    """Why this alert was raised, e.g. ['escalated'], ['severity 2→3', 'breaking']."""
    story: Story
    """The story as it stood when the alert was raised."""
    alerted_at: str
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class IndexPoint(_Record):
    """One window of the escalation index (the last pane of a key is final).

    Written to the index topic keyed by `key`, once per firing of the window.
    """

    _required: ClassVar[tuple[str, ...]] = ("resolution", "window_start")

    resolution: str
    """'hour' or 'day'."""
    window_start: str
    """Window start, ISO-8601 UTC (inclusive)."""
    window_end: str
    """Window end, ISO-8601 UTC (exclusive)."""
    articles: int
    """Articles classified in the window."""
    alerts: int
    """Of those, how many were escalations (alerted)."""
    escalation_score_mean: float
    """Mean escalation score over the window's articles."""
    signals: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per signal type: ``count`` of articles with the signal, ``mean_score`` of the signal."""
    pane_index: int = 0
    """0 for the first firing of the window, counting up with each late update."""
    pane_timing: str = "ON_TIME"
    """EARLY, ON_TIME or LATE (relative to the watermark)."""
    final: bool = False
    """The window has closed (end + allowed lateness passed): this value is final."""
    emitted_at: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        """The record key: one key per resolution and window."""
        return f"{self.resolution}/{self.window_start}"
