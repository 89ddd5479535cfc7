"""The public unsubscribe page in headless Chromium, against a real `dispatch web` on SQLite and PostgreSQL:
a supporter opens the link of their copy, sees their address masked, presses the button and is unsubscribed.

The page shows no supporter's name (templates/web/unsubscribe.html.j2: at most the masked address and the
sending organisation), and an organisation's name cannot hold '<' or '>' (it is every email's From display
name): markup is tried through a supporter's name, which must not appear, and entities and quotes through the
organisation's, which must show as typed. Markup in names on the console pages is their tests' part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.models import Delivery, Suppression
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.unsubscribe import unsubscribe_url
from dispatcher.domain.validation import validate

from ..builders import build_campaign, official
from .conftest import Web

ADA = "ada.supporter@example.org"
ADA_SHA256 = "0033f2f0fb340d867feac06d964706aae31cf79561121cd8fed7f3f74164d5c1"  # sha256 of ADA, worked out apart
MARKUP = "<img src=x onerror=\"document.title='injected'\">"
ENTITIES = 'Rights &amp; "Wrongs" &lt;img src=x onerror=alert(1)&gt;'  # as typed, not as HTML would read it


def ada_copy(factory: sessionmaker[Session], folder: Path, *, name: str = "Ada Lovelace", **fields: Any) -> int:
    """Load an email-only campaign copied to Ada (named ``name``); her copy's delivery id."""
    path = build_campaign(
        folder,
        to=[official("A. Minister", email=["minister@gov.example"], salutation="Dear Minister,")],
        cc=[],
        supporters=[(ADA, name)],
        **fields,
    )
    spec = load_spec(path)
    with transaction(factory) as session:
        load_campaign(session, spec, validate(spec, file=path), source=path)
    with factory() as session:
        return session.scalars(select(Delivery.id).where(Delivery.destination == ADA)).one()


def suppressed(factory: sessionmaker[Session]) -> list[tuple[str, str, str]]:
    with factory() as session:
        return [(s.email_sha256, s.reason, s.source) for s in session.scalars(select(Suppression))]


def test_a_supporter_unsubscribes_from_the_page_of_their_copy(
    page: webdriver.Chrome, web: Web, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    copy_id = ada_copy(factory, tmp_path)
    page.get(unsubscribe_url(web.base, web.secret, copy_id))

    assert page.title == "Unsubscribe"
    body = page.find_element(By.TAG_NAME, "body").text
    assert "a***@example.org receives a copy of each letter Human Rights Watch sends on your behalf." in body
    assert ADA not in page.page_source
    assert suppressed(factory) == []  # opening the link unsubscribes nobody

    page.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(page, 10).until(expected_conditions.title_is("Unsubscribed"))
    assert page.find_element(By.TAG_NAME, "h1").text == "Unsubscribed"
    assert (
        "You are unsubscribed: a***@example.org will receive no more copies of letters from Human Rights "
        "Watch." in page.find_element(By.TAG_NAME, "body").text
    )
    assert page.find_elements(By.TAG_NAME, "form") == []
    assert suppressed(factory) == [(ADA_SHA256, "unsubscribed", "unsubscribe-page")]


def test_markup_in_a_name_is_shown_as_text(
    page: webdriver.Chrome, web: Web, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    copy_id = ada_copy(factory, tmp_path, name=MARKUP, sender={"organisation": ENTITIES})
    page.get(unsubscribe_url(web.base, web.secret, copy_id))

    assert page.title == "Unsubscribe"
    assert page.find_elements(By.TAG_NAME, "img") == []
    assert "onerror" not in page.page_source.replace("onerror=alert(1)", "")  # the supporter's name: nowhere
    paragraph = page.find_element(By.TAG_NAME, "p").text
    assert paragraph == f"a***@example.org receives a copy of each letter {ENTITIES} sends on your behalf."
