"""Routing of pipeline outcomes: every input record ends in exactly one outcome."""

from newswatch.schemas import Article, DeadLetter
from pipelines.offsets import OutcomeAck
from pipelines.transforms import _failed_batch_to_dead_letters


def test_a_failed_model_batch_becomes_one_dead_letter_per_article():
    articles = [
        Article(f"id{i}", "", f"title {i}", "text", None, "src", "feed", "2026-01-01T00:00:00Z")
        for i in range(3)
    ]
    batch = [(OutcomeAck("articles", 0, i, i + 1), a) for i, a in enumerate(articles)]
    # Beam reports a failed batch as (exception type, repr, traceback lines).
    failure = (batch, (RuntimeError, "RuntimeError('onnx session died')", ["..."]))

    records = list(_failed_batch_to_dead_letters(failure, "dead"))

    assert [r.ack for r in records] == [ack for ack, _ in batch]
    letters = [DeadLetter.from_bytes(r.messages[0].value) for r in records]
    assert [(d.stage, d.key) for d in letters] == [("classify", a.id) for a in articles]
    assert all("onnx session died" in d.message for d in letters)
    assert Article.from_bytes(letters[0].payload) == articles[0]
