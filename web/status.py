"""``newswatch status``: broker, topics, lag, feeds, stories and dead letters on one screen.

It checks the broker once (`newswatch.health.check_broker`), reads the output
topics up to their current end the way the web page does (the last
``serve.history_hours``), and reads the feed checkpoints. Exit status 0 when the
broker answered, 1 when it did not.
"""

from __future__ import annotations

import json
import time
from typing import Any

from newswatch.config import Settings
from newswatch.health import check_broker
from web.feeds import feed_health
from web.live import LiveState, TopicReader

__all__ = ["broker_ok", "collect_status", "format_status", "status_json"]


def collect_status(settings: Settings, timeout: float = 30.0) -> dict[str, Any]:
    """Everything ``newswatch status`` shows, as a dict (also its ``--json`` output)."""
    check = check_broker(settings)
    out: dict[str, Any] = {"broker": check.to_dict()}
    feeds, folders = feed_health(settings.connectors.state_dir)
    out["feeds"] = [
        {
            "url": f.url,
            "healthy": f.healthy,
            "failures": f.failures,
            "last_poll": f.last_poll,
            "last_error": f.last_error,
            "not_modified_ratio": f.not_modified_ratio,
            "backoff_seconds": f.backoff,
        }
        for f in feeds
    ]
    out["folders"] = [
        {"directory": d.directory, "files": d.files, "published": d.published} for d in folders
    ]
    out["records"] = None
    if check.reachable:
        state = LiveState.from_settings(settings)
        reader = TopicReader(settings, state).start()
        try:
            complete = reader.caught_up.wait(timeout)
        finally:
            reader.stop()
        summary = state.summary()
        summary["complete"] = complete
        summary["history_hours"] = settings.serve.history_hours
        latest = state.dead_letter_list()[:1]
        summary["latest_dead_letter"] = (
            {
                "stage": latest[0].letter.stage,
                "error": latest[0].letter.error,
                "message": latest[0].letter.message[:200],
                "at": latest[0].letter.at,
            }
            if latest
            else None
        )
        out["records"] = summary
    return out


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def format_status(status: dict[str, Any], settings: Settings) -> str:
    """The one-screen text of ``newswatch status``."""
    broker = status["broker"]
    lines = []
    if broker["reachable"]:
        lines.append(f"broker        {broker['servers']}: reachable ({broker['seconds']:.2f} s)")
    else:
        lines.append(f"broker        {broker['servers']}: UNREACHABLE ({broker['error']})")
    lines.append("topics        name: partitions, end offsets (records kept)")
    for name, parts in broker["topics"].items():
        ends = [p["end"] for p in parts.values()]
        kept = sum(p["end"] - p["beginning"] for p in parts.values())
        lines.append(f"              {name}: {len(parts)}, {'/'.join(map(str, ends))} ({kept:,})")
    for name in broker["missing"]:
        lines.append(f"              {name}: missing")
    if broker["lag"] is not None:
        lag = broker["lag"]
        per = ", ".join(f"p{p} {n}" for p, n in sorted(lag.items(), key=lambda kv: int(kv[0])))
        lines.append(
            f"consumer lag  group {broker['group']} on {settings.kafka.articles_topic}: "
            f"{sum(lag.values()):,} ({per})"
        )
    elif broker["reachable"]:
        lines.append("consumer lag  no articles topic yet")
    feeds = status["feeds"]
    failing = [f for f in feeds if not f["healthy"]]
    lines.append(
        f"feeds         {len(feeds)} with a checkpoint, {len(failing)} failing"
        + (f"; folders {len(status['folders'])}" if status["folders"] else "")
    )
    for f in failing[:5]:
        lines.append(f"              {f['url']}: {f['failures']} failures, {f['last_error']}")
    if len(failing) > 5:
        lines.append(f"              … and {len(failing) - 5} more")
    records = status["records"]
    if records is None:
        lines.append("stories       unknown (broker unreachable)")
    else:
        partial = "" if records["complete"] else " (partial: reading timed out)"
        window = f"last {records['history_hours']:g} h"
        statuses = _counts(records["statuses"])
        lines.append(
            f"stories       {records['stories']:,}{f' ({statuses})' if statuses else ''}; "
            f"article alerts {records['alerts']:,}; {window}{partial}"
        )
        by_stage = _counts(records["dead_by_stage"])
        lines.append(
            f"dead letters  {records['dead_letters']:,}{f' ({by_stage})' if by_stage else ''}"
        )
        latest = records["latest_dead_letter"]
        if latest:
            lines.append(
                f"              latest: {latest['stage']} {latest['error']} at {latest['at']}: "
                f"{latest['message']}"
            )
        if records["unreadable"]:
            lines.append(f"unreadable    {_counts(records['unreadable'])}")
    lines.append(f"checked at    {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    return "\n".join(lines)


def status_json(status: dict[str, Any]) -> str:
    """The ``--json`` output."""
    return json.dumps(status, indent=1, sort_keys=True, default=str)


def broker_ok(status: dict[str, Any]) -> bool:
    """Whether the broker answered."""
    return bool(status["broker"]["reachable"])
