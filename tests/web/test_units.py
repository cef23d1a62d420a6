"""The systemd units in deploy/systemd pass ``systemd-analyze verify`` and are hardened.

The units name the install location /opt/newswatch; the test points them at this
checkout (whose .venv/bin/newswatch exists), so verify also checks that every
command they run is there and executable.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from newswatch.config import PROJECT_ROOT

UNITS = sorted((PROJECT_ROOT / "deploy" / "systemd").glob("*.service"))
INSTALL_ROOT = "/opt/newswatch"


def systemd_analyze() -> str:
    """The systemd-analyze binary; installs Debian's systemd package if it is missing."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("systemd-analyze is missing and there is no apt-get to install systemd")
    done = subprocess.run(
        [apt, "install", "-y", "-q", "systemd"], capture_output=True, text=True, timeout=600
    )
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip(f"systemd-analyze is missing; apt-get install systemd failed:\n{done.stderr}")
    return found


def test_there_are_units_for_the_broker_the_worker_and_the_web_page():
    assert [u.name for u in UNITS] == [
        "newswatch-broker.service",
        "newswatch-web.service",
        "newswatch-worker.service",
    ]


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path):
    tool = systemd_analyze()
    for unit in UNITS:
        text = unit.read_text()
        assert INSTALL_ROOT in text
        (tmp_path / unit.name).write_text(text.replace(INSTALL_ROOT, str(PROJECT_ROOT)))

    result = subprocess.run(
        [tool, "verify", "--man=no", *sorted(str(p) for p in tmp_path.glob("*.service"))],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert problems == []


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_each_unit_runs_confined_as_its_own_user_and_restarts(unit: Path):
    lines = {line.strip() for line in unit.read_text().splitlines()}

    for setting in (
        "User=newswatch",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "EnvironmentFile=-/etc/newswatch/newswatch.env",
    ):
        assert setting in lines, f"{unit.name} lacks {setting}"
    writes = unit.name != "newswatch-web.service"
    assert ("ReadWritePaths=/var/lib/newswatch" in lines) == writes


def test_the_worker_lets_the_pipeline_drain_on_stop():
    lines = (PROJECT_ROOT / "deploy" / "systemd" / "newswatch-worker.service").read_text()

    assert "KillMode=mixed" in lines  # SIGTERM to newswatch only; it stops its Prism runner
    assert "NEWSWATCH_SERVE_METRICS_PORT=9464" in lines
