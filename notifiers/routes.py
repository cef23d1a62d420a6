"""Routes: which alerts go to which sink, and when (Alertmanager's timing, per story).

A route has a filter (``min_severity``, ``signals``), one sink, and three
intervals that apply to each story on their own:

``group_wait``
    The first notification of a story is sent ``group_wait`` seconds after its
    first matching alert arrived; the story's alerts that arrive meanwhile fold
    into it (one notification: the latest state, the reasons of all).
``group_interval``
    Once a notification of a story was sent, its next alerts are collected and
    sent together, no sooner than ``group_interval`` seconds after that send.
``repeat_interval``
    When a notification falls due whose story state (status, severity, signals,
    outlets) is the one last sent for that story, it is not sent unless
    ``repeat_interval`` seconds have passed since that send.

An alert whose update number is not above the last one sent for its story (a
duplicate on the topic, an older update emitted again after a pipeline restart)
is settled at once without a message. Article alerts (``follow = ["articles"]``)
are groups of one, keyed by alert id. Nothing is re-sent on a timer: every
notification is caused by an alert.

This state lives in memory only. The notifier commits an alert's offset once
every route has settled it (sent, dead-lettered, filtered out or suppressed),
so alerts that wait in a group when the process dies are read again at the next
start and grouped anew; a notification already sent may then be sent again,
with the same idempotency key (the latest folded alert id).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import jinja2

from newswatch.config import RouteSettings, Settings, WebhookSettings
from newswatch.errors import ConfigError
from newswatch.schemas import SIGNAL_TYPES, Alert, SchemaError, StoryAlert
from notifiers.command import CommandSink, FileSink
from notifiers.email import EmailSink
from notifiers.messages import Notification
from notifiers.webhook import WebhookSink

__all__ = ["Batch", "Incoming", "Route", "Sink", "build_routes", "read_secret"]


class Sink(Protocol):
    """Delivers one notification or raises `notifiers.errors.DeliveryFailed`.

    ``str(sink)`` names it for logs and must not reveal secrets (nor a webhook's
    path, which often is one).
    """

    kind: str

    def deliver(self, notification: Notification) -> None: ...


@dataclass(frozen=True, slots=True)
class Incoming:
    """One alert as the routes see it, with the handle of the record it came from."""

    kind: str
    """'story' or 'article'."""
    key: str
    """The group: story id, or the alert id of an article alert."""
    update: int
    severity: int
    signals: frozenset[str]
    state: tuple[Any, ...]
    """What a person would see change: status, severity, signals, outlets."""
    alert: StoryAlert | Alert
    ref: Any = None
    """The service's handle of the Kafka record (settled when every route is done)."""

    @classmethod
    def of(cls, alert: StoryAlert | Alert, ref: Any = None) -> Incoming:
        """The routes' view of ``alert``.

        Raises:
            SchemaError: a field has the wrong type, or the alert cannot be rendered.
        """
        _check(alert)
        if isinstance(alert, StoryAlert):
            story = alert.story
            signals = frozenset(s for s, n in story.signals.items() if n)
            state = ("story", story.status, story.severity, tuple(sorted(signals)), story.outlets)
            return cls(
                "story", alert.story_id, alert.update, story.severity, signals, state, alert, ref
            )
        signals = frozenset(alert.signals)
        return cls("article", alert.alert_id, 0, alert.severity, signals, ("article",), alert, ref)


def _check(alert: StoryAlert | Alert) -> None:
    """Refuse an alert whose fields would break grouping or rendering later (the record
    types checked each field's JSON type when they were read)."""
    if isinstance(alert, StoryAlert):
        counts = alert.story.signals.values()
        if any(isinstance(n, bool) or not isinstance(n, int) for n in counts):
            raise SchemaError("StoryAlert: story signal counts must be integers")
    try:  # every format a sink may send
        if isinstance(alert, StoryAlert):
            probe = Notification.from_story_alerts([alert], "check")
        else:
            probe = Notification.from_article_alert(alert, "check")
        _ = (probe.body, probe.slack_body, probe.subject, probe.plain_text(), probe.html())
    except (TypeError, ValueError, AttributeError, KeyError, jinja2.TemplateError) as exc:
        raise SchemaError(f"{type(alert).__name__} cannot be rendered: {exc}") from exc


