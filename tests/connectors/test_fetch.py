"""Safe fetching: conditional GET, caps, timeouts and the private-address policy."""

from __future__ import annotations

import gzip
import ipaddress
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.errors import (
    BadResponse,
    ConnectionFailed,
    FeedTooLarge,
    FetchTimeout,
    PrivateAddressRefused,
    TooManyRedirects,
    UnexpectedStatus,
    UnsupportedURL,
)
from connectors.fetch import Fetcher, address_allowed
from newswatch.config import ConnectorSettings
from newswatch.retry import retry_after_seconds
from tests.connectors.servers import FeedServer, Reply, tls_certificate

DATA = Path(__file__).parents[1] / "data" / "feeds"
WSJ = (DATA / "wsj_2020-08-05T20-34-06Z.xml").read_bytes()


def loopback_settings(**changes: object) -> ConnectorSettings:
    """Settings for fetching from the test servers on 127.0.0.1."""
    settings = ConnectorSettings(
        allow_private_addresses=True, connect_timeout=2.0, read_timeout=2.0, fetch_deadline=10.0
    )
    for name, value in changes.items():
        setattr(settings, name, value)
    return settings


def test_fetch_returns_body_and_validators_and_sends_user_agent(feed_server):
    url = feed_server.route("/wsj.xml", Reply(body=WSJ, etag='"v1"', last_modified=1596659646))
    result = Fetcher(loopback_settings()).fetch(url)
    assert result.status == 200 and not result.not_modified
    assert result.body == WSJ
    assert result.etag == '"v1"'
    assert result.last_modified == "Wed, 05 Aug 2020 20:34:06 GMT"
    sent = feed_server.last_request("/wsj.xml").headers
    assert sent["user-agent"] == ConnectorSettings().user_agent


def test_etag_is_sent_back_and_304_means_not_modified(feed_server):
    url = feed_server.route("/wsj.xml", Reply(body=WSJ, etag='"v1"'))
    fetcher = Fetcher(loopback_settings())
    first = fetcher.fetch(url)
    second = fetcher.fetch(url, etag=first.etag)
    assert second.not_modified and second.body == b""
    assert second.etag == '"v1"'
    assert feed_server.last_request("/wsj.xml").headers["if-none-match"] == '"v1"'


def test_last_modified_is_sent_back_as_if_modified_since(feed_server):
    url = feed_server.route("/wsj.xml", Reply(body=WSJ, last_modified=1596659646))
    fetcher = Fetcher(loopback_settings())
    first = fetcher.fetch(url)
    second = fetcher.fetch(url, last_modified=first.last_modified)
    assert second.not_modified
    assert second.last_modified == first.last_modified


def test_loopback_feed_is_refused_by_default_without_a_request(feed_server):
    url = feed_server.route("/wsj.xml", Reply(body=WSJ))
    with pytest.raises(PrivateAddressRefused, match=r"127\.0\.0\.1"):
        Fetcher(ConnectorSettings()).fetch(url)
    assert feed_server.hits("/wsj.xml") == 0


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:10.0.0.1",
        "2002:a00:1::",
    ],
)
def test_host_resolving_to_a_non_public_address_is_refused_before_connecting(fake_dns, address):
    fake_dns["feeds.example.test"] = [address]
    with pytest.raises(PrivateAddressRefused):
        Fetcher(ConnectorSettings()).fetch("http://feeds.example.test/rss.xml")


def test_host_with_one_private_answer_among_public_ones_is_refused(fake_dns):
    fake_dns["rebind.example.test"] = ["93.184.216.34", "10.0.0.1"]
    with pytest.raises(PrivateAddressRefused, match=r"10\.0\.0\.1"):
        Fetcher(ConnectorSettings()).fetch("https://rebind.example.test/feed")


def test_public_addresses_pass_the_policy():
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert address_allowed(ipaddress.ip_address(address))


