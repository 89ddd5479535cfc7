"""The campaign builder writes what the example campaign holds, and exactly the overrides it is given."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dispatcher.domain.campaign_file import load_spec

from .builders import build_campaign, official, wang_yi


def read(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def test_default_is_the_example_with_its_malformed_fax_corrected(tmp_path: Path, example_file: Path) -> None:
    path = build_campaign(tmp_path)
    expected = read(example_file)
    assert expected["to"][0]["fax"] == ["+86 10 6307 0900", "+011 10 6238 1025"]
    expected["to"][0]["fax"] = ["+86 10 6307 0900", "+86 10 6238 1025"]
    assert read(path) == expected
    letter = "letter.txt.j2"
    assert (tmp_path / letter).read_text(encoding="utf-8") == (example_file.parent / letter).read_text(encoding="utf-8")
    # the example's two supporters who consented (its third refused: tests that need him add him)
    assert (tmp_path / "supporters.csv").read_text(encoding="utf-8") == (
        "email,name,consent\nada.supporter@example.org,Ada Lovelace,yes\ngrace.supporter@example.net,Grace Hopper,yes\n"
    )


def test_overrides_land_where_the_schema_puts_them(tmp_path: Path) -> None:
    path = build_campaign(
        tmp_path,
        name="other-campaign",
        deadline=datetime(2000, 1, 1, tzinfo=UTC),
        schedule={"mode": "office-hours"},
        letter={"subject": "Another subject"},
        to=[official("A. Minister", fax=["+86 10 6307 0901"], email=["a@example.gov.cn"])],
        cc=[wang_yi(timezone="America/New_York")],
        supporters=[("one@example.org", "One"), ("two@example.org", None)],
    )
    data = read(path)
    assert data["campaign"]["name"] == "other-campaign"
    assert data["campaign"]["deadline"] == datetime(2000, 1, 1, tzinfo=UTC)
    assert data["campaign"]["schedule"] == {"mode": "office-hours"}
    assert data["letter"] == {"subject": "Another subject", "template": "letter.txt.j2"}
    assert data["to"] == [
        {
            "name": "A. Minister",
            "country": "CN",
            "timezone": "Asia/Shanghai",
            "fax": ["+86 10 6307 0901"],
            "email": ["a@example.gov.cn"],
        }
    ]
    assert [(a["name"], a["timezone"], a["fax"]) for a in data["cc"]] == [
        ("Wang Yi", "America/New_York", ["+86 10 6559 1516"])
    ]
    assert (tmp_path / "supporters.csv").read_text() == (
        "email,name,consent\none@example.org,One,yes\ntwo@example.org,,yes\n"
    )
    spec = load_spec(path)  # and the schema accepts it
    assert spec.cc[0].timezone == "America/New_York"
