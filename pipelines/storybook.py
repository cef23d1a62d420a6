"""Story clustering, independent of any runner: which article joins which story.

Each Taiwan-related article joins the open story it is most similar to, or
starts one. An article and a story are compared as weighted terms (headline
words count `StorySettings.title_weight` times a word of the lead; weights are
inverse document frequencies over labelled pre-2024 news, `story_idf.json`);
the cosine similarity decays with the event-time gap to the story's latest
article (`decay_days`) and must reach `similarity`. Candidates come from an
inverted index of each open story's strongest keywords (`index_terms`), so an
article is compared only with stories that share one of its own strongest
terms, never with all of them. A story idle for `idle_days` of event time goes
dormant: written once more, then evicted. Parameters were chosen by BCubed F1
against stories labelled by hand (see docs/stories.md).

A story alert (`StoryAlert`) is raised when a story first escalates, then only
on a material change against the last alert: severity rises, a new signal type,
the number of outlets passes a step, breaking. Alerts are derived by comparing
the story with its last alerted state, so processing an article twice never
raises a second alert for the same change. Story ids are derived from the first
article, so a replay of the same input gives the same stories.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from newswatch.config import StorySettings
from newswatch.schemas import (
    SIGNAL_TYPES,
    Article,
    Classification,
    Story,
    StoryAlert,
    StoryArticle,
    StoryEvidence,
    parse_ms,
    story_alert_id,
    utc_now,
)

__all__ = [
    "IDF_FILE",
    "StoryBook",
    "StoryChange",
    "Vectorizer",
    "article_time",
    "build_idf_table",
    "material_changes",
    "story_id",
]

logger = logging.getLogger(__name__)


_DAY = 86400.0
IDF_FILE = Path(__file__).with_name("story_idf.json")

_STOPWORDS = frozenset(
    """a an the of to in on for and or but with by from at as is are was were be been being it
    its this that these those after over into about amid says said say will would could may
    might can has have had not no new more than up out off against us he she they we you his
    her their our them who what which when where why how all also just one two three first
    last year years week weeks day days time times news report reports latest live update
    updates video watch""".split()  # noqa: SIM905 - a word list reads better as text
)
_APOSTROPHE = "\u2019"
_WORD = re.compile(f"[A-Za-z][A-Za-z0-9'{_APOSTROPHE}-]+")


def terms(text: str) -> list[str]:
    """Lower-cased content words of ``text``, possessives and plural 's' removed."""
    out = []
    for raw in _WORD.findall(text):
        word = raw.lower().replace(_APOSTROPHE, "'")
        word = re.sub(r"'s$", "", word).strip("'-")
        if len(word) < 3 or word in _STOPWORDS:
            continue
        if len(word) > 4 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(word)
    return out


def document_frequencies(texts: Iterable[str]) -> dict[str, Any]:
    """The IDF table's content: how many of ``texts`` contain each term (terms in two or more)."""
    df: Counter[str] = Counter()
    n = 0
    for text in texts:
        df.update(set(terms(text)))
        n += 1
    return {"documents": n, "df": {t: c for t, c in sorted(df.items()) if c >= 2}}


class Vectorizer:
    """Article text → unit-length weighted terms (TF x IDF)."""

    def __init__(self, settings: StorySettings, table: dict[str, Any] | None = None) -> None:
        if table is None:
            table = json.loads(IDF_FILE.read_text(encoding="utf-8"))
        n = int(table["documents"])
        self._idf = {t: math.log((n + 1) / (c + 1)) + 1.0 for t, c in table["df"].items()}
        self._unseen = math.log(n + 1) + 1.0
        self._title_weight = settings.title_weight
        self._text_chars = settings.text_chars

    def weights(self, title: str, text: str = "") -> dict[str, float]:
        counts: Counter[str] = Counter()
        for term in terms(title):
            counts[term] += self._title_weight
        for term in terms(text[: self._text_chars]):
            counts[term] += 1.0
        return _unit({t: tf * self._idf.get(t, self._unseen) for t, tf in counts.items()})