def test_allowed_networks_open_only_the_listed_private_range():
    allowed = [ipaddress.ip_network("10.1.2.0/24")]
    assert address_allowed(ipaddress.ip_address("10.1.2.3"), allowed)
    assert not address_allowed(ipaddress.ip_address("10.1.3.3"), allowed)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/secret",
        "http://10.0.0.1/admin",
        "http://169.254.169.254/latest/meta-data/",
        "http://internal.example.test/",
    ],
)
def test_redirect_from_an_allowed_host_to_a_private_address_is_refused(fake_dns, target):
    fake_dns["internal.example.test"] = ["10.0.0.1"]
    # The allowed server lives on 127.0.0.2, opened by allowed_networks; 127.0.0.1 stays refused.
    with FeedServer("127.0.0.2") as allowed, FeedServer("127.0.0.1") as private:
        private.route("/secret", Reply(body=b"internal"))
        location = target.format(port=private.port)
        url = allowed.route("/feed", Reply(status=302, headers={"Location": location}))
        settings = ConnectorSettings(allowed_networks=["127.0.0.2/32"])
        with pytest.raises(PrivateAddressRefused):
            Fetcher(settings).fetch(url)
        assert allowed.hits("/feed") == 1
        assert private.hits("/secret") == 0


def test_redirects_are_followed_up_to_the_cap(feed_server):
    feed_server.route("/a", Reply(status=301, headers={"Location": "/b"}))
    feed_server.route("/b", Reply(status=307, headers={"Location": feed_server.url("/feed")}))
    feed_server.route("/feed", Reply(body=WSJ))
    result = Fetcher(loopback_settings(max_redirects=2)).fetch(feed_server.url("/a"))
    assert result.body == WSJ and result.redirects == 2
    assert result.url == feed_server.url("/feed")
    with pytest.raises(TooManyRedirects):
        Fetcher(loopback_settings(max_redirects=1)).fetch(feed_server.url("/a"))


def test_redirect_loop_ends_with_too_many_redirects(feed_server):
    url = feed_server.route("/loop", Reply(status=302, headers={"Location": "/loop"}))
    with pytest.raises(TooManyRedirects):
        Fetcher(loopback_settings(max_redirects=5)).fetch(url)
    assert feed_server.hits("/loop") == 6


def test_body_over_the_cap_is_refused_while_streaming(feed_server):
    url = feed_server.route("/endless", Reply(endless=True))
    began = time.monotonic()
    with pytest.raises(FeedTooLarge):
        Fetcher(loopback_settings(max_feed_bytes=256 * 1024)).fetch(url)
    assert time.monotonic() - began < 5


def test_declared_content_length_over_the_cap_is_refused_before_reading(feed_server):
    url = feed_server.route("/big", Reply(headers={"Content-Length": str(10**9)}))
    with pytest.raises(FeedTooLarge, match="Content-Length"):
        Fetcher(loopback_settings(max_feed_bytes=1024)).fetch(url)


def test_gzip_bodies_are_decoded_and_capped_after_decoding(feed_server):
    plain = feed_server.route(
        "/gz", Reply(body=gzip.compress(WSJ), headers={"Content-Encoding": "gzip"})
    )
    assert Fetcher(loopback_settings()).fetch(plain).body == WSJ
    bomb = gzip.compress(b"\0" * 20_000_000)  # ~20 KB on the wire
    url = feed_server.route("/bomb", Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    with pytest.raises(FeedTooLarge):
        Fetcher(loopback_settings(max_feed_bytes=1_000_000)).fetch(url)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_are_passed_on(feed_server, status):
    url = feed_server.route("/busy", Reply(status=status, headers={"Retry-After": "120"}))
    with pytest.raises(UnexpectedStatus) as caught:
        Fetcher(loopback_settings()).fetch(url)
    assert caught.value.status == status
    assert caught.value.retry_after == 120


def test_retry_after_http_date_is_converted_to_seconds():
    base = datetime(2015, 10, 21, 7, 26, 0, tzinfo=UTC)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=base) == 120
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past: retry now
    assert retry_after_seconds("soon") is None


def test_server_error_is_an_unexpected_status(feed_server):
    url = feed_server.route("/err", Reply(status=500, body=b"oops"))
    with pytest.raises(UnexpectedStatus, match="500"):
        Fetcher(loopback_settings()).fetch(url)


def test_silent_server_times_out(feed_server):
    url = feed_server.route("/slow", Reply(body=WSJ, delay=1.0))
    with pytest.raises(FetchTimeout):
        Fetcher(loopback_settings(read_timeout=0.2)).fetch(url)


