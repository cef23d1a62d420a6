"""What a notification says, in every format a sink sends.

A `Notification` is built from the story alerts a route folded together (the
latest one gives the story's state, all of them their reasons) or from one
article alert. It renders as:

- `Notification.body`: the webhook JSON (every field, keys sorted, so the same
  notification is the same bytes, and the same signature, when re-delivered);
- `Notification.slack_body`: a Slack/Mattermost ``{"text": ...}`` message;
- `Notification.subject`, `plain_text`, `html`: an e-mail (HTML escaped by
  Jinja2's autoescape: every field comes from a feed);
- `one_line`: the line ``newswatch run`` prints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import jinja2

from newswatch.schemas import SCHEMA_VERSION, SIGNAL_TYPES, Alert, StoryAlert

__all__ = ["Evidence", "Notification", "one_line"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _web_url(url: str | None) -> str:
    """``url`` if it is an http(s) URL, else '' (no javascript: or data: links in a message)."""
    url = _clean(url)
    return url if url.lower().startswith(("http://", "https://")) else ""


def _clean(text: str | None, limit: int = 0) -> str:
    """One line: control characters and line breaks become spaces; cut to ``limit``."""
    text = " ".join(_CONTROL.sub(" ", text or "").split())
    if limit and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


@dataclass(frozen=True, slots=True)
class Evidence:
    """An evidence sentence and where it comes from."""

    sentence: str
    source: str
    url: str
    score: float


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to people about a story (or an article alert), as a route sends it."""

    kind: str
    """'story' or 'article'."""
    alert_id: str
    """The alert id of the latest alert folded in: the idempotency key."""
    story_id: str | None
    """The story (None for an article alert)."""
    update: int
    """The latest update folded in (0: the story's first escalation)."""
    updates: list[int]
    """Every update folded into this notification, oldest first."""
    reasons: list[str]
    """Why, over all folded alerts, e.g. ['escalated', 'severity 2→3']."""
    status: str
    """The story's status ('alert' for an article alert)."""
    headline: str
    severity: int
    score: float
    """Highest escalation score of the story's articles."""
    signals: list[str]
    """Signal types present, in canonical order."""
    signal_counts: dict[str, int]
    """Signal type → number of articles carrying it."""
    outlets: int
    """Distinct outlets covering the story."""
    sources: list[str]
    """Their names, in the order they joined."""
    articles: int
    """Articles in the story."""
    evidence: list[Evidence]
    """The best evidence sentences, best first."""
    links: list[str]
    """Article URLs, in the order they joined."""
    first_seen: str | None
    last_seen: str | None
    alerted_at: str
    route: str
    """The route that sent it."""
    schema_version: int = field(default=SCHEMA_VERSION)

    @classmethod
    def from_story_alerts(cls, alerts: Sequence[StoryAlert], route: str) -> Notification:
        """The notification of ``alerts`` of one story, oldest first, folded together."""
        latest = alerts[-1]
        story = latest.story
        reasons: list[str] = []
        for alert in alerts:
            reasons += [r for r in alert.reasons if r not in reasons]
        sources: list[str] = []
        links: list[str] = []
        for article in story.articles:
            if article.source and article.source not in sources:
                sources.append(article.source)
            if article.url and article.url not in links:
                links.append(article.url)
        counts = {s: int(n) for s, n in story.signals.items() if n}
        return cls(
            kind="story",
            alert_id=latest.alert_id,
            story_id=latest.story_id,
            update=latest.update,
            updates=[a.update for a in alerts],
            reasons=reasons,
            status=story.status,
            headline=story.headline,
            severity=story.severity,
            score=round(float(story.max_score), 4),
            signals=[s for s in SIGNAL_TYPES if s in counts]
            + sorted(set(counts) - set(SIGNAL_TYPES)),
            signal_counts=counts,
            outlets=story.outlets,
            sources=sources,
            articles=len(story.articles),
            evidence=[
                Evidence(e.sentence, e.source, e.url, round(e.score, 4)) for e in story.evidence
            ],
            links=links,
            first_seen=story.first_seen,
            last_seen=story.last_seen,
            alerted_at=latest.alerted_at,
            route=route,
        )

    @classmethod
    def from_article_alert(cls, alert: Alert, route: str) -> Notification:
        """The notification of one article alert."""
        return cls(
            kind="article",
            alert_id=alert.alert_id,
            story_id=None,
            update=0,
            updates=[0],
            reasons=["escalation"],
            status="alert",
            headline=alert.title,
            severity=alert.severity,
            score=round(float(alert.escalation_score), 4),
            signals=list(alert.signals),
            signal_counts={s: 1 for s in alert.signals},
            outlets=1,
            sources=[alert.source] if alert.source else [],
            articles=1,
            evidence=[
                Evidence(s, alert.source, alert.url, round(alert.escalation_score, 4))
                for s in alert.evidence
            ],
            links=[alert.url] if alert.url else [],
            first_seen=alert.published,
            last_seen=alert.published,
            alerted_at=alert.alerted_at,
            route=route,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def body(self) -> bytes:
        """The webhook JSON body: UTF-8, keys sorted, no insignificant whitespace."""
        return json.dumps(
            self.to_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")

    @property
    def label(self) -> str:
        """'NEW' for a story's first alert, else 'UPDATE n'; 'ALERT' for an article."""
        if self.kind == "article":
            return "ALERT"
        return "NEW" if self.update == 0 else f"UPDATE {self.update}"

    @property
    def subject(self) -> str:
        """An e-mail subject line (one line, whatever the headline holds)."""
        return _clean(
            f"{self.status.upper()} {self.label.lower()} · severity {self.severity}: "
            f"{self.headline}",
            200,
        )

    @property
    def slack_body(self) -> bytes:
        """A Slack/Mattermost incoming-webhook message: ``{"text": ...}`` in their markup."""

        def esc(text: str) -> str:
            return _clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

        headline = esc(self.headline) or "(no headline)"
        link = _web_url(self.links[0] if self.links else "")
        if link:
            headline = f"<{esc(link).replace('|', '%7C')}|{headline}>"
        lines = [
            f"*{esc(self.status.upper())}* {esc(self.label.lower())}: {headline}",
            f"severity {self.severity} · score {self.score:.2f} · {self.outlets} outlets · "
            f"{esc(', '.join(self.signals)) or 'no signal'}"
            + (f" · {esc('; '.join(self.reasons))}" if self.reasons else ""),
        ]
        lines += [f"> {esc(e.sentence)} ({esc(e.source)})" for e in self.evidence[:3]]
        text = "\n".join(lines)
        return json.dumps({"text": text}, ensure_ascii=False, sort_keys=True).encode("utf-8")

    def plain_text(self) -> str:
        return _TEMPLATES.get_template("text").render(n=self, clean=_clean)

    def html(self) -> str:
        return _TEMPLATES.get_template("html").render(n=self, clean=_clean)


def one_line(alert: StoryAlert) -> str:
    """A story alert as ``newswatch run`` prints it: time, status, headline, outlets, signals,
    severity, score, one evidence sentence, link."""
    n = Notification.from_story_alerts([alert], route="")
    when = (n.alerted_at or "")[:19].replace("T", " ")
    evidence = f'"{_clean(n.evidence[0].sentence, 160)}"' if n.evidence else "no evidence"
    parts = [
        f"{when}Z {n.status.upper()} {n.label.lower()}: {_clean(n.headline, 140)}",
        f"{n.outlets} outlet{'s' if n.outlets != 1 else ''}",
        ", ".join(n.signals) or "no signal",
        f"severity {n.severity}",
        f"score {n.score:.2f}",
        evidence,
        n.links[0] if n.links else "no link",
    ]
    return " | ".join(parts)


_TEXT = """\
{{ n.status | upper }} {{ n.label | lower }}: {{ clean(n.headline) }}

Severity {{ n.severity }} · score {{ '%.2f' % n.score }} · {{ n.outlets }} outlets \
· {{ n.articles }} articles
Signals: {{ n.signals | join(', ') or 'none' }}
{% if n.reasons %}Why: {{ n.reasons | join('; ') }}
{% endif %}
{% if n.evidence %}Evidence:
{% for e in n.evidence %}- "{{ clean(e.sentence) }}" ({{ clean(e.source) }}\
{% if e.url %}, {{ e.url }}{% endif %})
{% endfor %}{% endif %}
{% if n.links %}Links:
{% for link in n.links %}- {{ link }}
{% endfor %}{% endif %}
Sources: {{ n.sources | join(', ') or 'unknown' }}
First seen {{ n.first_seen or 'unknown' }}, last seen {{ n.last_seen or 'unknown' }}.
Alert {{ n.alert_id }}{% if n.story_id %}, story {{ n.story_id }}{% endif %}, \
route {{ n.route }}.
"""

_HTML = """\
<!doctype html>
<html><body style="font-family: sans-serif">
<p><strong>{{ n.status | upper }}</strong> {{ n.label | lower }}</p>
<h2>{% if n.links and n.links[0] | web %}<a href="{{ n.links[0] | web }}">\
{{ clean(n.headline) }}</a>{% else %}{{ clean(n.headline) }}{% endif %}</h2>
<p>Severity <strong>{{ n.severity }}</strong> · score {{ '%.2f' % n.score }} ·
{{ n.outlets }} outlets · {{ n.articles }} articles</p>
<p>Signals: {{ n.signals | join(', ') or 'none' }}</p>
{% if n.reasons %}<p>Why: {{ n.reasons | join('; ') }}</p>{% endif %}
{% if n.evidence %}<h3>Evidence</h3><ul>
{% for e in n.evidence %}<li><q>{{ clean(e.sentence) }}</q>
({% if e.url | web %}<a href="{{ e.url | web }}">{{ clean(e.source) or 'source' }}</a>\
{% else %}{{ clean(e.source) }}{% endif %})</li>
{% endfor %}</ul>{% endif %}
{% if n.links %}<h3>Links</h3><ul>
{% for link in n.links %}<li>{% if link | web %}<a href="{{ link | web }}">{{ link }}</a>\
{% else %}{{ link }}{% endif %}</li>
{% endfor %}</ul>{% endif %}
<p>Sources: {{ n.sources | join(', ') or 'unknown' }}.
First seen {{ n.first_seen or 'unknown' }}, last seen {{ n.last_seen or 'unknown' }}.</p>
<p style="color: #666">Alert {{ n.alert_id }}{% if n.story_id %}, story {{ n.story_id }}\
{% endif %}, route {{ n.route }}.</p>
</body></html>
"""

#: Plain text is not escaped; in HTML every value is.
_TEMPLATES = jinja2.Environment(
    loader=jinja2.DictLoader({"text": _TEXT, "html": _HTML}),
    autoescape=lambda name: name == "html",
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)
_TEMPLATES.filters["web"] = _web_url
