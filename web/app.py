"""The web application of ``newswatch serve``: a live page of stories and alerts.

Pages (server-rendered Jinja2, every value autoescaped; the only script is
``static/live.js``, which applies server-sent events to the open page):

- ``/``: stories (status, headline, outlets, signals, severity, score, last
  update, best evidence) and article alerts, updated live over ``/events``;
- ``/stories/{id}``, ``/alerts/{id}``: articles, evidence highlighted in the
  article's text, the story's revisions and alerts;
- ``/index``: the escalation index over time (inline SVG);
- ``/feeds``: feed health from the connectors' checkpoints;
- ``/dead-letters``: counts by stage, reasons and payload previews;
- ``/reports``: backtest reports of ``newswatch replay --report``;
- ``/metrics`` (Prometheus), ``/healthz`` (alive), ``/readyz`` (broker reachable,
  topic reader running, pipeline lag below ``serve.max_lag``).

`Services` holds what the pages read: `LiveState` fed by a `TopicReader`, a
`BrokerMonitor`, an `ArticleLookup`; `create_app` starts and stops them with the
application.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newswatch import metrics
from newswatch.access import OPEN_PATHS, Credentials
from newswatch.config import Settings
from newswatch.health import BrokerMonitor
from newswatch.schemas import SIGNAL_TYPES, Alert, parse_seconds
from web.articles import ArticleLookup, in_context
from web.charts import history_chart, index_chart
from web.feeds import feed_health
from web.live import Change, LiveState, StoryEntry, TopicReader
from web.reports import list_reports, report_file

__all__ = ["Services", "create_app"]

logger = logging.getLogger(__name__)

#: Rows of each list on the live page (the state may hold more).
PAGE_ROWS = 200
#: Evidence sentences looked up in their article's text per page.
MAX_EVIDENCE_LOOKUPS = 6
#: Bytes of a dead letter's payload shown.
PREVIEW_BYTES = 600

SEVERITY_NAMES = {
    0: "none",
    1: "words",
    2: "coercion",
    3: "major military",
    4: "use of force",
}

#: Every page: scripts and styles only from this server, no framing, no plugins.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
#: Backtest reports are self-contained pages with inline CSS and data-URI images.
REPORT_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; frame-ancestors 'self'"
)
_SECURITY_HEADERS = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)


@dataclass
class Services:
    """What the pages read, started and stopped with the application."""

    settings: Settings
    state: LiveState
    reader: TopicReader
    monitor: BrokerMonitor
    lookup: ArticleLookup

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        state = LiveState.from_settings(settings)
        reader = TopicReader(settings, state)
        return cls(
            settings=settings,
            state=state,
            reader=reader,
            monitor=BrokerMonitor(settings, running=reader.running),
            lookup=ArticleLookup(settings),
        )

    def start(self) -> None:
        self.reader.start()
        self.monitor.start()

    def stop(self) -> None:
        self.reader.stop()
        self.monitor.stop()
        self.lookup.close()


class _Hub:
    """Wakes the live streams when the reader thread has applied changes."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event = asyncio.Event()
        self.closing = False

    def wake_from_thread(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake)

    def wake(self) -> None:
        event, self.event = self.event, asyncio.Event()
        event.set()

    def close(self) -> None:
        self.closing = True
        self.wake_from_thread()


# -- formatting ------------------------------------------------------------------------


def _when(value: str | float | None) -> str:
    if value is None or value == "":
        return "-"
    seconds = value if isinstance(value, float | int) else parse_seconds(value)
    if seconds is None:
        return str(value)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _safe_url(url: str | None) -> str:
    """The URL if it is http(s), else '' (no javascript: or data: links from feeds)."""
    if not url or not isinstance(url, str):
        return ""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ""
    return url.strip() if parts.scheme.lower() in ("http", "https") and parts.netloc else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _preview(payload_b64: str, limit: int = PREVIEW_BYTES) -> str:
    """The start of a payload as text; bytes that are not UTF-8 and controls as escapes."""
    try:
        raw = base64.b64decode(payload_b64 or "", validate=False)
    except (binascii.Error, ValueError):
        return "(payload is not valid base64)"
    text = raw[:limit].decode("utf-8", "backslashreplace")
    text = "".join(
        c if c in "\n\t" or (c.isprintable() and c not in "\u2028\u2029") else repr(c)[1:-1]
        for c in text
    )
    return text + ("…" if len(raw) > limit else "")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when,
        safe_url=_safe_url,
        duration=_duration,
        severity_name=lambda n: SEVERITY_NAMES.get(n, str(n)),
        score=lambda v: f"{float(v or 0.0):.2f}",
    )
    env.globals.update(SIGNAL_TYPES=SIGNAL_TYPES)
    return env


# -- the application --------------------------------------------------------------------


