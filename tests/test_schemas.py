"""Topic records refuse JSON of the wrong shape with a reason, before any step sees it."""

from __future__ import annotations

import json

import pytest

from newswatch.schemas import Article, SchemaError, Story, StoryArticle

ARTICLE = {
    "id": "a1",
    "url": "https://example.org/a",
    "title": "China holds drills around Taiwan",
    "text": "Drills.",
    "published": "2023-04-08T03:00:00Z",
    "source": "example.org",
    "feed": "https://example.org/rss",
    "ingested_at": "2023-04-08T03:01:00Z",
}
MEMBER = {"article_id": "a1", "url": "u", "title": "t", "source": "s", "published": None}
STORY = {
    "story_id": "s1",
    "headline": "t",
    "first_seen": "2023-04-08T03:00:00Z",
    "last_seen": "2023-04-08T03:00:00Z",
    "articles": [MEMBER],
    "outlets": 1,
    "escalation": True,
    "max_score": 0.9,
    "signals": {"military": 1},
    "severity": 3,
    "evidence": [],
    "status": "active",
    "status_changed_at": "2023-04-08T03:00:00Z",
    "updated_at": "2023-04-08T03:00:00Z",
}


def test_a_field_of_the_wrong_json_type_is_refused_by_name():
    with pytest.raises(SchemaError, match=r"Article: title must be str, not int"):
        Article.from_bytes(json.dumps({**ARTICLE, "title": 7}).encode())
    with pytest.raises(SchemaError, match=r"Article: published must be str or null, not list"):
        Article.from_dict({**ARTICLE, "published": ["2024"]})


def test_a_boolean_is_not_a_number_but_an_integer_is_a_float():
    with pytest.raises(
        SchemaError, match=r"StoryArticle: escalation_score must be float, not bool"
    ):
        StoryArticle.from_dict({**MEMBER, "escalation_score": True})
    assert StoryArticle.from_dict({**MEMBER, "escalation_score": 1}).escalation_score == 1


def test_records_written_by_newswatch_read_back_unchanged():
    article = Article.from_dict(ARTICLE)
    assert Article.from_bytes(article.to_bytes()) == article
    story = Story.from_dict(STORY)
    assert Story.from_bytes(story.to_bytes()) == story


def test_nested_records_check_their_own_fields():
    with pytest.raises(SchemaError, match=r"StoryArticle: url must be str, not int"):
        Story.from_dict({**STORY, "articles": [{**MEMBER, "url": 3}]})
