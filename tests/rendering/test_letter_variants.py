"""Several "To" addressees: each gets the letter written to them; a CC's copy is the letter to the first
"To", or to the one its ``letter_to`` names; ``recipient`` in the template is whom a copy goes to."""

from __future__ import annotations

import email
import io
from pathlib import Path
from typing import Any

from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.messages import EmailMessage, FaxMessage
from dispatcher.domain.models import Addressee, Campaign, Delivery
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.rendering import write_preview
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.validation import validate
from dispatcher.processes.cli import app

from ..builders import build_campaign, guo_shengkun, official, xi_jinping
from .conftest import LETTER_DATE, pdf_page_text

TEMPLATE = "{{ to.salutation }}\n\nThis copy goes to {{ recipient.name }}.\n"
XI = xi_jinping(email=["xi@example.gov.cn"])
WANG = official(
    "Wang Yi", title="Foreign Minister", salutation="Dear Minister Wang,", email=["wang@example.gov.cn"], fax=[]
)
LI = official("Li Qiang", email=["li@example.gov.cn"])


def _campaign(tmp_path: Path, *, template: str = TEMPLATE, **fields: Any) -> Path:
    fields.setdefault("to", [XI, WANG])
    fields.setdefault("cc", [guo_shengkun()])
    return build_campaign(tmp_path / "campaign", template=template, **fields)


def _load(factory: sessionmaker[Session], path: Path) -> None:
    spec = load_spec(path)
    report = validate(spec, file=path)
    assert report.errors == []
    with transaction(factory) as session:
        load_campaign(session, spec, report, source=path)
        session.scalars(select(Campaign)).one().letter_date = LETTER_DATE


def _emails(factory: sessionmaker[Session]) -> dict[str, str]:
    """Each letter email's text by its addressee's name, all rendered by one DocumentCache."""
    documents = DocumentCache()
    texts: dict[str, str] = {}
    with factory() as session:
        query = select(Delivery, Addressee.name).join(Addressee).where(Delivery.channel == "email")
        for delivery, name in session.execute(query).all():
            message = documents.render(delivery).message
            assert isinstance(message, EmailMessage)
            texts[name] = message.text
    return texts


def test_each_to_addressee_gets_the_letter_written_to_them(factory: sessionmaker[Session], tmp_path: Path) -> None:
    _load(factory, _campaign(tmp_path, template="{{ to.salutation }}\n\nWe write to {{ to.name }}.\n"))
    texts = _emails(factory)
    assert texts["Xi Jinping"].startswith("Dear President Xi Jinping,\n\nWe write to Xi Jinping.\n")
    assert texts["Wang Yi"].startswith("Dear Minister Wang,\n\nWe write to Wang Yi.\n")


def test_recipient_is_whom_the_copy_goes_to(factory: sessionmaker[Session], tmp_path: Path) -> None:
    _load(factory, _campaign(tmp_path))
    texts = _emails(factory)
    assert texts["Xi Jinping"].startswith("Dear President Xi Jinping,\n\nThis copy goes to Xi Jinping.\n")
    assert texts["Wang Yi"].startswith("Dear Minister Wang,\n\nThis copy goes to Wang Yi.\n")


def test_a_cc_copy_is_the_letter_to_the_first_to(factory: sessionmaker[Session], tmp_path: Path) -> None:
    _load(factory, _campaign(tmp_path))
    texts = _emails(factory)
    assert texts["Guo Shengkun"].startswith("Dear President Xi Jinping,\n\nThis copy goes to Guo Shengkun.\n")


def test_letter_to_gives_a_cc_the_letter_to_that_addressee(factory: sessionmaker[Session], tmp_path: Path) -> None:
    _load(factory, _campaign(tmp_path, cc=[guo_shengkun(), {**LI, "letter_to": "Wang Yi"}]))
    texts = _emails(factory)
    assert texts["Guo Shengkun"].startswith("Dear President Xi Jinping,\n\nThis copy goes to Guo Shengkun.\n")
    assert texts["Li Qiang"].startswith("Dear Minister Wang,\n\nThis copy goes to Li Qiang.\n")


def test_the_fax_to_the_second_to_holds_their_letter(factory: sessionmaker[Session], tmp_path: Path) -> None:
    wang = {**WANG, "fax": ["+86 10 6559 1516"]}
    _load(factory, _campaign(tmp_path, to=[XI, wang]))
    documents = DocumentCache()
    with factory() as session:
        query = select(Delivery).join(Addressee).where(Delivery.channel == "fax", Addressee.name == "Wang Yi")
        message = documents.render(session.scalars(query).one()).message
    assert isinstance(message, FaxMessage)
    assert pdf_page_text(message.pdf, 1).startswith("DearMinisterWang,ThiscopygoestoWangYi.")


