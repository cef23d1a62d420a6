"""``newswatch ingest`` end to end: flags, exit codes, graceful stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from newswatch.cli import main
from newswatch.config import PROJECT_ROOT
from tests.connectors.servers import Reply

SEED = PROJECT_ROOT / "seeds" / "000_926da616d7d9c5df.txt"


def ingest_argv(settings, home: Path, *extra: str) -> list[str]:
    return [
        "ingest",
        "--home",
        str(home),
        "--bootstrap-servers",
        settings.bootstrap_servers,
        "--articles-topic",
        settings.kafka.articles_topic,
        "--dead-letter-topic",
        settings.kafka.dead_letter_topic,
        *extra,
    ]


def test_ingest_once_reads_a_folder_and_prints_a_summary(settings, tmp_path, capsys, read_topic):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / SEED.name).write_bytes(SEED.read_bytes())
    assert main(ingest_argv(settings, tmp_path / "home", "--once", "--files", str(docs))) == 0
    assert "1 articles published" in capsys.readouterr().out
    (record,) = read_topic(settings, settings.kafka.articles_topic)
    assert json.loads(record.value)["title"].startswith("A high-stakes phone call")


def test_ingest_once_exits_1_and_names_the_failing_feed(settings, tmp_path, capsys, feed_server):
    url = feed_server.route("/down", Reply(status=500))
    argv = ingest_argv(settings, tmp_path / "home", "--once", "--feeds", url)
    assert main([*argv, "--allow-private-addresses"]) == 1
    assert f"failing feed: {url}: HTTP 500" in capsys.readouterr().out


def test_unusable_feed_is_a_one_line_error_before_any_broker_is_contacted(tmp_path, capsys):
    argv = ["ingest", "--once", "--home", str(tmp_path), "--feeds", "file:///etc/passwd"]
    assert main([*argv, "--bootstrap-servers", "127.0.0.1:9"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("newswatch: error: ") and "--files" in error


def test_sigterm_stops_ingest_after_saving_its_checkpoints(settings, tmp_path, read_topic):
    docs, home = tmp_path / "docs", tmp_path / "home"
    docs.mkdir()
    (docs / "a.txt").write_text("Coast guard drill\nShips gathered off Kinmen.\n")
    argv = ingest_argv(settings, home, "--files", str(docs), "--watch-interval", "0.2")
    process = subprocess.Popen(
        [sys.executable, "-m", "newswatch.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not read_topic(settings, settings.kafka.articles_topic):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "ingest published nothing"
            time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "1 articles published" in out
    (checkpoint,) = (home / "state" / "files").glob("*.json")
    assert "a.txt" in json.loads(checkpoint.read_text())["files"]
    # A restart finds everything already published.
    assert main(ingest_argv(settings, home, "--once", "--files", str(docs))) == 0
    assert len(read_topic(settings, settings.kafka.articles_topic)) == 1
