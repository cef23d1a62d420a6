"""Story alerts delivered to a real HTTP endpoint by a real notifier on the session broker.

Each test publishes `StoryAlert` records to its own story-alerts topic, runs the
notifier in a consumer group of its own and watches what a local HTTP server
receives; "nothing more" is asserted once the notifier has committed every
record (so it has settled them all), not after a sleep.
"""

from __future__ import annotations

import hmac
import json
import time

from newswatch.config import RouteSettings, WebhookSettings
from newswatch.schemas import Alert
from newswatch.topics import make_producer
from notifiers.webhook import sign
from tests.notifiers.conftest import SECRET
from tests.notifiers.harness import (
    EVIDENCE,
    HEADLINE,
    LINK,
    dead_letters,
    publish,
    route,
    running,
    story_alert,
    wait_until,
    wait_until_committed,
)
from tests.notifiers.servers import Answer, WebhookServer

#: Seconds the endpoint is down in the outage test.
OUTAGE = 6.0


def webhook_route(server: WebhookServer, **fields: object) -> RouteSettings:
    hook = WebhookSettings(url=server.url, secret_env="TEST_WEBHOOK_SECRET")
    return route(name="hook", webhook=hook, **fields)


def test_a_story_alert_is_delivered_once_with_its_fields_and_key(notify):
    alert = story_alert(severity=3, signals={"military": 2, "grayzone": 1}, outlets=3)
    with WebhookServer() as server:
        notify.notify.routes = [webhook_route(server)]
        publish(notify, alert)
        with running(notify):
            (request,) = server.wait_for(1)
            wait_until_committed(notify)
        assert len(server.received) == 1

    body = json.loads(request.body)
    assert body["kind"] == "story"
    assert body["headline"] == HEADLINE
    assert body["signals"] == ["military", "grayzone"]
    assert body["severity"] == 3
    assert body["score"] == 0.93
    assert body["outlets"] == 3
    assert body["evidence"][0]["sentence"] == EVIDENCE
    assert body["links"][0] == LINK
    assert body["status"] == "escalated"
    assert body["update"] == 0
    assert body["reasons"] == ["escalated"]
    assert body["story_id"] == alert.story_id
    assert request.headers["idempotency-key"] == alert.alert_id
    assert request.headers["content-type"].startswith("application/json")


def test_the_signature_verifies_with_the_secret_and_fails_with_another(notify):
    with WebhookServer() as server:
        notify.notify.routes = [webhook_route(server)]
        publish(notify, story_alert())
        with running(notify):
            (request,) = server.wait_for(1)

    signature = request.headers["x-newswatch-signature"]
    assert signature.startswith("sha256=")
    assert hmac.compare_digest(signature, sign(SECRET, request.body))
    assert not hmac.compare_digest(signature, sign("another-secret", request.body))
    assert not hmac.compare_digest(signature, sign(SECRET, request.body + b" "))


def test_a_severity_rise_is_one_update_and_nothing_repeats_within_repeat_interval(notify):
    first = story_alert(update=0, severity=2)
    rise = story_alert(update=1, severity=3, reasons=["severity 2→3"])
    # The same state as the rise, raised again for another reason; and the rise once more.
    same_state = story_alert(update=2, severity=3, reasons=["new headline"])
    with WebhookServer() as server:
        notify.notify.routes = [webhook_route(server, repeat_interval=3600)]
        with running(notify):
            publish(notify, first)
            server.wait_for(1)
            publish(notify, rise)
            server.wait_for(2)
            publish(notify, rise, same_state)
            wait_until_committed(notify)
        requests = list(server.received)

    assert [json.loads(r.body)["update"] for r in requests] == [0, 1]
    update = json.loads(requests[1].body)
    assert update["severity"] == 3
    assert update["reasons"] == ["severity 2→3"]
    assert requests[1].headers["idempotency-key"] == rise.alert_id
    # group_interval (1 s) runs from the first send; arrivals differ from sends by the
    # requests' latency, which the margin allows for.
    assert requests[1].at - requests[0].at >= 0.8


def test_quick_follow_ups_fold_into_the_first_notification(notify):
    first = story_alert(update=0, severity=2)
    rise = story_alert(update=1, severity=3, status="breaking", reasons=["severity 2→3"])
    with WebhookServer() as server:
        notify.notify.routes = [webhook_route(server, group_wait=1.0)]
        publish(notify, first, rise)
        with running(notify):
            server.wait_for(1)
            wait_until_committed(notify)
        assert len(server.received) == 1

    body = json.loads(server.received[0].body)
    assert body["updates"] == [0, 1]
    assert body["reasons"] == ["escalated", "severity 2→3"]
    assert body["status"] == "breaking"
    assert server.received[0].headers["idempotency-key"] == rise.alert_id


def test_a_route_delivers_only_stories_that_pass_its_filter(notify):
    calm = story_alert("calm", severity=1, signals={"diplomatic": 1})
    drills = story_alert("drills", severity=3, signals={"military": 1})
    with WebhookServer() as server:
        notify.notify.routes = [webhook_route(server, min_severity=2, signals=["military"])]
        publish(notify, calm, drills)
        with running(notify):
            server.wait_for(1)
            wait_until_committed(notify)
        assert [json.loads(r.body)["story_id"] for r in server.received] == ["drills"]


def test_a_500_then_200_endpoint_is_retried_with_the_same_key(notify):
    alert = story_alert()
    with WebhookServer(Answer(500, b"try later"), Answer(200)) as server:
        notify.notify.routes = [webhook_route(server)]
        publish(notify, alert)
        with running(notify) as service:
            first, second = server.wait_for(2)
            wait_until_committed(notify)
        assert len(server.received) == 2

    assert first.body == second.body
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == alert.alert_id
    assert service.report.delivered == 1
    assert dead_letters(notify) == []