def test_letter_to_naming_no_to_addressee_is_refused(tmp_path: Path) -> None:
    path = _campaign(tmp_path, cc=[guo_shengkun(letter_to="Wang Yl")])
    report = validate(load_spec(path), file=path)
    assert [(p.where, p.field, p.message, p.suggestion) for p in report.errors] == [
        (
            "cc[0] (Guo Shengkun)",
            "letter_to",
            "'Wang Yl' is not the name of a \"To\" addressee ('Xi Jinping', 'Wang Yi')",
            "Wang Yi",
        )
    ]


def test_a_template_error_in_the_second_to_letter_names_that_addressee(tmp_path: Path) -> None:
    template = "{{ to.salutation }}\n\n{% if to.name == 'Wang Yi' %}{{ minister }}{% endif %}\n"
    path = build_campaign(tmp_path / "campaign", template=template, to=[XI, WANG])
    report = validate(load_spec(path), file=path)
    assert [(p.where, p.field) for p in report.errors] == [("letter template", "line 3")]
    assert report.errors[0].message == "undefined variable: 'minister' is undefined (in the letter to to[1] (Wang Yi))"


def test_a_template_error_in_a_cc_copy_names_that_cc(tmp_path: Path) -> None:
    template = (
        "{{ to.salutation }}\n{% if recipient.name == 'Guo Shengkun' %}{{ recipient.salutation.upper() }}{% endif %}"
    )
    path = build_campaign(tmp_path / "campaign", template=template)
    report = validate(load_spec(path), file=path)
    assert [(p.where, p.field) for p in report.errors] == [("letter template", "line 2")]
    assert report.errors[0].message.endswith("(in the copy for cc[0] (Guo Shengkun))")


def test_preview_writes_each_to_addressees_letter(tmp_path: Path) -> None:
    path = _campaign(tmp_path, to=[XI, {**WANG, "fax": ["+86 10 6559 1516"]}])
    out = tmp_path / "out"
    out.mkdir()
    preview = write_preview(
        load_spec(path), path.parent, pdf_path=out / "letter.pdf", eml_path=out / "letter.eml", date=LETTER_DATE
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "letter-1-Xi-Jinping.eml",
        "letter-1-Xi-Jinping.pdf",
        "letter-2-Wang-Yi.eml",
        "letter-2-Wang-Yi.pdf",
    ]
    assert pdf_page_text((out / "letter-2-Wang-Yi.pdf").read_bytes(), 1).startswith("DearMinisterWang,")
    assert pdf_page_text((out / "letter-1-Xi-Jinping.pdf").read_bytes(), 1).startswith("DearPresidentXiJinping,")
    wang = email.message_from_bytes((out / "letter-2-Wang-Yi.eml").read_bytes())
    assert wang["To"] == "wang@example.gov.cn"
    lines = list(preview)
    assert [line.split(" ", 1)[0] for line in lines] == [
        str(out / "letter-1-Xi-Jinping.pdf"),
        str(out / "letter-1-Xi-Jinping.eml"),
        str(out / "letter-2-Wang-Yi.pdf"),
        str(out / "letter-2-Wang-Yi.eml"),
    ]


def test_preview_command_prints_every_file_written(tmp_path: Path) -> None:
    path = _campaign(tmp_path)
    result = CliRunner().invoke(
        app,
        ["campaign", "preview", str(path), "--pdf", str(tmp_path / "l.pdf"), "--eml", str(tmp_path / "l.eml")],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 0, result.output
    for name in ("l-1-Xi-Jinping.pdf", "l-1-Xi-Jinping.eml", "l-2-Wang-Yi.pdf", "l-2-Wang-Yi.eml"):
        assert (tmp_path / name).is_file()
        assert f"wrote {tmp_path / name} " in result.output


def test_preview_pdf_of_one_to_is_its_first_page_letter(tmp_path: Path) -> None:
    """The example's shape (one To): the file is the path given."""
    path = _campaign(tmp_path, to=[XI])
    write_preview(load_spec(path), path.parent, pdf_path=tmp_path / "x.pdf", eml_path=None, date=LETTER_DATE)
    text = PdfReader(io.BytesIO((tmp_path / "x.pdf").read_bytes())).pages[1].extract_text().replace("\x00", "")
    assert text.startswith("Dear President Xi Jinping,")


def test_letter_to_is_left_out_of_the_stored_campaign_when_not_given(tmp_path: Path) -> None:
    """The ledger keeps the campaign's dump and a hash of it (planning.content_hash): a file written before
    letter_to existed must dump as it did, or reloading it would look like a changed campaign."""
    spec = load_spec(_campaign(tmp_path, cc=[guo_shengkun(), {**LI, "letter_to": "Wang Yi"}]))
    guo, li = spec.model_dump(mode="json")["cc"]
    assert "letter_to" not in guo
    assert li["letter_to"] == "Wang Yi"
