"""``newswatch run`` shows the story alerts it finds, delivers them, and stops cleanly.

The run is a subprocess on the session broker with the real pipeline (Prism and the
model): once with ``--until-idle`` on the bundled seed article, which escalates
into a story alert that is printed and delivered to ``--notify-webhook`` before the
run exits; once running until a Ctrl-C, sent as a terminal sends it, to the whole
process group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from newswatch.config import PROJECT_ROOT, Settings
from newswatch.schemas import StoryAlert
from notifiers.messages import one_line
from tests.commands import newswatch_command
from tests.notifiers.harness import committed, end_offset, publish, story_alert, wait_until
from tests.notifiers.servers import WebhookServer


def environment(settings: Settings) -> dict[str, str]:
    return {**os.environ, "NEWSWATCH_NOTIFY_GROUP_ID": settings.notify.group_id}


def seed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "documents"
    folder.mkdir()
    for seed in (PROJECT_ROOT / "seeds").glob("*.txt"):
        shutil.copy(seed, folder)
    return folder


def test_until_idle_prints_and_delivers_the_story_alerts_the_pipeline_raised(notify, tmp_path):
    with WebhookServer() as server:
        done = subprocess.run(
            newswatch_command(
                notify, "run", "--until-idle", f"--files={seed_folder(tmp_path)}", "--json",
                f"--notify-webhook={server.url}",
            ),
            capture_output=True, text=True, env=environment(notify), cwd=PROJECT_ROOT, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        received = list(server.received)

    (printed,) = [StoryAlert.from_dict(json.loads(line)) for line in done.stdout.splitlines()]
    assert printed.update == 0 and printed.story.escalation
    (request,) = received
    assert request.headers["idempotency-key"] == printed.alert_id
    assert json.loads(request.body)["headline"] == printed.story.headline
    assert committed(notify) == end_offset(notify)  # delivered, then committed
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("newswatch: pipeline: articles_decoded=1 alerts=1")
    assert summary.endswith(
        "; 1 story alert; notify: 1 delivered, 0 dead letters, 0 suppressed, "
        "0 left for the next start"
    )
    assert "Traceback" not in done.stderr


def test_ctrl_c_drains_and_ends_with_one_summary_line_and_no_noise(notify, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    alert = story_alert(severity=3)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with WebhookServer() as server, open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            newswatch_command(
                notify, "run", f"--files={empty}", f"--notify-webhook={server.url}"
            ),
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=environment(notify),
            cwd=PROJECT_ROOT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until(lambda: b"running job" in err.read_bytes(), 120, "the job running")
            publish(notify, alert)
            wait_until(lambda: out.read_text().strip(), 30, "the alert printed")
            os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            code = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        assert server.received == []  # it waited group_wait (30 s) when the run stopped

    assert code == 0
    assert out.read_text().splitlines() == [one_line(alert)]
    log = err.read_text()
    assert "Traceback" not in log
    assert " ERROR " not in log
    summary = log.strip().splitlines()[-1]
    assert summary.startswith("newswatch: pipeline: ")
    assert summary.endswith(
        "; 1 story alert; notify: 0 delivered, 0 dead letters, 0 suppressed, "
        "1 left for the next start"
    )
    assert committed(notify) < end_offset(notify)  # not delivered: read again next time
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True, text=True)
    assert left.stdout.strip() == "", "processes of the run are still alive"
