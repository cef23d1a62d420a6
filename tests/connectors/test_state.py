"""Checkpoints: backoff arithmetic, restart safety, atomic writes, one process per state dir."""

from __future__ import annotations

import os

import pytest

from connectors.state import StateStore, backoff_delay
from newswatch.errors import ConfigError

URL = "https://feeds.bbci.co.uk/news/world/rss.xml"


def test_backoff_doubles_from_the_poll_interval_up_to_the_cap():
    delays = [backoff_delay(n, base=60, cap=900) for n in range(1, 7)]
    assert delays == [120, 240, 480, 900, 900, 900]


def test_retry_after_lengthens_the_backoff_but_never_beyond_the_cap():
    assert backoff_delay(1, base=60, cap=3600, retry_after=600) == 600
    assert backoff_delay(1, base=60, cap=3600, retry_after=5) == 120
    assert backoff_delay(1, base=60, cap=3600, retry_after=86_400) == 3600


def test_failures_schedule_later_polls_and_success_resets_health(tmp_path):
    with StateStore(tmp_path) as store:
        feed = store.feed(URL)
        assert feed.healthy and feed.next_poll == 0
        assert feed.failed(1000.0, "HTTP 500", poll_interval=60, max_backoff=900) == 120
        assert feed.failed(1120.0, "timed out", poll_interval=60, max_backoff=900) == 240
        assert (feed.failures, feed.next_poll, feed.healthy) == (2, 1360.0, False)
        assert feed.health()["last_error"] == "timed out"
        feed.succeeded(1400.0, 60, etag='"e"', last_modified=None, articles=["a", "b"])
        assert (feed.failures, feed.next_poll, feed.healthy) == (0, 1460.0, True)
        assert feed.health()["published"] == 2


def test_checkpoint_survives_a_restart(tmp_path):
    with StateStore(tmp_path) as store:
        feed = store.feed(URL)
        feed.succeeded(
            1000.0,
            300,
            etag='"abc"',
            last_modified="Mon, 31 Aug 2020 06:51:28 GMT",
            articles=["id1", "id2"],
            dead_letters=["id3"],
            warning="malformed",
        )
        store.save_feed(feed)
    with StateStore(tmp_path) as store:
        again = store.feed(URL)
        assert (again.etag, again.last_modified) == ('"abc"', "Mon, 31 Aug 2020 06:51:28 GMT")
        assert {"id1", "id2", "id3"} <= set(again.seen.to_list())
        assert (again.published, again.dead_letters, again.next_poll) == (2, 1, 1300.0)
        assert again.last_warning == "malformed"


def test_remembered_ids_are_bounded_and_keep_the_newest(tmp_path):
    with StateStore(tmp_path, seen_limit=3) as store:
        feed = store.feed(URL)
        feed.succeeded(0, 60, etag=None, last_modified=None, articles=["a", "b", "c"])
        feed.succeeded(1, 60, etag=None, last_modified=None, articles=["d", "b"])
        assert feed.seen.to_list() == ["c", "d", "b"]
        assert "a" not in feed.seen


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temp_files(tmp_path, monkeypatch):
    with StateStore(tmp_path) as store:
        feed = store.feed(URL)
        feed.succeeded(0, 60, etag='"old"', last_modified=None, articles=["a"])
        store.save_feed(feed)
        (saved,) = (tmp_path / "feeds").iterdir()
        before = saved.read_bytes()

        def full_disk(*args: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", full_disk)
        feed.succeeded(1, 60, etag='"new"', last_modified=None, articles=["b"])
        with pytest.raises(OSError, match="No space"):
            store.save_feed(feed)
        assert saved.read_bytes() == before
        assert [p.name for p in (tmp_path / "feeds").iterdir()] == [saved.name]


def test_unreadable_checkpoint_is_moved_aside_and_started_afresh(tmp_path):
    with StateStore(tmp_path) as store:
        store.save_feed(store.feed(URL))
    (saved,) = (tmp_path / "feeds").iterdir()
    saved.write_text("{ truncated")
    with StateStore(tmp_path) as store:
        assert store.feed(URL).etag is None
    assert any(p.name.startswith(saved.name + ".corrupt-") for p in (tmp_path / "feeds").iterdir())


def test_only_one_process_may_use_a_state_directory(tmp_path):
    first = StateStore(tmp_path)
    with pytest.raises(ConfigError, match="in use"):
        StateStore(tmp_path)
    first.close()
    StateStore(tmp_path).close()


def test_directory_checkpoints_are_kept_per_folder(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    with StateStore(tmp_path / "state") as store:
        state = store.directory(folder)
        state.files["a.txt"] = {"size": 1, "mtime_ns": 2, "sha256": "x"}
        state.seen.add(["id-a"])
        store.save_directory(state)
    with StateStore(tmp_path / "state") as store:
        again = store.directory(folder)
        assert again.files == {"a.txt": {"size": 1, "mtime_ns": 2, "sha256": "x"}}
        assert "id-a" in again.seen
