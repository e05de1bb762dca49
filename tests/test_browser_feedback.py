"""The page's "Wrong? Choose the right class", in Chromium, against the Procfile server.

The feedback goes through the real server into its database, shows in /monitoring, and is
still there when a new server starts on the same database.
"""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
from playwright.sync_api import Page, expect

from testing.browser import CHOOSE, DESKTOP
from testing.servers import procfile_server

pytestmark = pytest.mark.slow

expect.set_options(timeout=30_000)
QUESTION = "Wrong? Choose the right class"


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url) as response:
        return json.load(response)


@pytest.fixture
def database(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'monitoring.sqlite'}"


@pytest.fixture
def open_page(browser):
    """Open a page; afterwards, check that it raised no script error."""
    opened: list[tuple[Page, list[str]]] = []

    def open_(url: str) -> Page:
        page = browser.new_context(**DESKTOP).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        expect(page.locator("html")).to_have_attribute("data-ready", "true")
        opened.append((page, errors))
        return page

    yield open_
    for page, errors in opened:
        page.context.close()
        assert not errors, errors


def test_feedback_from_the_page_is_recorded_and_survives_a_restart(open_page, database, data_dir, tmp_path):
    beach = data_dir / "ucmerced" / "beach" / "beach00.jpg"
    with procfile_server(env={"DATABASE_URL": database}, log_path=tmp_path / "first.log") as (url, _):
        page = open_page(url)
        expect(page.locator("#classes-box")).to_be_visible()  # the model's classes are loaded
        page.get_by_label(CHOOSE).set_input_files(beach)
        expect(page.get_by_role("status")).to_have_text(re.compile(r"^beach00\.jpg: "))
        predicted = page.locator("#scores li").first.get_attribute("data-label")
        right = next(label for label in get_json(f"{url}/model")["labels"] if label != predicted)

        # By keyboard: from the file chooser, past the two switches and the class list, to the question.
        choice = page.get_by_role("combobox", name=QUESTION)
        expect(choice).to_be_visible()
        page.get_by_label(CHOOSE).focus()
        for _ in range(4):
            page.keyboard.press("Tab")
        expect(choice).to_be_focused()
        choice.select_option(right)
        page.keyboard.press("Tab")
        send = page.get_by_role("button", name="Send")
        expect(send).to_be_focused()
        with page.expect_response(re.compile(r"/feedback$")) as answer:
            page.keyboard.press("Enter")
        assert answer.value.status == 200 and answer.value.json()["label"] == right

        note = page.locator("#feedback-note")
        expect(note).to_have_text(f"Recorded: beach00.jpg is {right}. Thank you.")
        expect(note).to_have_attribute("aria-live", "polite")  # read out by screen readers
        first = get_json(f"{url}/monitoring")["feedback"]
        assert first == {"total": 1, "correct": 0, "accuracy": 0.0}

        # Changing one's mind replaces the answer, and the page says so.
        choice.select_option(predicted)
        send.click()
        expect(note).to_have_text(f"Recorded: beach00.jpg is {predicted} (instead of {right}). Thank you.")
        assert get_json(f"{url}/monitoring")["feedback"] == {"total": 1, "correct": 1, "accuracy": 1.0}

    with procfile_server(env={"DATABASE_URL": database}, log_path=tmp_path / "second.log") as (url, _):
        assert get_json(f"{url}/monitoring")["feedback"] == {"total": 1, "correct": 1, "accuracy": 1.0}
        scraped = urllib.request.urlopen(f"{url}/metrics").read().decode()
        assert re.search(r'^monitoring_feedback_accuracy\{[^}]*\} 1\.0$', scraped, re.M)


def test_there_is_nothing_to_correct_after_an_error(open_page, database, tmp_path):
    with procfile_server(env={"DATABASE_URL": database}, log_path=tmp_path / "server.log") as (url, _):
        page = open_page(url)
        page.get_by_label(CHOOSE).set_input_files(files={"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture"})
        expect(page.get_by_role("alert")).to_contain_text("not an image")
        expect(page.get_by_role("combobox", name=QUESTION)).to_be_hidden()


@pytest.mark.parametrize(
    "code, sentence",
    [
        ("unknown_request_id", "The server has no record of this answer (it was not stored, or is too old to keep)."),
        ("database_unavailable", "The server cannot store answers at the moment. Try again in a minute."),
    ],
)
def test_an_unrecorded_answer_says_why_in_words(open_page, database, data_dir, tmp_path, code, sentence):
    """The API's messages are for curl users; the page has its own sentence for each."""
    with procfile_server(env={"DATABASE_URL": database}, log_path=tmp_path / "server.log") as (url, _):
        page = open_page(url)
        status = 404 if code == "unknown_request_id" else 503
        page.route("**/feedback", lambda route: route.fulfill(
            status=status, json={"error": {"code": code, "message": "A message for curl users."}}))
        page.get_by_label(CHOOSE).set_input_files(data_dir / "ucmerced" / "beach" / "beach00.jpg")
        choice = page.get_by_role("combobox", name=QUESTION)
        choice.select_option(get_json(f"{url}/model")["labels"][0])
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#feedback-note")).to_have_text(f"Not recorded: {sentence}")