class _Guard:
    """Credentials on every path but the probes, and security headers on every response."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] not in OPEN_PATHS:
            authorization = dict(scope.get("headers") or []).get(b"authorization")
            given = authorization.decode("latin-1") if authorization else None
            if not self.credentials.allows(given):
                response = PlainTextResponse(
                    "credentials required\n",
                    401,
                    headers={"WWW-Authenticate": 'Basic realm="newswatch"'},
                )
                await response(scope, receive, send)
                return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS:
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_secured)


def create_app(services: Services, credentials: Credentials) -> ASGIApp:
    """The ASGI application over ``services`` (started and stopped with it)."""
    env = _environment()
    hub = _Hub()
    settings = services.settings
    state = services.state

    def broker_view() -> dict[str, Any] | None:
        check = services.monitor.latest
        if check is None:
            return None
        return {
            "ok": check.reachable,
            "lag": check.total_lag,
            "detail": check.servers if check.reachable else f"{check.servers}: {check.error}",
        }

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.update(request=request, path=request.url.path, broker=broker_view())
        return HTMLResponse(env.get_template(name).render(context), status_code=status)

    def fragment(name: str, **context: Any) -> str:
        return env.get_template(name).render(context)

    def summary_context() -> dict[str, Any]:
        return {"summary": state.summary(), "reader_missing": services.reader.missing}

    def recent_chart(hours: int = 48) -> Markup:
        buckets = state.index.buckets("hour")[-hours:]
        return index_chart(buckets, "hour")

    async def home(request: Request) -> Response:
        with state.lock:
            seq = state.seq
            stories = state.story_entries()
            alerts = state.alert_list()
        return page(
            request,
            "index.html",
            seq=seq,
            stories=stories[:PAGE_ROWS],
            story_count=len(stories),
            alerts=alerts[:PAGE_ROWS],
            alert_count=len(alerts),
            chart=recent_chart(),
            rows=PAGE_ROWS,
            **summary_context(),
        )

    def render_change(change: Change) -> str | None:
        if change.kind == "story":
            entry = state.stories.get(change.key)
            if entry is None:
                return None
            data = {
                "id": f"story-{change.key}",
                "html": fragment("_story_row.html", entry=entry),
            }
        elif change.kind == "alert":
            alert = state.alerts.get(change.key)
            if alert is None:
                return None
            data = {"id": f"alert-{change.key}", "html": fragment("_alert_row.html", alert=alert)}
        elif change.kind == "summary":
            data = {"html": fragment("_summary.html", **summary_context())}
        elif change.kind == "remove":
            data = {"id": change.key}
        else:
            data = {}
        return f"id: {change.seq}\nevent: {change.kind}\ndata: {json.dumps(data)}\n\n"

    async def events(request: Request) -> Response:
        given = request.headers.get("last-event-id") or request.query_params.get("since")
        try:
            since = int(given) if given is not None else state.seq
        except ValueError:
            since = state.seq

        async def stream() -> AsyncIterator[str]:
            last = since
            shown: Any = "unsent"
            yield "retry: 3000\n\n"
            while not hub.closing:
                wake = hub.event
                broker = broker_view()
                if broker != shown:
                    shown = broker
                    html = fragment("_broker.html", broker=broker)
                    yield f"event: broker\ndata: {json.dumps({'html': html})}\n\n"
                changes = state.changes_since(last)
                if changes is None:
                    last = state.seq
                    yield f"id: {last}\nevent: reload\ndata: {{}}\n\n"
                    continue
                for change in changes:
                    with state.lock:
                        message = render_change(change)
                    last = change.seq
                    if message:
                        yield message
                try:
                    await asyncio.wait_for(wake.wait(), timeout=settings.serve.refresh)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield ": keep-alive\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def chart_fragment(request: Request) -> Response:
        return HTMLResponse(str(recent_chart()))

    async def evidence_passages(
        sentences: list[tuple[str, str, str, str, float | None]],
    ) -> list[dict[str, Any]]:
        """(sentence, article id, source, url, around) → passages with the sentence marked."""
        out = []
        for i, (sentence, article_id, source, url, around) in enumerate(sentences):
            article = None
            if article_id and i < MAX_EVIDENCE_LOOKUPS:
                article = await run_in_threadpool(services.lookup.find, article_id, around)
            passages = []
            title = ""
            if article is not None:
                title = article.title
                passages = in_context(article.text, [sentence]) or in_context(
                    article.title, [sentence]
                )
            out.append(
                {
                    "sentence": sentence,
                    "source": source,
                    "url": url,
                    "title": title,
                    "passages": passages,
                    "found": article is not None,
                }
            )
        return out

    def around(article_id: str, fallback: str | None = None) -> float | None:
        """When the article's record was written, as near as the state knows."""
        alert_id = state.alerts_by_article.get(article_id)
        if alert_id and alert_id in state.alerts:
            return parse_seconds(state.alerts[alert_id].ingested_at)
        decided = state.index.decided_at.get(article_id)
        return decided if decided is not None else parse_seconds(fallback)

    async def story_page(request: Request) -> Response:
        story_id = request.path_params["story_id"]
        with state.lock:
            entry: StoryEntry | None = state.stories.get(story_id)
            if entry is not None:
                entry = StoryEntry(entry.story, list(entry.history), list(entry.alerts))
        if entry is None:
            return page(request, "missing.html", 404, what="story", key=story_id)
        story = entry.story
        published = {a.article_id: a.published for a in story.articles}
        with state.lock:
            wanted = [
                (
                    e.sentence,
                    e.article_id,
                    e.source,
                    e.url,
                    around(e.article_id, published.get(e.article_id)),
                )
                for e in story.evidence
            ]
        evidence = await evidence_passages(wanted)
        return page(
            request,
            "story.html",
            entry=entry,
            story=story,
            evidence=evidence,
            chart=history_chart(entry.history),
        )

    async def alert_page(request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        with state.lock:
            alert: Alert | None = state.alerts.get(alert_id)
            stories = (
                [
                    e.story
                    for e in state.stories.values()
                    if any(a.article_id == alert.article_id for a in e.story.articles)
                ]
                if alert is not None
                else []
            )
        if alert is None:
            return page(request, "missing.html", 404, what="alert", key=alert_id)
        when = parse_seconds(alert.ingested_at)
        evidence = await evidence_passages(
            [(s, alert.article_id, alert.source, alert.url, when) for s in alert.evidence]
        )
        return page(request, "alert.html", alert=alert, evidence=evidence, stories=stories)

    async def index_page(request: Request) -> Response:
        resolution = "day" if request.query_params.get("resolution") == "day" else "hour"
        with state.lock:
            buckets = state.index.buckets(resolution)
        return page(
            request,
            "index_chart.html",
            resolution=resolution,
            chart=index_chart(buckets, resolution),
            buckets=[b for b in reversed(buckets) if b.articles],
            hours=settings.serve.history_hours,
        )

    async def feeds_page(request: Request) -> Response:
        feeds, folders = await run_in_threadpool(feed_health, settings.connectors.state_dir)
        return page(
            request,
            "feeds.html",
            feeds=feeds,
            folders=folders,
            state_dir=str(settings.connectors.state_dir),
        )

    async def dead_letters_page(request: Request) -> Response:
        stage = request.query_params.get("stage") or None
        with state.lock:
            counts = sorted(state.dead_by_stage.items(), key=lambda kv: (-kv[1], kv[0]))
        entries = state.dead_letter_list(stage)
        return page(
            request,
            "dead_letters.html",
            stage=stage,
            counts=counts,
            entries=[(e, _preview(e.letter.payload_b64)) for e in entries],
            held=settings.serve.max_dead_letters,
        )

    async def reports_page(request: Request) -> Response:
        reports = await run_in_threadpool(list_reports, settings.serve.reports_dir)
        return page(
            request, "reports.html", reports=reports, reports_dir=str(settings.serve.reports_dir)
        )

    async def report_redirect(request: Request) -> Response:
        return RedirectResponse(f"/reports/{request.path_params['name']}/report.html")

    async def report_asset(request: Request) -> Response:
        found = report_file(
            settings.serve.reports_dir,
            request.path_params["name"],
            request.path_params["filename"],
        )
        if found is None:
            return PlainTextResponse("no such report file\n", 404)
        path, media_type = found
        return FileResponse(
            path, media_type=media_type, headers={"content-security-policy": REPORT_CSP}
        )

    async def metrics_endpoint(request: Request) -> Response:
        state.summary()  # refreshes the held-items gauges
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        readiness = services.monitor.readiness()
        return Response(
            readiness.to_json(),
            status_code=200 if readiness.ready else 503,
            media_type="application/json",
        )

    async def favicon(request: Request) -> Response:
        return RedirectResponse("/static/favicon.svg", 301)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hub.loop = asyncio.get_running_loop()
        state.add_listener(hub.wake_from_thread)
        services.start()
        try:
            yield
        finally:
            hub.close()
            await run_in_threadpool(services.stop)

    routes = [
        Route("/", home),
        Route("/events", events),
        Route("/fragments/index-chart", chart_fragment),
        Route("/stories/{story_id}", story_page),
        Route("/alerts/{alert_id}", alert_page),
        Route("/index", index_page),
        Route("/feeds", feeds_page),
        Route("/dead-letters", dead_letters_page),
        Route("/reports", reports_page),
        Route("/reports/{name}/", report_redirect),
        Route("/reports/{name}/{filename}", report_asset),
        Route("/metrics", metrics_endpoint),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/favicon.ico", favicon),
        Mount("/static", StaticFiles(packages=[("web", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.hub = hub
    return _Guard(app, credentials)


def close_streams(app: Any) -> Callable[[], None]:
    """A callable that ends the live streams (for a server's shutdown)."""
    inner = getattr(app, "app", app)
    return inner.state.hub.close
