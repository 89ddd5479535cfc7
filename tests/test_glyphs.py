"""Validation refuses a character the fax's fonts cannot draw, naming where it is and which it is."""

from __future__ import annotations

from pathlib import Path

from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.errors import Problem
from dispatcher.domain.validation import Report, validate

from .builders import build_campaign, guo_shengkun, official, xi_jinping

CANNOT = "which the fax's fonts cannot draw"


def check(path: Path) -> Report:
    return validate(load_spec(path), file=path)


def placed(problems: list[Problem]) -> list[tuple[str, str, str]]:
    return [(p.where, p.field, p.message) for p in problems]


def test_every_script_of_the_letter_validates(tmp_path: Path) -> None:
    template = (
        "{{ to.salutation }}\n\n감사합니다. شكرا لكم. תודה רבה. Спасибо, Україна. Ευχαριστούμε. धन्यवाद. ขอบคุณมาก.\n"
    )
    to = official("김정은", salutation="귀하", fax=["+86 10 6307 0900"], organisation="وزارة الخارجية")
    report = check(build_campaign(tmp_path, template=template, to=[to]))
    assert report.errors == []


def test_a_private_use_character_in_an_addressee_is_named(tmp_path: Path) -> None:
    report = check(build_campaign(tmp_path, to=[xi_jinping(title="President\ue000")]))
    assert placed(report.errors) == [
        ("to[0] (Xi Jinping)", "title", f"contains U+E000 (a private-use character) at character 10, {CANNOT}")
    ]


def test_a_cc_address_line_is_checked_too(tmp_path: Path) -> None:
    cc = guo_shengkun(address=["No. 14, Donchanganjie", "Beijing \U00013000"])
    report = check(build_campaign(tmp_path, cc=[cc]))
    assert placed(report.errors) == [
        (
            "cc[0] (Guo Shengkun)",
            "address[1]",
            f"contains U+13000 (EGYPTIAN HIEROGLYPH A001) at character 9, {CANNOT}",
        )
    ]


def test_the_sender_and_the_subject_are_checked(tmp_path: Path) -> None:
    report = check(
        build_campaign(tmp_path, sender={"signatory": "Sophie \ue001"}, letter={"subject": "Nine \U00013000 refugees"})
    )
    assert placed(report.errors) == [
        ("sender", "signatory", f"contains U+E001 (a private-use character) at character 8, {CANNOT}"),
        ("letter", "subject", f"contains U+13000 (EGYPTIAN HIEROGLYPH A001) at character 6, {CANNOT}"),
    ]


def test_a_character_in_the_template_names_its_line(tmp_path: Path) -> None:
    report = check(build_campaign(tmp_path, template="{{ to.salutation }}\n\nWe \U00013000 ask.\n"))
    assert placed(report.errors) == [
        ("letter template", "line 3", f"contains U+13000 (EGYPTIAN HIEROGLYPH A001) at character 4, {CANNOT}")
    ]
    assert report.errors[0].file.endswith("letter.txt.j2")


def test_a_character_the_template_makes_names_the_letter(tmp_path: Path) -> None:
    """No field and no line of the template holds it: the letter rendered for an addressee does."""
    report = check(build_campaign(tmp_path, template='{{ to.salutation }}\n\nWe {{ "\\ue000" }} ask.\n'))
    assert placed(report.errors) == [
        (
            "letter template",
            "",
            f"the letter to to[0] (Xi Jinping) contains U+E000 (a private-use character), {CANNOT}",
        )
    ]