def test_retry_after_is_honoured(notify):
    with WebhookServer(Answer(429, headers={"Retry-After": "2"}), Answer(200)) as server:
        notify.notify.routes = [webhook_route(server)]
        publish(notify, story_alert())
        with running(notify):
            first, second = server.wait_for(2)
    assert second.at - first.at >= 2.0


def test_an_endpoint_down_for_a_while_gets_the_notification_when_it_is_back(notify, caplog):
    alert = story_alert()
    down = WebhookServer()
    port, url = down.port, down.url
    down.close()  # nothing listens: connections are refused
    notify.notify.routes = [route(name="hook", webhook=WebhookSettings(url=url))]
    notify.notify.max_backoff = 2.0
    publish(notify, alert)
    with running(notify) as service:
        began = time.monotonic()

        def failed_attempts() -> int:
            return sum("failed (webhook" in r.getMessage() for r in caplog.records)

        wait_until(lambda: failed_attempts() >= 3, 30, "three failed attempts")
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - began)))  # the rest of the outage
        assert service.report.delivered == 0
        with WebhookServer(port=port) as back:
            (request,) = back.wait_for(1, timeout=10)
            wait_until_committed(notify)
    assert request.headers["idempotency-key"] == alert.alert_id
    assert service.report.delivered == 1
    assert dead_letters(notify) == []


def test_a_400_ends_in_a_dead_letter_with_the_reason(notify):
    alert = story_alert()
    with WebhookServer(Answer(400, b"unknown field 'signals'")) as server:
        notify.notify.routes = [webhook_route(server)]
        publish(notify, alert)
        with running(notify):
            server.wait_for(1)
            wait_until_committed(notify)
        assert len(server.received) == 1  # not retried

    (letter,) = dead_letters(notify)
    assert letter.stage == "notify"
    assert letter.error == "PermanentFailure"
    assert "HTTP 400" in letter.message
    assert "unknown field 'signals'" in letter.message
    assert "route hook" in letter.message
    assert letter.key == alert.alert_id
    assert letter.origin == f"{notify.kafka.story_alerts_topic}/0@0"
    assert json.loads(letter.payload)["alert_id"] == alert.alert_id


def test_retries_exhausted_end_in_a_dead_letter(notify):
    notify.notify.give_up_after = 2.0
    with WebhookServer(Answer(503)) as server:
        notify.notify.routes = [webhook_route(server)]
        publish(notify, story_alert())
        with running(notify):
            wait_until_committed(notify)
        attempts = len(server.received)

    (letter,) = dead_letters(notify)
    assert letter.error == "RetriesExhausted"
    assert f"gave up after {attempts} attempts" in letter.message
    assert "HTTP 503" in letter.message
    assert attempts >= 2


def test_unreadable_records_become_dead_letters_and_delivery_goes_on(notify):
    wrong_type = story_alert("odd").to_dict()
    wrong_type["story"]["severity"] = "high"
    with WebhookServer() as server:
        notify.notify.routes = [webhook_route(server)]
        publish(notify, b"\xff not json", json.dumps(wrong_type).encode(), story_alert())
        with running(notify):
            (request,) = server.wait_for(1)
            wait_until_committed(notify)

    assert json.loads(request.body)["story_id"] == "story-1"
    garbage, odd = dead_letters(notify)
    assert (garbage.stage, garbage.error) == ("notify", "SchemaError")
    assert garbage.origin == f"{notify.kafka.story_alerts_topic}/0@0"
    assert garbage.payload == b"\xff not json"
    assert odd.origin == f"{notify.kafka.story_alerts_topic}/0@1"
    assert odd.message == "Story: severity must be int, not str"


def test_slack_format_is_a_text_message_with_the_headline_and_link(notify):
    headline = "Taiwan <b>& China</b> talks"
    with WebhookServer() as server:
        hook = WebhookSettings(url=server.url, format="slack")
        notify.notify.routes = [route(name="chat", webhook=hook)]
        publish(notify, story_alert(headline=headline))
        with running(notify):
            (request,) = server.wait_for(1)

    text = json.loads(request.body)["text"]
    assert set(json.loads(request.body)) == {"text"}
    assert f"<{LINK}|Taiwan &lt;b&gt;&amp; China&lt;/b&gt; talks>" in text
    assert "severity 2" in text
    assert EVIDENCE in text


def test_article_alerts_are_delivered_when_followed(notify):
    alert = Alert(
        alert_id="a1b2c3", article_id="art-1", url=LINK, title=HEADLINE, source="Outlet 0",
        published="2026-12-03T08:00:00Z", escalation_score=0.91, signals=["military"],
        signal_scores={"military": 0.9}, severity=3, evidence=[EVIDENCE], model="m",
        model_version="v1", ingested_at="2026-12-03T08:01:00Z", alerted_at="2026-12-03T08:02:00Z",
    )  # fmt: skip
    notify.notify.follow = ["articles"]
    with WebhookServer() as server:
        notify.notify.routes = [webhook_route(server)]
        producer = make_producer(notify.bootstrap_servers)
        producer.send(notify.kafka.alerts_topic, key=b"a1b2c3", value=alert.to_bytes()).get(30)
        producer.close()
        with running(notify):
            (request,) = server.wait_for(1)

    body = json.loads(request.body)
    assert (body["kind"], body["alert_id"], body["story_id"]) == ("article", "a1b2c3", None)
    assert body["headline"] == HEADLINE and body["evidence"][0]["sentence"] == EVIDENCE
    assert request.headers["idempotency-key"] == "a1b2c3"
