"""Who may read the page: loopback by default, credentials for any other bind address."""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys

import pytest

from newswatch.access import Credentials, is_loopback, require_credentials
from newswatch.config import PROJECT_ROOT
from newswatch.errors import ConfigError
from tests.commands import kafka_flags
from tests.conftest import free_port
from tests.web.conftest import clean_env, fetch


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "newswatch.cli", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_non_loopback_bind_without_credentials_is_refused(settings):
    port = free_port()

    result = run_cli(
        "serve", "--host=0.0.0.0", f"--port={port}", *kafka_flags(settings), env=clean_env()
    )

    assert result.returncode == 2
    assert "0.0.0.0" in result.stderr and "not loopback" in result.stderr
    assert "NEWSWATCH_SERVE_TOKEN" in result.stderr
    with pytest.raises(OSError):
        fetch(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_the_workers_metrics_endpoint_off_loopback_without_credentials_is_refused(settings):
    result = run_cli(
        "pipeline",
        f"--home={settings.home}",
        "--metrics-host=0.0.0.0",
        f"--metrics-port={free_port()}",
        *kafka_flags(settings),
        env=clean_env(),
    )

    assert result.returncode == 2
    assert "the metrics endpoint would listen on 0.0.0.0" in result.stderr


def test_a_user_without_a_password_is_refused(settings):
    result = run_cli(
        "serve",
        f"--port={free_port()}",
        *kafka_flags(settings),
        env=clean_env(NEWSWATCH_SERVE_USER="operator"),
    )

    assert result.returncode == 2
    assert "NEWSWATCH_SERVE_PASSWORD" in result.stderr


def test_with_a_token_every_page_but_the_probes_needs_it(serve_page):
    token = secrets.token_urlsafe(24)
    page = serve_page(host="0.0.0.0", env=clean_env(NEWSWATCH_SERVE_TOKEN=token))

    status, headers, _ = page.get("/")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic")
    assert page.get("/metrics")[0] == 401
    assert page.get("/", {"Authorization": f"Bearer {token}x"})[0] == 401
    assert page.get("/", {"Authorization": "Basic " + _basic("anyone", "wrong")})[0] == 401
    assert page.get("/", {"Authorization": "Basic !!not-base64"})[0] == 401

    status, _, body = page.get("/", {"Authorization": f"Bearer {token}"})
    assert status == 200 and token.encode() not in body
    assert page.get("/", {"Authorization": "Basic " + _basic("anyone", token)})[0] == 200
    assert page.get("/metrics", {"Authorization": f"Bearer {token}"})[0] == 200
    assert page.get("/healthz")[0] == 200
    assert page.get("/readyz")[0] in (200, 503)  # answered, without credentials
    assert token not in page.output()


def test_basic_auth_needs_both_user_and_password(serve_page):
    page = serve_page(
        host="0.0.0.0",
        env=clean_env(NEWSWATCH_SERVE_USER="operator", NEWSWATCH_SERVE_PASSWORD="s3cret pass"),
    )

    assert page.get("/", {"Authorization": "Basic " + _basic("operator", "s3cret pass")})[0] == 200
    assert page.get("/", {"Authorization": "Basic " + _basic("other", "s3cret pass")})[0] == 401
    assert page.get("/", {"Authorization": "Basic " + _basic("operator", "s3cret")})[0] == 401
    assert page.get("/", {"Authorization": "Bearer s3cret pass"})[0] == 401


def test_loopback_addresses_need_no_credentials():
    for host in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        require_credentials(host, Credentials(), "the page")
    for host in ("0.0.0.0", "::", "192.0.2.10", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError, match="not loopback"):
            require_credentials(host, Credentials(), "the page")
    require_credentials("0.0.0.0", Credentials(token="t"), "the page")


def test_credentials_never_show_in_their_repr():
    credentials = Credentials(token="tok-123", user="u-456", password="pw-789")

    assert "tok-123" not in repr(credentials) and "pw-789" not in repr(credentials)


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()
