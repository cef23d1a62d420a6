"""The live page in a real headless browser: Debian's chromium driven by Selenium.

The page is ``newswatch serve`` as an operator runs it, on the session broker;
stories and alerts are published to the topics while the page is open and must
appear without a reload, with their evidence. A headline whose entities decode to
an ``<img onerror=...>`` tag must stay text. A screenshot is saved under the
test's tmp dir.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from connectors.feeds import parse_feed
from newswatch.schemas import Alert
from tests.web.conftest import make_alert, make_story, publish_alerts, publish_stories

#: Seconds a published record may take to show on the open page.
APPEAR_WITHIN = 10.0


def _binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        f"{names[0]} is needed for the browser test: apt-get install -y chromium chromium-driver "
        "(deploy/setup.sh step 4)",
        pytrace=False,
    )


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    """Headless chromium with its browser console log kept."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a driver
    options = Options()
    options.binary_location = _binary("chromium", "chromium-browser")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1400",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        service=Service(executable_path=_binary("chromedriver")), options=options
    )
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: webdriver.Chrome) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def appears(driver: webdriver.Chrome, element_id: str) -> float:
    """Seconds until the element is on the page (fails after `APPEAR_WITHIN`)."""
    began = time.monotonic()
    WebDriverWait(driver, APPEAR_WITHIN, poll_frequency=0.1).until(
        lambda d: d.find_elements(By.ID, element_id)
    )
    return time.monotonic() - began


def open_live_page(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url + "/")
    WebDriverWait(driver, 15).until(lambda d: d.find_element(By.ID, "live-status").text == "live")


def test_stories_and_alerts_published_while_the_page_is_open_appear_with_their_evidence(
    settings, serve_page, browser, tmp_path
):
    page = serve_page()
    open_live_page(browser, page.url)
    assert browser.title == "newswatch: live"
    assert console_errors(browser) == []
    story = make_story(
        "PLA drills encircle Taiwan",
        "The PLA launched joint drills around Taiwan on Monday, with live fire near Matsu.",
    )
    alert = make_alert(
        "Coast guard ships enter Kinmen waters",
        "Four China coast guard ships entered restricted waters off Kinmen.",
    )

    publish_stories(settings, [story])
    story_seconds = appears(browser, f"story-{story.story_id}")
    publish_alerts(settings, [alert])
    alert_seconds = appears(browser, f"alert-{alert.alert_id}")

    story_row = browser.find_element(By.ID, f"story-{story.story_id}")
    assert "PLA drills encircle Taiwan" in story_row.text
    assert "live fire near Matsu" in story_row.find_element(By.CSS_SELECTOR, ".evidence").text
    assert "escalated" in story_row.text.lower() and "military 2" in story_row.text
    alert_row = browser.find_element(By.ID, f"alert-{alert.alert_id}")
    assert (
        "restricted waters off Kinmen" in alert_row.find_element(By.CSS_SELECTOR, ".evidence").text
    )
    # The counts follow too, without a reload.
    WebDriverWait(browser, APPEAR_WITHIN).until(
        lambda d: "1 stories" in d.find_element(By.ID, "summary").text
    )
    screenshot = tmp_path / "live-page.png"
    browser.save_screenshot(str(screenshot))
    print(f"\nstory shown {story_seconds:.2f} s and alert {alert_seconds:.2f} s after publishing")
    print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    assert console_errors(browser) == []

    # The story's own page: evidence highlighted, the articles with source, time and link.
    browser.find_element(By.LINK_TEXT, "PLA drills encircle Taiwan").click()
    WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.TAG_NAME, "mark"))
    assert "live fire near Matsu" in browser.find_element(By.TAG_NAME, "mark").text
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "td a")]
    assert f"https://news.example/{story.story_id}/0" in links
    browser.save_screenshot(str(tmp_path / "story-page.png"))
    assert console_errors(browser) == []


HOSTILE_FEED = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Hostile Wire</title>
<item>
  <title>&lt;img src=x onerror="window.pwned=1"&gt; Ships near Kinmen</title>
  <link>https://hostile.example/1</link>
  <guid>hostile-1</guid>
  <description>Coast guard ships sailed near Kinmen.</description>
</item>
</channel></rss>
"""


def test_a_headline_that_decodes_to_a_tag_renders_as_text(settings, serve_page, browser):
    (article,) = parse_feed(HOSTILE_FEED, "https://hostile.example/feed.xml").good
    title = article.title
    assert title.startswith("<img src=x onerror=")  # the feed's entities are decoded
    alert = make_alert(title, "Coast guard ships sailed near Kinmen.", article_id=article.id)
    alert = Alert.from_dict({**alert.to_dict(), "evidence": [title]})
    story = make_story(title, title)
    page = serve_page()
    open_live_page(browser, page.url)

    publish_alerts(settings, [alert])
    publish_stories(settings, [story])
    appears(browser, f"alert-{alert.alert_id}")
    appears(browser, f"story-{story.story_id}")

    rows = [
        browser.find_element(By.ID, f"alert-{alert.alert_id}"),
        browser.find_element(By.ID, f"story-{story.story_id}"),
    ]
    for row in rows:
        assert title in row.find_element(By.CSS_SELECTOR, ".headline").text
        assert title in row.find_element(By.CSS_SELECTOR, ".evidence").text
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    for path in (f"/alerts/{alert.alert_id}", f"/stories/{story.story_id}"):
        browser.get(page.url + path)
        assert title in browser.find_element(By.TAG_NAME, "h1").text
        assert browser.find_elements(By.TAG_NAME, "img") == []
        assert browser.execute_script("return typeof window.pwned") == "undefined"
    assert console_errors(browser) == []
