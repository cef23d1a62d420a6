"""Charts as inline SVG, drawn on the server: no chart library, no script.

Every text inside is escaped; each bar carries a ``<title>``, which browsers show
as a tooltip.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

from web.live import Bucket, Revision

__all__ = ["history_chart", "index_chart"]

_ARTICLES = "#b8c4d0"
_ALERTS = "#c0392b"
_SCORE = "#1f5fa8"
_SEVERITY = "#d35400"


def _when(seconds: float, resolution: str) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%d" if resolution == "day" else "%Y-%m-%d %H:00 UTC")


def index_chart(
    buckets: Sequence[Bucket], resolution: str = "hour", width: int = 960, height: int = 240
) -> Markup:
    """Articles (grey) and alerts (red) per bucket, mean escalation score (blue line, 0-1)."""
    left, right, top, bottom = 44, 40, 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((b.articles for b in buckets), default=0) or 1
    n = max(len(buckets), 1)
    step = plot_w / n
    bar = max(step * 0.8, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="Escalation index per {resolution}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafbfc" '
        'stroke="#dde3ea"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - fraction)
        count = peak * fraction
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6ebf0"/>'
            f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" class="axis score">'
            f"{fraction:.1f}</text>"
        )
        if count == int(count):  # whole numbers of articles only
            parts.append(
                f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
                f"{count:.0f}</text>"
            )
    line: list[str] = []
    label_every = max(1, n // 8)
    for i, b in enumerate(buckets):
        x = left + i * step + (step - bar) / 2
        h_all = plot_h * b.articles / peak
        h_alert = plot_h * b.alerts / peak
        signals = ", ".join(f"{k} {v}" for k, v in sorted(b.signals.items()) if v > 0)
        tip = escape(
            f"{_when(b.start, resolution)}: {b.articles} articles, {b.alerts} alerts, "
            f"mean score {b.score_mean:.2f}" + (f"; {signals}" if signals else "")
        )
        parts.append(
            f'<g><title>{tip}</title><rect x="{x:.1f}" y="{top + plot_h - h_all:.1f}" '
            f'width="{bar:.1f}" height="{h_all:.1f}" fill="{_ARTICLES}"/>'
            f'<rect x="{x:.1f}" y="{top + plot_h - h_alert:.1f}" width="{bar:.1f}" '
            f'height="{h_alert:.1f}" fill="{_ALERTS}"/></g>'
        )
        if b.articles:
            cx = x + bar / 2
            line.append(f"{cx:.1f},{top + plot_h * (1 - b.score_mean):.1f}")
        if i % label_every == 0 and x < left + plot_w - 50:  # no label cut at the edge
            label = datetime.fromtimestamp(b.start, UTC).strftime(
                "%b %d" if resolution == "day" or label_every >= 24 else "%d %H:00"
            )
            parts.append(
                f'<text x="{x:.1f}" y="{height - bottom + 16}" class="axis">{escape(label)}</text>'
            )
    if not any(b.articles for b in buckets):
        parts.append(
            f'<text x="{left + plot_w / 2:.0f}" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
            'class="axis">no classified articles in this span yet</text>'
        )
    if len(line) > 1:
        parts.append(
            f'<polyline points="{" ".join(line)}" fill="none" stroke="{_SCORE}" '
            'stroke-width="1.5"/>'
        )
    elif line:
        x, y = line[0].split(",")
        parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{_SCORE}"/>')
    legend_y = height - 6
    parts.append(
        f'<g class="legend"><rect x="{left}" y="{legend_y - 9}" width="10" height="10" '
        f'fill="{_ARTICLES}"/><text x="{left + 14}" y="{legend_y}">articles</text>'
        f'<rect x="{left + 80}" y="{legend_y - 9}" width="10" height="10" fill="{_ALERTS}"/>'
        f'<text x="{left + 94}" y="{legend_y}">alerts</text>'
        f'<line x1="{left + 145}" x2="{left + 165}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
        f'stroke="{_SCORE}" stroke-width="2"/>'
        f'<text x="{left + 170}" y="{legend_y}">mean escalation score (right axis)</text></g>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def history_chart(revisions: Sequence[Revision], width: int = 480, height: int = 120) -> Markup:
    """A story's severity (0-4, orange steps) and top score (0-1, blue) over its revisions."""
    if not revisions:
        return Markup("")
    left, right, top, bottom = 28, 28, 8, 18
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(revisions)
    x_of = (lambda i: left + plot_w / 2) if n == 1 else (lambda i: left + plot_w * i / (n - 1))
    severity = " ".join(
        f"{x_of(i):.1f},{top + plot_h * (1 - r.severity / 4):.1f}" for i, r in enumerate(revisions)
    )
    score = " ".join(
        f"{x_of(i):.1f},{top + plot_h * (1 - r.max_score):.1f}" for i, r in enumerate(revisions)
    )
    dots = []
    for i, r in enumerate(revisions):
        tip = escape(
            f"revision {r.revision}: {r.status}, severity {r.severity}, score {r.max_score:.2f}"
        )
        dots.append(
            f'<circle cx="{x_of(i):.1f}" cy="{top + plot_h * (1 - r.max_score):.1f}" r="2" '
            f'fill="{_SCORE}"/>'
            f'<circle cx="{x_of(i):.1f}" cy="{top + plot_h * (1 - r.severity / 4):.1f}" r="3" '
            f'fill="{_SEVERITY}"><title>{tip}</title></circle>'
        )
    return Markup(
        f'<svg class="chart small" viewBox="0 0 {width} {height}" width="{width}" role="img" '
        'aria-label="Severity and score over revisions" xmlns="http://www.w3.org/2000/svg">'
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafbfc" '
        'stroke="#dde3ea"/>'
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="axis">4</text>'
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" class="axis">0</text>'
        f'<text x="{left + plot_w + 4}" y="{top + 8}" class="axis score">1.0</text>'
        f'<polyline points="{score}" fill="none" stroke="{_SCORE}" stroke-width="1.5"/>'
        f'<polyline points="{severity}" fill="none" stroke="{_SEVERITY}" stroke-width="2"/>'
        f"{''.join(dots)}"
        f'<text x="{left}" y="{height - 4}" class="axis">revision {revisions[0].revision}</text>'
        f'<text x="{left + plot_w}" y="{height - 4}" text-anchor="end" class="axis">'
        f"revision {revisions[-1].revision}</text></svg>"
    )
