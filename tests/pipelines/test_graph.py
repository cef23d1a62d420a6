"""The classification graph on Beam's TestStream: records in, one outcome per record out.

`classify_records` is the pipeline between the Kafka read and the Kafka write, so it can
be fed a `TestStream` of records and its `OutboundRecord`s asserted, with the real model
and no broker (story clustering, which recovers its state from Kafka, is off here).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from models.handler import EscalationModelHandler
from newswatch.config import Settings
from newswatch.schemas import Alert, DeadLetter, Decision
from pipelines.classify import classify_records
from pipelines.kafka_read import KafkaRecord
from tests.articles import non_taiwan_articles, seed_article


def _record(offset: int, key: bytes, value: bytes) -> KafkaRecord:
    return KafkaRecord("articles", 0, offset, offset, key, value, 1_764_000_000_000 + offset)


def _outcome(outbound) -> tuple:
    """(offset, what was written: topic and its record's gist)."""
    written = []
    for message in outbound.messages:
        if message.topic.endswith("decisions"):
            decision = Decision.from_bytes(message.value)
            written.append(("decision", decision.article_id, decision.alert))
        elif message.topic.endswith("alerts"):
            written.append(("alert", Alert.from_bytes(message.value).article_id))
        else:
            letter = DeadLetter.from_bytes(message.value)
            written.append(("dead letter", letter.stage, letter.origin))
    return outbound.ack.start, outbound.ack.end, tuple(sorted(written))


def test_a_valid_article_a_garbage_record_and_an_escalation_each_get_their_outcome():
    settings = Settings()
    settings.stories.enabled = False
    calm, seed = non_taiwan_articles(1)[0], seed_article()
    stream = (
        TestStream()
        .add_elements([_record(0, calm.id.encode(), calm.to_bytes())])
        .add_elements([_record(1, b"junk", b"\xff\xfe not json {")])
        .add_elements([_record(2, seed.id.encode(), seed.to_bytes())])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as pipeline:
        handler = EscalationModelHandler(settings.model)
        outcomes = classify_records(pipeline | stream, settings, handler)
        assert_that(
            outcomes | beam.Map(_outcome),
            equal_to(
                [
                    (0, 1, (("decision", calm.id, False),)),
                    (1, 2, (("dead letter", "decode", "articles/0@1"),)),
                    (2, 3, (("alert", seed.id), ("decision", seed.id, True))),
                ]
            ),
        )