@dataclass
class Batch:
    """The alerts of one story that a route sends as one notification."""

    route: Route
    items: list[Incoming]
    notification: Notification


@dataclass
class _Story:
    """A route's memory of one story."""

    pending: list[Incoming] = field(default_factory=list)
    due: float = 0.0
    sent_at: float | None = None
    sent_state: tuple[Any, ...] | None = None
    sent_update: int = -1


class Route:
    """A filter, a sink and the timing state of every story seen on this route."""

    def __init__(self, settings: RouteSettings, sink: Sink, name: str) -> None:
        self.settings = settings
        self.sink = sink
        self.name = name
        self._stories: dict[tuple[str, str], _Story] = {}

    def __str__(self) -> str:
        return f"route {self.name} ({self.sink})"

    def matches(self, item: Incoming) -> bool:
        """Whether the route's filter lets ``item`` through."""
        if item.severity < self.settings.min_severity:
            return False
        return not self.settings.signals or bool(item.signals & set(self.settings.signals))

    def offer(self, item: Incoming, now: float) -> bool:
        """Take ``item``; True if it waits in a group (settled later), False if settled now."""
        if not self.matches(item):
            return False
        story = self._stories.setdefault((item.kind, item.key), _Story())
        if item.update <= story.sent_update or any(p.update == item.update for p in story.pending):
            return False  # already sent, or already waiting: a duplicate
        if not story.pending:
            if story.sent_at is None:
                story.due = now + self.settings.group_wait
            else:
                story.due = max(now, story.sent_at + self.settings.group_interval)
        story.pending.append(item)
        return True

    def due(self, now: float, flush: bool = False) -> tuple[list[Batch], list[Incoming]]:
        """Groups due at ``now`` (all of them with ``flush``): batches to send, items to settle.

        Items to settle are those of a group whose state was sent within
        ``repeat_interval``: they need no message.
        """
        batches: list[Batch] = []
        suppressed: list[Incoming] = []
        for key, story in list(self._stories.items()):
            if not story.pending:
                if story.sent_at is None or now - story.sent_at > self._memory:
                    del self._stories[key]  # nothing left that this memory could change
                continue
            if story.due > now and not flush:
                continue
            items = sorted(story.pending, key=lambda i: i.update)
            story.pending = []
            latest = items[-1]
            story.sent_update = max(story.sent_update, latest.update)
            if (
                story.sent_at is not None
                and latest.state == story.sent_state
                and now - story.sent_at < self.settings.repeat_interval
            ):
                suppressed += items
                continue
            story.sent_at, story.sent_state = now, latest.state
            batches.append(Batch(self, items, self._notification(items)))
        return batches, suppressed

    @property
    def _memory(self) -> float:
        """How long a sent story's state still matters."""
        return max(self.settings.group_interval, self.settings.repeat_interval)

    def next_due(self) -> float | None:
        """When the earliest waiting group falls due, if any waits."""
        return min((s.due for s in self._stories.values() if s.pending), default=None)

    def pending(self) -> int:
        """Alerts waiting in groups."""
        return sum(len(s.pending) for s in self._stories.values())

    def drop(self, predicate: Callable[[Incoming], bool]) -> None:
        """Forget waiting alerts for which ``predicate`` holds (partitions taken away)."""
        for story in self._stories.values():
            story.pending = [i for i in story.pending if not predicate(i)]

    def _notification(self, items: list[Incoming]) -> Notification:
        if items[-1].kind == "article":
            alert = items[-1].alert
            assert isinstance(alert, Alert)
            return Notification.from_article_alert(alert, self.name)
        alerts = [i.alert for i in items]
        return Notification.from_story_alerts(alerts, self.name)  # type: ignore[arg-type]