def test_dripping_server_is_cut_off_at_the_fetch_deadline(feed_server):
    url = feed_server.route("/drip", Reply(body=WSJ, drip=0.05))
    began = time.monotonic()
    with pytest.raises(FetchTimeout, match="longer than"):
        Fetcher(loopback_settings(read_timeout=1.0, fetch_deadline=0.5)).fetch(url)
    assert time.monotonic() - began < 3


def test_answer_that_is_not_http_is_a_bad_response(feed_server):
    url = feed_server.route("/garbage", Reply(raw=b"\x16\x03\x01garbage\r\n\r\n"))
    with pytest.raises(BadResponse):
        Fetcher(loopback_settings()).fetch(url)


def test_refused_connection_is_a_connection_failure(feed_server):
    url = feed_server.url("/")
    feed_server.__exit__()
    with pytest.raises(ConnectionFailed):
        Fetcher(loopback_settings()).fetch(url)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/feed.xml",
        "http://user:pw@example.com/",
        "http:///x",
    ],
)
def test_only_plain_http_and_https_urls_are_fetched(url):
    with pytest.raises(UnsupportedURL):
        Fetcher(ConnectorSettings()).fetch(url)


def test_tls_is_verified_against_the_host_name_while_connecting_to_the_checked_address(
    tmp_path, fake_dns
):
    fake_dns["feeds.example.test"] = ["127.0.0.1"]
    with tls_certificate(tmp_path, "feeds.example.test") as (cert, key):
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(cert, key)
        client_context = ssl.create_default_context(cafile=str(cert))
        with FeedServer(tls=server_context) as server:
            server.route("/rss", Reply(body=WSJ))
            fetcher = Fetcher(loopback_settings(), ssl_context=client_context)
            assert fetcher.fetch(server.url("/rss", host="feeds.example.test")).body == WSJ
            # The same server by address: its certificate does not name 127.0.0.1.
            with pytest.raises(ConnectionFailed, match="TLS"):
                fetcher.fetch(server.url("/rss"))


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",  # short form
        "2130706433",  # decimal
        "0x7f000001",  # hexadecimal
        "017700000001",  # octal
        "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    ],
)
def test_loopback_in_any_spelling_is_refused_by_default_without_a_request(feed_server, host):
    feed_server.route("/wsj.xml", Reply(body=WSJ))
    with pytest.raises(PrivateAddressRefused):
        Fetcher(ConnectorSettings()).fetch(f"http://{host}:{feed_server.port}/wsj.xml")
    assert feed_server.hits("/wsj.xml") == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/feed.xml",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
    ],
)
def test_private_and_metadata_addresses_are_refused_before_any_connection(url):
    # The loopback guard fails the test if a connection is even attempted.
    with pytest.raises(PrivateAddressRefused):
        Fetcher(ConnectorSettings()).fetch(url)


def test_the_allow_options_open_private_addresses_only_as_far_as_asked(feed_server):
    url = feed_server.route("/wsj.xml", Reply(body=WSJ))
    with pytest.raises(PrivateAddressRefused):
        Fetcher(ConnectorSettings()).fetch(url)
    assert Fetcher(ConnectorSettings(allow_private_addresses=True)).fetch(url).body == WSJ
    only_loopback = ConnectorSettings(allowed_networks=["127.0.0.0/8"])
    assert Fetcher(only_loopback).fetch(url).body == WSJ
    with pytest.raises(PrivateAddressRefused):  # still refused, and never connected to
        Fetcher(only_loopback).fetch("http://169.254.169.254/latest/meta-data/")
    assert feed_server.hits("/wsj.xml") == 2


def test_redirect_to_the_metadata_address_is_refused_under_the_allow_option_for_loopback(
    feed_server,
):
    url = feed_server.route(
        "/feed", Reply(status=302, headers={"Location": "http://169.254.169.254/latest/"})
    )
    with pytest.raises(PrivateAddressRefused, match=r"169\.254\.169\.254"):
        Fetcher(ConnectorSettings(allowed_networks=["127.0.0.0/8"])).fetch(url)
    assert feed_server.hits("/feed") == 1