def _unit(weights: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
    return {t: w / norm for t, w in weights.items()}


def _top(weights: dict[str, float], n: int) -> list[str]:
    """The ``n`` heaviest terms (ties broken by the term, so the choice is deterministic)."""
    return [t for t, _ in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(w * b.get(t, 0.0) for t, w in a.items())


def story_id(first_article_id: str) -> str:
    """A story's id: derived from the id of its first article."""
    return "s-" + hashlib.sha256(f"story|{first_article_id}".encode()).hexdigest()[:14]


def _parse(value: str | None) -> float | None:
    ms = parse_ms(value)
    return None if ms is None else ms / 1000


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def article_time(article: Article) -> float:
    """Event time of an article, in seconds: publication, else ingest time.

    A publication time after the ingest time is a feed's mistake (a wrong time
    zone, a scheduled post): the ingest time is used instead, so no article
    holds the others back waiting for its future.
    """
    ingested = _parse(article.ingested_at)
    published = _parse(article.published)
    if published is not None and (ingested is None or published <= ingested):
        return published
    return ingested if ingested is not None else 0.0


@dataclass
class _Open:
    """A story being built: its record fields plus what matching needs."""

    story_id: str
    members: list[StoryArticle]
    times: list[float]
    keywords: dict[str, float]
    """Un-normalised running sum of member weights, cut to the top `keywords` terms."""
    evidence: list[StoryEvidence]
    status: str
    status_changed: float
    revision: int
    last_alert: StoryAlert | None = None
    ids: set[str] = field(default_factory=set)
    title_weights: list[dict[str, float]] = field(default_factory=list)
    """Headline-only weights of each member, in member order (filled as needed)."""
    headline_weights: list[dict[str, float]] = field(default_factory=list)
    headline_ids: list[str] = field(default_factory=list)

    @property
    def first(self) -> float:
        return min(self.times)

    @property
    def last(self) -> float:
        return max(self.times)


@dataclass(frozen=True, slots=True)
class StoryChange:
    """What one article did to the stories: the story as it now stands, and an alert if due."""

    story: Story
    alert: StoryAlert | None = None


class StoryBook:
    """The open stories of one worker, and the rules that grow, alert and retire them."""

    def __init__(self, settings: StorySettings, vectorizer: Vectorizer | None = None) -> None:
        self.settings = settings
        self._vectorizer = vectorizer or Vectorizer(settings)
        self._open: dict[str, _Open] = {}
        self._index: dict[str, set[str]] = {}
        self._member_of: dict[str, str] = {}
        self.clock = 0.0
        """Latest event time seen, in seconds."""
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._open)

    # ------------------------------------------------------------------ matching
    def _candidates(self, weights: dict[str, float]) -> set[str]:
        """Open stories that share one of the article's strongest terms among their own."""
        found: set[str] = set()
        for term in _top(weights, self.settings.index_terms):
            found |= self._index.get(term, set())
        return found

    def _score(
        self, weights: dict[str, float], headline: dict[str, float], story: _Open, when: float
    ) -> float:
        # A late article (earlier than the story's latest) counts from the story's span.
        gap = max(0.0, when - story.last, story.first - when) / _DAY
        if gap > self.settings.idle_days:
            return 0.0
        similarity = _cosine(weights, _unit(story.keywords))
        if self.settings.headline_link > 0:
            closest = max((_cosine(headline, h) for h in self._headlines(story)), default=0.0)
            similarity = max(similarity, self.settings.headline_link * closest)
        return similarity * math.exp(-gap / self.settings.decay_days)

    def _headlines(self, story: _Open) -> list[dict[str, float]]:
        """Headline-only weights of the story's latest members (cached)."""
        recent = story.members[-self.settings.headline_members :]
        if len(story.headline_weights) != len(recent) or (
            recent and story.headline_ids[-1] != recent[-1].article_id
        ):
            story.headline_weights = [self._vectorizer.weights(m.title) for m in recent]
            story.headline_ids = [m.article_id for m in recent]
        return story.headline_weights

    def match(self, title: str, text: str, when: float) -> tuple[str | None, float]:
        """The open story an article would join (or None) and its similarity."""
        weights = self._vectorizer.weights(title, text)
        headline = self._vectorizer.weights(title)
        best, best_score = None, 0.0
        for sid in sorted(self._candidates(weights)):
            score = self._score(weights, headline, self._open[sid], when)
            if score > best_score:
                best, best_score = sid, score
        if best_score < self.settings.similarity:
            return None, best_score
        return best, best_score

    # ------------------------------------------------------------------ updates
    def add(self, article: Article, result: Classification) -> list[StoryChange]:
        """Put a Taiwan-related article into its story; the changes to write.

        An article already in an open story changes nothing but is answered with
        its story as it stands (and the alert it may still owe), so a record lost
        before its offset was committed is written again.
        """
        when = article_time(article)
        changes = self.evict(when)
        known = self._member_of.get(article.id)
        if known is not None:
            story = self._open[known]
            changes.append(StoryChange(self._record(story), story.last_alert))
            return changes
        weights = self._vectorizer.weights(article.title, article.text)
        sid, _ = self.match(article.title, article.text, when)
        member = StoryArticle(
            article_id=article.id,
            url=article.url,
            title=article.title,
            source=article.source,
            published=_iso(when),
            escalation=bool(result.escalation),
            escalation_score=round(float(result.escalation_score), 4),
            signals=list(result.signals),
            severity=int(result.severity) if result.escalation else 0,
        )
        if sid is None:
            story = _Open(
                story_id=story_id(article.id),
                members=[],
                times=[],
                keywords={},
                evidence=[],
                status="new",
                status_changed=when,
                revision=-1,
            )
            self._open[story.story_id] = story
        else:
            story = self._open[sid]
        self._join(story, member, when, weights, result)
        return [*changes, StoryChange(self._record(story), self._alert(story))]

    def _join(
        self,
        story: _Open,
        member: StoryArticle,
        when: float,
        weights: dict[str, float],
        result: Classification,
    ) -> None:
        self._unindex(story)
        story.members.append(member)
        story.times.append(when)
        story.ids.add(member.article_id)
        self._member_of[member.article_id] = story.story_id
        summed = Counter(story.keywords)
        summed.update(weights)
        top = sorted(summed.items(), key=lambda kv: (-kv[1], kv[0]))[: self.settings.keywords]
        story.keywords = {t: round(w, 6) for t, w in top}
        self._reindex(story)
        if member.escalation:
            story.evidence = self._best_evidence(story.evidence, member, result.evidence)
        status = self._status(story, when)
        if status != story.status:
            story.status, story.status_changed = status, when
        story.revision += 1
        self.clock = max(self.clock, when)

    def _best_evidence(
        self, current: list[StoryEvidence], member: StoryArticle, sentences: Sequence[str]
    ) -> list[StoryEvidence]:
        pool = list(current)
        seen = {e.sentence for e in pool}
        for sentence in list(sentences)[:2]:
            if sentence and sentence not in seen:
                seen.add(sentence)
                pool.append(
                    StoryEvidence(
                        sentence=sentence,
                        article_id=member.article_id,
                        url=member.url,
                        source=member.source,
                        score=member.escalation_score,
                    )
                )
        pool.sort(key=lambda e: -e.score)  # stable: earlier evidence first among equals
        return pool[: self.settings.max_evidence]

    def _status(self, story: _Open, when: float) -> str:
        if self._breaking(story, when):
            return "breaking"
        if any(m.escalation for m in story.members):
            return "escalated"
        return "growing" if len(story.members) > 1 else "new"

    def _breaking(self, story: _Open, when: float) -> bool:
        window = self.settings.breaking_hours * 3600
        recent = {
            m.source
            for m, t in zip(story.members, story.times, strict=True)
            if when - window <= t <= when
        }
        return len(recent) >= self.settings.breaking_outlets

    # ------------------------------------------------------------------ alerts
    def _alert(self, story: _Open) -> StoryAlert | None:
        current = self._record(story)
        if not current.escalation:
            return None
        last = story.last_alert
        if last is None:
            reasons = ["escalated"] + (["breaking"] if current.status == "breaking" else [])
            update = 0
        else:
            reasons = material_changes(last.story, current, self.settings.outlet_steps)
            if not reasons:
                return None
            update = last.update + 1
        story.last_alert = StoryAlert(
            alert_id=story_alert_id(story.story_id, update),
            story_id=story.story_id,
            update=update,
            reasons=reasons,
            story=current,
            alerted_at=utc_now(),
        )
        return story.last_alert

    # ------------------------------------------------------------------ records
    def _record(self, story: _Open) -> Story:
        counts = Counter(s for m in story.members for s in m.signals)
        escalated = [m for m in story.members if m.escalation]
        return Story(
            story_id=story.story_id,
            headline=self._headline(story),
            first_seen=_iso(story.first),
            last_seen=_iso(story.last),
            articles=list(story.members),
            outlets=len({m.source for m in story.members}),
            escalation=bool(escalated),
            max_score=max((m.escalation_score for m in story.members), default=0.0),
            signals={s: counts[s] for s in SIGNAL_TYPES if counts[s]},
            severity=max((m.severity for m in escalated), default=0),
            evidence=list(story.evidence),
            status=story.status,
            status_changed_at=_iso(story.status_changed),
            updated_at=_iso(story.last),
            revision=max(story.revision, 0),
            keywords=dict(story.keywords),
        )

    def _headline(self, story: _Open) -> str:
        """The member title closest to the story's keywords (the earliest among equals)."""
        centre = _unit(story.keywords)
        for member in story.members[len(story.title_weights) :]:
            story.title_weights.append(self._vectorizer.weights(member.title))
        best, best_score = story.members[0].title, -1.0
        for member, weights in zip(story.members, story.title_weights, strict=True):
            score = _cosine(weights, centre)
            if score > best_score + 1e-9:
                best, best_score = member.title, score
        return best

    # ------------------------------------------------------------------ lifetime
    def evict(self, now: float) -> list[StoryChange]:
        """Retire stories idle for ``idle_days`` before ``now``; their dormant records."""
        self.clock = max(self.clock, now)
        limit = self.clock - (self.settings.idle_days + self.settings.late_days) * _DAY
        changes = []
        for sid in [s for s, story in self._open.items() if story.last < limit]:
            story = self._open.pop(sid)
            self._unindex(story)
            for article in story.ids:
                self._member_of.pop(article, None)
            story.status, story.status_changed = "dormant", self.clock
            story.revision += 1
            changes.append(StoryChange(self._record(story)))
        return changes

    def _unindex(self, story: _Open) -> None:
        for term in _top(story.keywords, self.settings.index_terms):
            holders = self._index.get(term)
            if holders is not None:
                holders.discard(story.story_id)
                if not holders:
                    del self._index[term]

    def _reindex(self, story: _Open) -> None:
        for term in _top(story.keywords, self.settings.index_terms):
            self._index.setdefault(term, set()).add(story.story_id)

    def recover(self, stories: Iterable[Story], alerts: Iterable[StoryAlert] = ()) -> int:
        """Rebuild the open stories from their latest records and last alerts; how many."""
        last_alert: dict[str, StoryAlert] = {}
        for alert in alerts:
            held = last_alert.get(alert.story_id)
            if held is None or alert.update >= held.update:
                last_alert[alert.story_id] = alert
        latest: dict[str, Story] = {}
        for story in stories:
            held = latest.get(story.story_id)
            if held is None or story.revision >= held.revision:
                latest[story.story_id] = story
        for record in latest.values():
            if record.status == "dormant" or not record.articles:
                continue
            story = _Open(
                story_id=record.story_id,
                members=list(record.articles),
                times=[_parse(m.published) or 0.0 for m in record.articles],
                keywords=dict(record.keywords),
                evidence=list(record.evidence),
                status=record.status,
                status_changed=_parse(record.status_changed_at) or 0.0,
                revision=record.revision,
                last_alert=last_alert.get(record.story_id),
                ids={m.article_id for m in record.articles},
            )
            self._open[story.story_id] = story
            for article in story.ids:
                self._member_of[article] = story.story_id
            self._reindex(story)
            self.clock = max(self.clock, story.last)
        return len(self._open)


def material_changes(before: Story, now: Story, outlet_steps: Sequence[int]) -> list[str]:
    """Why ``now`` deserves a story alert after ``before`` was alerted (empty: it does not)."""
    reasons = []
    if now.severity > before.severity:
        reasons.append(f"severity {before.severity}→{now.severity}")
    added = [s for s in now.signals if s not in before.signals]
    if added:
        reasons.append("new signal: " + ", ".join(added))
    passed = [s for s in outlet_steps if before.outlets < s <= now.outlets]
    if passed:
        reasons.append(f"outlets {before.outlets}→{now.outlets}")
    if now.status == "breaking" and before.status != "breaking":
        reasons.append("breaking")
    return reasons


def build_idf_table(paths: Sequence[Path], out: Path = IDF_FILE) -> dict[str, Any]:
    """Write the IDF table from labelled rows published before 2024 (title and lead)."""
    settings = StorySettings()
    texts = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                if str(row.get("published", "")) < "2024":
                    lead = str(row.get("summary", ""))[: settings.text_chars]
                    texts.append(f"{row['title']} {lead}")
    table = document_frequencies(texts)
    out.write_text(json.dumps(table, ensure_ascii=False, separators=(",", ":")) + "\n", "utf-8")
    return table


if __name__ == "__main__":  # python -m pipelines.storybook LABELLED.jsonl... (rebuilds the table)
    import sys

    built = build_idf_table([Path(p) for p in sys.argv[1:]])
    print(f"{IDF_FILE}: {built['documents']} documents, {len(built['df'])} terms")