def read_secret(where: str, env_var: str, path: str, env: Any = None) -> str | None:
    """A secret from an environment variable or a file (never from the config file itself).

    Raises:
        ConfigError: both or a missing one is named; the message names the
            variable or file, never the value.
    """
    env = os.environ if env is None else env
    if env_var and path:
        raise ConfigError(
            f"{where}: give the secret in an environment variable or a file, not both"
        )
    if env_var:
        value = env.get(env_var, "")
        if not value:
            raise ConfigError(f"{where}: environment variable {env_var} is not set or empty")
        return value
    if path:
        try:
            value = open(os.path.expanduser(path), encoding="utf-8").read().strip()  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(
                f"{where}: cannot read the secret file {path}: {exc.strerror}"
            ) from exc
        if not value:
            raise ConfigError(f"{where}: the secret file {path} is empty")
        return value
    return None


#: The shortcut route (--notify-webhook) signs with this variable's secret when it is set.
DEFAULT_WEBHOOK_SECRET_ENV = "NEWSWATCH_WEBHOOK_SECRET"


def build_routes(settings: Settings, env: Any = None) -> list[Route]:
    """The configured routes with their sinks, checked; secrets are read here.

    Raises:
        ConfigError: a route is malformed, names no or several sinks, or a secret
            is missing.
    """
    env = os.environ if env is None else env
    notify = settings.notify
    configured = list(notify.routes)
    if notify.webhook:
        secret_env = DEFAULT_WEBHOOK_SECRET_ENV if env.get(DEFAULT_WEBHOOK_SECRET_ENV) else ""
        configured.append(
            RouteSettings(
                name="webhook", webhook=WebhookSettings(url=notify.webhook, secret_env=secret_env)
            )
        )
    unknown = set(notify.follow) - {"stories", "articles"}
    if unknown or not notify.follow:
        raise ConfigError(
            f"notify.follow must name 'stories' and/or 'articles', not {sorted(unknown) or '[]'}"
        )
    routes: list[Route] = []
    names: set[str] = set()
    for position, route in enumerate(configured, 1):
        sinks = {
            "webhook": bool(route.webhook.url),
            "email": bool(route.email.host),
            "command": bool(route.command.argv),
            "file": bool(route.file.path),
        }
        chosen = [kind for kind, present in sinks.items() if present]
        name = route.name or f"{chosen[0] if chosen else 'route'}-{position}"
        where = f"notify route {name}"
        if len(chosen) != 1:
            raise ConfigError(
                f"{where}: set exactly one sink (webhook.url, email.host, command.argv or "
                f"file.path), not {len(chosen)}"
            )
        if name in names:
            raise ConfigError(f"{where}: two routes have this name")
        names.add(name)
        _check_route(route, where)
        kind = chosen[0]
        if kind == "webhook":
            secret = read_secret(where, route.webhook.secret_env, route.webhook.secret_file, env)
            sink: Sink = WebhookSink(route.webhook, secret, where)
        elif kind == "email":
            password = read_secret(where, route.email.password_env, route.email.password_file, env)
            sink = EmailSink(route.email, password, where)
        elif kind == "command":
            sink = CommandSink(route.command)
        else:
            sink = FileSink(route.file)
        routes.append(Route(route, sink, name))
    return routes


def _check_route(route: RouteSettings, where: str) -> None:
    if not 0 <= route.min_severity <= 4:
        raise ConfigError(f"{where}: min_severity must be 0-4, not {route.min_severity}")
    unknown = set(route.signals) - set(SIGNAL_TYPES)
    if unknown:
        raise ConfigError(
            f"{where}: unknown signal(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(SIGNAL_TYPES)}"
        )
    for name in ("group_wait", "group_interval", "repeat_interval"):
        if getattr(route, name) < 0:
            raise ConfigError(f"{where}: {name} must not be negative")
