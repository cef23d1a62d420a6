"""Local documents -> articles and dead letters, and finding new and changed files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from connectors.files import changed_files, decode_text, read_document
from newswatch.config import PROJECT_ROOT
from newswatch.schemas import article_id

SEED = PROJECT_ROOT / "seeds" / "000_926da616d7d9c5df.txt"
DEV = Path("/work/shared/data/labelled/dev.jsonl")
FEEDS = Path(__file__).parents[1] / "data" / "feeds"


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_seed_text_file_becomes_one_article_titled_by_its_first_line():
    data = SEED.read_bytes()
    lines = [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
    document = read_document(SEED)
    assert document.bad == [] and document.encoding == "utf-8"
    (article,) = document.good
    assert article.title == lines[0]
    assert article.text == "\n".join(lines[1:])
    assert article.id == article_id("file:" + hashlib.sha256(data).hexdigest())
    assert article.url == "" and article.published is None
    assert article.feed == str(SEED) and article.source == "seeds"


def test_document_id_survives_a_move_and_changes_with_the_content(tmp_path):
    moved = shutil.copy(SEED, tmp_path / "renamed.txt")
    assert read_document(Path(moved)).good[0].id == read_document(SEED).good[0].id
    edited = write(tmp_path / "edited.txt", SEED.read_bytes() + b"\nA correction.")
    assert read_document(edited).good[0].id != read_document(SEED).good[0].id


def test_labelled_jsonl_rows_become_articles():
    document = read_document(DEV)
    rows = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines()]
    assert document.bad == []
    assert len(document.good) == len(rows) == len({a.id for a in document.good})
    first, row = document.good[0], rows[0]
    assert first.title == row["title"]
    assert first.text == row["summary"]
    assert first.url == row["url"] and first.id == article_id(row["url"])
    assert first.source == row["source"]
    assert first.published == "2020-01-02T08:26:44Z"
    assert first.feed == str(DEV)


def test_bad_jsonl_lines_become_dead_letters_and_the_rest_pass(tmp_path):
    path = write(
        tmp_path / "rows.jsonl",
        '{"title": "Strait transit", "text": "A destroyer sailed through.", "id": "r1"}\n'
        "{not json\n"
        "\n"
        '["a", "list"]\n'
        '{"url": "https://x.example/empty"}\n'
        '{"summary": "Untitled body text.", "published": "Tue, 10 Aug 2021 03:00:00 GMT"}\n',
    )
    document = read_document(path)
    assert [a.title for a in document.good] == ["Strait transit", "Untitled body text."]
    assert document.good[0].id == article_id("id:r1")
    assert document.good[1].published == "2021-08-10T03:00:00Z"
    assert [(d.error, d.origin) for d in document.bad] == [
        ("MalformedDocument", f"{path}:2"),
        ("MalformedDocument", f"{path}:4"),
        ("EmptyEntry", f"{path}:5"),
    ]
    assert document.bad[2].key == article_id("https://x.example/empty")


def test_json_file_may_hold_one_object_or_a_list(tmp_path):
    one = write(tmp_path / "one.json", json.dumps({"title": "One", "content": "<p>Body</p>"}))
    many = write(tmp_path / "many.json", json.dumps([{"title": "A"}, {"title": "B"}]))
    assert [(a.title, a.text) for a in read_document(one).good] == [("One", "Body")]
    assert [a.title for a in read_document(many).good] == ["A", "B"]


def test_invalid_json_file_becomes_a_dead_letter(tmp_path):
    path = write(tmp_path / "broken.json", '{"title": "cut off')
    document = read_document(path)
    assert document.good == []
    (letter,) = document.bad
    assert letter.error == "MalformedDocument" and letter.payload == path.read_bytes()


def test_html_page_gives_title_visible_text_and_metadata(tmp_path):
    page = write(
        tmp_path / "page.html",
        """<!doctype html><html lang="en"><head>
        <meta charset="utf-8"><title>PLA drills near Taiwan | Example News</title>
        <link rel="canonical" href="https://news.example/pla-drills?utm_medium=social">
        <meta property="article:published_time" content="2022-08-04T12:30:00+08:00">
        <meta property="og:site_name" content="Example News">
        <style>body { color: red }</style><script>var x = 1;</script></head>
        <body><nav>Home</nav><h1>PLA drills near Taiwan</h1>
        <p>Live-fire exercises began&nbsp;on Thursday.</p><p>Ships   were seen.</p>
        </body></html>""",
    )
    (article,) = read_document(page).good
    assert article.title == "PLA drills near Taiwan"
    assert article.text == "Home\nLive-fire exercises began on Thursday.\nShips were seen."
    assert article.url == "https://news.example/pla-drills"
    assert article.id == article_id("https://news.example/pla-drills")
    assert article.published == "2022-08-04T04:30:00Z"
    assert article.source == "Example News" and article.language == "en"


def test_xml_snapshot_is_read_like_a_feed(tmp_path):
    snapshot = shutil.copy(FEEDS / "bbc_2020-08-31T06-51-28Z.xml", tmp_path / "bbc.xml")
    document = read_document(Path(snapshot))
    assert len(document.good) == 53
    assert {a.source for a in document.good} == {"BBC News - Home"}


def test_malformed_xml_snapshot_becomes_a_dead_letter(tmp_path):
    page = shutil.copy(FEEDS / "malformed" / "latimes_2021-09-19T23-55-33Z.xml", tmp_path)
    document = read_document(Path(page))
    assert document.good == []
    assert [(d.stage, d.error) for d in document.bad] == [("parse", "NotAFeed")]


def test_latin1_text_is_decoded_and_the_encoding_recorded(tmp_path):
    text = "Taïwan : le président réagit\nLes manœuvres « ont commencé » à l\u2019aube."
    document = read_document(write(tmp_path / "fr.txt", text.encode("cp1252")))
    assert document.encoding == "cp1252" and document.fallback_decoding
    (article,) = document.good
    assert article.title == "Taïwan : le président réagit"
    assert article.text == "Les manœuvres « ont commencé » à l\u2019aube."


def test_mixed_utf8_and_latin1_lines_are_each_decoded(tmp_path):
    data = "Déclaration officielle\n".encode() + "Le ministère a répondu.\n".encode("latin-1")
    document = read_document(write(tmp_path / "mixed.txt", data))
    assert document.encoding == "mixed utf-8/cp1252"
    (article,) = document.good
    assert (article.title, article.text) == ("Déclaration officielle", "Le ministère a répondu.")


def test_big5_document_is_detected(tmp_path):
    text = "國防部：共機擾台\n國防部今天表示，共軍軍機與軍艦在台海周邊活動，國軍嚴密監控。"  # noqa: RUF001
    document = read_document(write(tmp_path / "zh.txt", text.encode("big5")))
    assert document.encoding.startswith("big5")
    assert document.good[0].title == "國防部：共機擾台"  # noqa: RUF001


def test_declared_html_charset_is_used(tmp_path):
    page = '<html><head><meta charset="iso-8859-1"><title>Défense</title></head><body>Été</body>'
    document = read_document(write(tmp_path / "p.html", page.encode("latin-1")))
    assert document.encoding == "iso-8859-1"
    assert (document.good[0].title, document.good[0].text) == ("Défense", "Été")


def test_binary_file_becomes_a_decode_dead_letter(tmp_path):
    data = bytes(range(256)) * 4
    (letter,) = read_document(write(tmp_path / "image.txt", data)).bad
    assert (letter.stage, letter.error) == ("decode", "UndecodableDocument")
    assert letter.payload == data


def test_undecodable_replacement_noise_is_refused():
    with pytest.raises(ValueError, match="replacement"):
        decode_text(b"\xff\xfe\xfd" * 200 + b"\x81" * 600)


@pytest.mark.parametrize("content", [b"", b"  \n\t\n"])
def test_empty_file_becomes_a_dead_letter(tmp_path, content):
    document = read_document(write(tmp_path / "empty.txt", content))
    assert document.good == []
    assert [d.error for d in document.bad] == ["EmptyDocument"]


def test_oversized_file_becomes_a_dead_letter_with_a_bounded_payload(tmp_path):
    path = write(tmp_path / "big.txt", "title\n" + "x" * 200_000)
    (letter,) = read_document(path, max_bytes=100_000).bad
    assert letter.error == "DocumentTooLarge"
    assert len(letter.payload) <= 64 * 1024


def test_feed_list_is_not_an_article():
    document = read_document(PROJECT_ROOT / "seeds" / "feeds.txt")
    assert document.skipped == "feed list" and document.good == [] and document.bad == []


def test_changed_files_finds_new_and_changed_documents_only(tmp_path):
    a = write(tmp_path / "a.txt", "A\nbody")
    write(tmp_path / "sub" / "b.jsonl", '{"title": "B"}\n')
    write(tmp_path / "notes.md", "not a document type")
    write(tmp_path / ".hidden.txt", "hidden")
    write(tmp_path / "draft.txt.part", "partial")
    changes, gone = changed_files(tmp_path, {})
    assert [c.relative for c in changes] == ["a.txt", "sub/b.jsonl"] and gone == []

    known = {c.relative: {"size": c.size, "mtime_ns": c.mtime_ns} for c in changes}
    assert changed_files(tmp_path, known) == ([], [])
    write(a, "A\nnew body")
    os.utime(a, ns=(known["a.txt"]["mtime_ns"] + 10**9,) * 2)
    (tmp_path / "sub" / "b.jsonl").unlink()
    changes, gone = changed_files(tmp_path, known)
    assert [c.relative for c in changes] == ["a.txt"] and gone == ["sub/b.jsonl"]


def test_files_still_being_written_wait_for_the_next_scan(tmp_path):
    path = write(tmp_path / "fresh.txt", "Fresh\nbody")
    now = path.stat().st_mtime
    assert changed_files(tmp_path, {}, settle=1.0, now=now + 0.1)[0] == []
    assert len(changed_files(tmp_path, {}, settle=1.0, now=now + 2.0)[0]) == 1


def test_a_single_file_can_be_watched(tmp_path):
    path = write(tmp_path / "only.jsonl", '{"title": "x"}\n')
    write(tmp_path / "other.txt", "other\n")
    changes, _ = changed_files(path, {})
    assert [c.relative for c in changes] == ["only.jsonl"]
