"""Sentences and windows: how long articles become model inputs."""

from __future__ import annotations

import itertools

from models.text import MAX_WINDOW_CHARS, join_title, split_sentences, windows


def test_sentences_respect_abbreviations_and_initials():
    text = "The U.S. Navy said Mr. Smith arrived. Gen. Lee left! Did J. K. Rowling?"
    assert split_sentences(text) == [
        "The U.S. Navy said Mr. Smith arrived.",
        "Gen. Lee left!",
        "Did J. K. Rowling?",
    ]


def test_every_line_ends_a_sentence():
    assert split_sentences("Headline without stop\nBody one. Body two.") == [
        "Headline without stop",
        "Body one.",
        "Body two.",
    ]


def test_short_text_is_one_window():
    sentences = ["One.", "Two.", "Three.", "Four."]
    (window,) = windows(sentences)
    assert (window.start, window.end) == (0, 4)
    assert window.text == "One. Two. Three. Four."


def test_windows_cover_long_text_with_overlap(seed_text):
    sentences = split_sentences(seed_text)
    spans = windows(sentences)
    assert len(spans) > 5
    covered = set()
    for span in spans:
        covered.update(range(span.start, span.end))
        assert len(span.text) <= MAX_WINDOW_CHARS
        assert span.end - span.start <= 3
    assert covered == set(range(len(sentences)))
    assert all(b.start < a.end for a, b in itertools.pairwise(spans))


def test_an_overlong_sentence_is_cut_at_word_breaks():
    sentence = " ".join(["word"] * 400)
    parts = split_sentences(sentence)
    assert len(parts) > 1
    assert all(len(p) <= MAX_WINDOW_CHARS for p in parts)
    assert " ".join(parts) == sentence


def test_title_joins_body_like_training_rows():
    assert join_title("China warns Japan", "It said so.") == "China warns Japan. It said so."
    assert join_title("Why?", "Because.") == "Why? Because."
    assert join_title("", "Body.") == "Body."
