"""Reading replay sources, the replay's topic names, its flags and its progress output."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
from datetime import UTC, datetime

import pytest

from newswatch.config import PROJECT_ROOT, Settings
from newswatch.errors import ConfigError
from newswatch.schemas import DeadLetter
from pipelines import replay_commands
from pipelines.archive import ReplayItem, SourceStats, iter_sources
from pipelines.replay_progress import Progress
from pipelines.replay_topics import REPLAY_PREFIX, replay_settings

ARCHIVE = PROJECT_ROOT / "tests" / "data" / "archive"
LABELLED = PROJECT_ROOT.parent / "shared" / "data" / "labelled" / "dev.jsonl"


def items(things) -> list[ReplayItem]:
    return [t for t in things if isinstance(t, ReplayItem)]


def test_gzipped_entries_stream_row_by_row_and_bad_rows_name_their_line(tmp_path):
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()[:3]]
    lines = [json.dumps(rows[0]), "{not json", json.dumps(rows[1]), "", json.dumps(rows[2])]
    path = tmp_path / "entries.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    stats = SourceStats()
    things = list(iter_sources([path], stats))
    letters = [t for t in things if isinstance(t, DeadLetter)]
    assert [letter.origin for letter in letters] == [f"{path}:2"]
    replayed = items(things)
    assert [i.article.title for i in replayed] == [r["title"] for r in rows]
    first = replayed[0]
    published = datetime.fromisoformat(rows[0]["published"]).astimezone(UTC)
    assert first.event_ms == first.arrival_ms == int(published.timestamp() * 1000)
    assert not first.fallback and first.article.feed == str(path)
    assert (stats.articles, stats.dead_letters, stats.fallbacks) == (3, 1, 0)


def test_future_dated_entry_becomes_a_dead_letter(tmp_path):
    row = json.loads(LABELLED.read_text(encoding="utf-8").splitlines()[0])
    path = tmp_path / "future.jsonl"
    path.write_text(json.dumps({**row, "published": "2020-01-02T08:26:44Z"}) + "\n")
    stats = SourceStats()
    (letter,) = list(iter_sources([path], stats, now=datetime(2019, 12, 1, tzinfo=UTC)))
    assert isinstance(letter, DeadLetter)
    assert (letter.stage, letter.error, stats.future, stats.articles) == (
        "replay",
        "FutureTimestamp",
        1,
        0,
    )


def test_from_and_to_select_entries_by_event_time():
    stats = SourceStats()
    start = datetime(2020, 9, 3, tzinfo=UTC)
    end = datetime(2020, 9, 4, tzinfo=UTC)
    selected = items(iter_sources([ARCHIVE / "cnn"], stats, start=start, end=end))
    assert selected and stats.out_of_range > 0
    for item in selected:
        assert start.timestamp() * 1000 <= item.event_ms < end.timestamp() * 1000
    # Everything read is either replayed, a repeat, or outside the range.
    assert stats.entries == stats.articles + stats.repeats + stats.out_of_range


def test_snapshots_are_read_in_capture_order_and_a_manifest_is_metadata(tmp_path):
    feed = tmp_path / "feeds" / "dailytelegraph"
    feed.mkdir(parents=True)
    later, earlier = "2020-08-12T09-00-59Z.xml", "2020-08-12T08-55-31Z.xml"
    for name in (later, earlier):
        shutil.copy(ARCHIVE / "dailytelegraph" / name, feed / name)
    manifest = [
        {"file": f"dailytelegraph/{earlier}", "captured_utc": "2020-08-12T08:55:31Z",
         "outlet": "The Daily Telegraph (Sydney)"},
        {"file": f"dailytelegraph/{later}", "captured_utc": "2020-08-12T09:00:59Z",
         "outlet": "The Daily Telegraph (Sydney)"},
    ]  # fmt: skip
    (tmp_path / "feeds" / "manifest.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in manifest)
    )
    stats = SourceStats()
    replayed = items(iter_sources([tmp_path / "feeds"], stats))
    # The later snapshot repeats 9 of the earlier one's 10 items and adds one.
    assert (stats.files, stats.snapshots, stats.articles, stats.repeats) == (2, 2, 11, 9)
    assert {i.article.source for i in replayed} == {"The Daily Telegraph (Sydney)"}
    # No pubDate anywhere: each item is placed at the capture that first saw it.
    earlier_ms = int(datetime(2020, 8, 12, 8, 55, 31, tzinfo=UTC).timestamp() * 1000)
    later_ms = int(datetime(2020, 8, 12, 9, 0, 59, tzinfo=UTC).timestamp() * 1000)
    assert all(i.fallback for i in replayed)
    assert [i.event_ms for i in replayed] == [earlier_ms] * 10 + [later_ms]


def test_replay_topics_and_group_are_the_runs_own():
    settings = replay_settings(Settings(), "run-1")
    kafka = settings.kafka
    names = [kafka.articles_topic, kafka.alerts_topic, kafka.decisions_topic]
    names += [kafka.dead_letter_topic, kafka.group_id]
    assert all(n.startswith(f"{REPLAY_PREFIX}run-1.") for n in names)
    assert Settings().kafka.alerts_topic == "newswatch.alerts"
    with pytest.raises(ConfigError):
        replay_settings(Settings(), "../live")


def replay_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    replay_commands.register(parser.add_subparsers())
    return parser


def test_speed_takes_a_positive_multiple_or_max(capsys):
    parser = replay_parser()
    assert parser.parse_args(["replay", "x", "--speed", "max"]).speed is None
    assert parser.parse_args(["replay", "x", "--speed", "3600"]).speed == 3600.0
    assert parser.parse_args(["replay", "x"]).speed is None
    for bad in ("0", "-2", "fast"):
        with pytest.raises(SystemExit):
            parser.parse_args(["replay", "x", "--speed", bad])
    args = parser.parse_args(["replay", "x", "--from", "2020-08-01", "--to", "2020-08-02T12:00Z"])
    assert args.start == datetime(2020, 8, 1, tzinfo=UTC)
    assert args.end == datetime(2020, 8, 2, 12, tzinfo=UTC)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_a_bar_with_rate_and_time_left_on_a_terminal():
    stream = _Terminal()
    progress = Progress("classifying", total=200, stream=stream, interval=0)
    progress.update(50)
    progress.close()
    text = stream.getvalue()
    last = text.rsplit("\r", 1)[-1]
    assert last.startswith("classifying:  25%|") and "| 50/200 [" in last
    assert "<" in last and "records/s]" in last and text.endswith("\n")


def test_progress_prints_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    progress = Progress("publishing", stream=stream, interval=0)
    for done in (10, 20):
        progress.update(done)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[1].startswith("publishing: 10 records") and lines[-1].startswith("publishing: 20 ")
    assert all("records/s" in line for line in lines)
    assert "\r" not in stream.getvalue() and "|" not in stream.getvalue()


def test_several_sources_are_interleaved_in_arrival_order():
    stats = SourceStats()
    replayed = items(iter_sources([ARCHIVE / "cnn", ARCHIVE / "dailytelegraph"], stats))
    arrivals = [i.arrival_ms for i in replayed]
    # The Daily Telegraph snapshots (12 Aug) come before CNN's (3-4 Sep), as a poller met them.
    assert arrivals == sorted(arrivals)
    assert replayed[0].article.feed == str(ARCHIVE / "dailytelegraph")
    assert {i.article.id for i in replayed} == {
        i.article.id for src in ("cnn", "dailytelegraph") for i in items(
            iter_sources([ARCHIVE / src], SourceStats())
        )
    }  # fmt: skip
