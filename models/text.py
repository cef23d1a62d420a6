"""Sentences and sentence windows: how an article becomes model inputs.

The classifier is trained on headline + summary (a few hundred characters),
so a long body is cut into overlapping windows of a few sentences, each
prefixed with the headline and scored on its own. Article scores are the
maximum over windows, and the evidence is taken from the sentences of the
top-scoring windows. Short texts make one window, exactly as in training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_WINDOW_CHARS",
    "WINDOW_SENTENCES",
    "WINDOW_STRIDE",
    "Window",
    "join_title",
    "split_sentences",
    "windows",
]

#: Sentences per window, and how far the next window starts (1 sentence overlap).
WINDOW_SENTENCES = 3
WINDOW_STRIDE = 2
#: A window never exceeds this many characters of body text (headline excluded).
MAX_WINDOW_CHARS = 500

# A full stop, "!" or "?" (plus closing quotes/brackets) followed by space and an
# opening quote, capital or digit is a sentence boundary, unless the word before
# it is a known abbreviation or an initial.
_CLOSERS = "\"')]\u2019\u201d"
_OPENERS = '"([\u2018\u201c'
_BOUNDARY = re.compile(
    rf"(?<=[.!?])[{re.escape(_CLOSERS)}]*\s+(?=[{re.escape(_OPENERS)}]?[A-Z0-9])"
)
_ABBREVIATIONS = frozenset(
    re.findall(
        r"\w+",
        "mr mrs ms dr prof gen lt col maj capt sgt adm rep sen gov pres st jr sr no vs etc "
        "inc corp co ltd jan feb mar apr jun jul aug sep sept oct nov dec fig approx",
    )
)
_INITIALS = re.compile(r"(?:\b[A-Za-z]\.)+$")
_SPACE = re.compile(r"[ \t\r\f\v]+")


@dataclass(frozen=True, slots=True)
class Window:
    """Consecutive sentences ``sentences[start:end]`` of a document, joined."""

    start: int
    end: int
    text: str


def split_sentences(text: str) -> list[str]:
    """Split plain text into sentences; every line break also ends a sentence."""
    sentences: list[str] = []
    for raw_line in text.splitlines():
        line = _SPACE.sub(" ", raw_line).strip()
        if not line:
            continue
        begin = 0
        for match in _BOUNDARY.finditer(line):
            head = line[begin : match.start()].rstrip(_CLOSERS)
            last_word = head.rsplit(" ", 1)[-1]
            if last_word.rstrip(".").lower() in _ABBREVIATIONS or _INITIALS.search(last_word):
                continue
            sentences.append(line[begin : match.start()].strip() + match.group(0).strip())
            begin = match.end()
        tail = line[begin:].strip()
        if tail:
            sentences.append(tail)
    return _cut_long(sentences)


def _cut_long(sentences: list[str]) -> list[str]:
    """Cut run-on 'sentences' (lists, tables, missing punctuation) at word breaks."""
    out: list[str] = []
    for sentence in sentences:
        while len(sentence) > MAX_WINDOW_CHARS:
            cut = sentence.rfind(" ", 0, MAX_WINDOW_CHARS)
            cut = cut if cut > MAX_WINDOW_CHARS // 2 else MAX_WINDOW_CHARS
            out.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            out.append(sentence)
    return out


def windows(
    sentences: list[str],
    size: int = WINDOW_SENTENCES,
    stride: int = WINDOW_STRIDE,
    max_chars: int = MAX_WINDOW_CHARS,
) -> list[Window]:
    """Overlapping windows of up to ``size`` sentences that together cover every sentence.

    A text that fits in ``max_chars`` is a single window. Otherwise a window
    starts every ``stride`` sentences and closes early when adding a sentence
    would pass ``max_chars``; the next window then starts where it stopped.
    """
    if not sentences:
        return []
    whole = " ".join(sentences)
    if len(whole) <= max_chars:
        return [Window(0, len(sentences), whole)]
    out: list[Window] = []
    start = 0
    while start < len(sentences):
        end = start + 1
        length = len(sentences[start])
        while end < len(sentences) and end - start < size:
            if length + 1 + len(sentences[end]) > max_chars:
                break
            length += 1 + len(sentences[end])
            end += 1
        out.append(Window(start, end, " ".join(sentences[start:end])))
        if end >= len(sentences):
            break
        # Overlap by (size - stride) sentences, but always move forward.
        start = max(end - (size - stride), start + 1)
    return out


def join_title(title: str, body: str) -> str:
    """Headline and body as one model input, the way training items are built."""
    title = _SPACE.sub(" ", title).strip()
    body = _SPACE.sub(" ", body).strip()
    if not title:
        return body
    if not body:
        return title
    if body.startswith(title):
        return body
    separator = " " if title[-1] in ".!?:;" else ". "
    return f"{title}{separator}{body}"
