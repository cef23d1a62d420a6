"""The command and file sinks: a real program reads the notification on stdin; a real file."""

from __future__ import annotations

import json
import sys
import textwrap

from newswatch.config import CommandSettings, FileSettings
from tests.notifiers.harness import (
    HEADLINE,
    dead_letters,
    publish,
    route,
    running,
    story_alert,
    wait_until_committed,
)


def script(tmp_path, body: str) -> list[str]:
    path = tmp_path / "receive.py"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return [sys.executable, str(path)]


def test_the_command_gets_the_json_on_stdin_and_a_temporary_failure_is_retried(notify, tmp_path):
    received = tmp_path / "received.jsonl"
    argv = script(
        tmp_path,
        f"""
        import os, pathlib, sys
        out = pathlib.Path({str(received)!r})
        first = not out.exists()
        with out.open("a") as f:
            f.write(os.environ["NEWSWATCH_ALERT_ID"] + " " + sys.stdin.read().strip() + "\\n")
        sys.exit(75 if first else 0)  # EX_TEMPFAIL the first time
        """,
    )
    alert = story_alert()
    notify.notify.routes = [route(name="pager", command=CommandSettings(argv=argv))]
    publish(notify, alert)
    with running(notify) as service:
        wait_until_committed(notify)
    lines = received.read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        key, body = line.split(" ", 1)
        assert key == alert.alert_id
        assert json.loads(body)["headline"] == HEADLINE
    assert service.report.delivered == 1


def test_a_failing_command_ends_in_a_dead_letter_with_its_stderr(notify, tmp_path):
    argv = script(tmp_path, 'import sys; print("no route to pager", file=sys.stderr); sys.exit(3)')
    notify.notify.routes = [route(name="pager", command=CommandSettings(argv=argv))]
    publish(notify, story_alert())
    with running(notify):
        wait_until_committed(notify)
    (letter,) = dead_letters(notify)
    assert "exited with status 3: no route to pager" in letter.message


def test_the_file_sink_appends_one_json_line_per_notification(notify, tmp_path):
    path = tmp_path / "alerts" / "notifications.jsonl"
    notify.notify.routes = [route(name="archive", file=FileSettings(path=str(path)))]
    publish(notify, story_alert("a"), story_alert("b"))
    with running(notify):
        wait_until_committed(notify)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(row["story_id"] for row in rows) == ["a", "b"]
