"""The supporter lists API (dispatcher/processes/api_lists.py) through the real app, on SQLite and
PostgreSQL: lists with counts, a CSV import answered by counts and rejected lines (never an address), the
report of one list, and who may import."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.models import OperatorAction, Supporter

from .api_helpers import TOML, Roles, client, create, toml_body
from .builders import NAME

CSV = (
    "email,name,consent\n"
    "ada@example.org,Ada Lovelace,yes\n"
    "grace@example,Grace Hopper,yes\n"  # no dot after the @: invalid
    "linus@example.org,Linus,no\n"
    "ada@example.org,Ada again,yes\n"
    "joan@example.org,Joan Clarke,yes\n"
)


def import_csv(http: TestClient, headers: dict[str, str], name: str, text: str, **params: str) -> dict[str, Any]:
    response = http.post(
        f"/api/lists/{name}/import",
        content=text.encode(),
        params=params,
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_an_import_answers_counts_and_rejected_lines_without_addresses(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    result = import_csv(http, roles.manager, "friends", CSV)
    assert (result["name"], result["created"], result["added"], result["unchanged"]) == ("friends", True, 2, 0)
    assert result["rejected"] == {"invalid-email": 1, "consent-refused": 1, "duplicate": 1}
    assert [(r["line"], r["kind"]) for r in result["rejected_rows"]] == [
        (3, "invalid-email"),
        (4, "consent-refused"),
        (5, "duplicate"),
    ]
    response_text = str(result)
    for private in ("grace@example", "Grace", "linus@", "Linus", "ada@", "Ada"):
        assert private not in response_text
    again = import_csv(http, roles.manager, "friends", CSV)
    assert (again["created"], again["added"], again["unchanged"]) == (False, 0, 2)

    lists = http.get("/api/lists", headers=roles.viewer).json()
    assert lists == [{"name": "friends", "members": 2, "consenting": 2}]
    create(http, roles.manager, lists=["friends"])
    report = http.get("/api/lists/friends", headers=roles.viewer).json()
    assert (report["members"], report["campaigns"]) == (2, [NAME])
    assert http.get("/api/lists/enemies", headers=roles.viewer).status_code == 404
    with factory() as session:
        assert [a.action for a in session.scalars(select(OperatorAction))][:2] == ["list.import", "list.import"]


def test_an_import_maps_other_headers_and_reads_other_encodings(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    mapped = http.post(
        "/api/lists/freunde/import",
        content="E-Mail Adresse,Vorname,consent\nkaethe@example.de,Käthe,yes\n".encode("latin-1"),
        params={"map": "E-Mail Adresse=email,Vorname=first_name", "encoding": "latin-1"},
        headers={**roles.manager, "Content-Type": "text/csv"},
    )
    assert (mapped.status_code, mapped.json()["added"]) == (200, 1), mapped.text
    with factory() as session:
        assert session.scalars(select(Supporter.name)).all() == ["Käthe"]


def test_a_file_that_cannot_be_imported_is_a_422_and_writes_nothing(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    headers = {**roles.manager, "Content-Type": "text/csv"}
    no_email = http.post("/api/lists/friends/import", content=b"name,consent\nAda,yes\n", headers=headers)
    assert no_email.status_code == 422 and "email" in no_email.json()["error"]
    bad_name = http.post("/api/lists/Friends%20List/import", content=CSV.encode(), headers=headers)
    assert bad_name.status_code == 422 and "list name" in bad_name.json()["error"]
    unknown = http.post(
        "/api/lists/friends/import", content=CSV.encode(), params={"encoding": "klingon"}, headers=headers
    )
    assert unknown.status_code == 422
    bad_map = http.post("/api/lists/friends/import", content=CSV.encode(), params={"map": "nonsense"}, headers=headers)
    assert bad_map.status_code == 422
    assert http.get("/api/lists", headers=roles.viewer).json() == []


def test_only_a_manager_imports_and_bodies_are_bounded(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    for who in (roles.viewer, roles.operator):
        assert http.post("/api/lists/friends/import", content=CSV.encode(), headers=who).status_code == 403
    huge = b"email,name,consent\n" + b"x" * (50 * 1024 * 1024)
    response = http.post(
        "/api/lists/friends/import", content=huge, headers={**roles.manager, "Content-Type": "text/csv"}
    )
    assert response.status_code == 413
    assert http.get("/api/lists", headers=roles.viewer).json() == []
    # a campaign body is no way around it: it names lists, never a CSV file
    body = toml_body(lists=["friends"])
    assert http.post("/api/campaigns", content=body, headers={**roles.manager, **TOML}).status_code == 422
