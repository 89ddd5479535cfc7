"""The campaigns API (dispatcher/processes/api_campaigns.py) through the real app, on SQLite and PostgreSQL:
who may call what, campaign bodies (TOML and JSON; no file paths, bounded), validation, preview, the
campaign actions, addressees and routes, and the CSV export of the log."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import pytest
import tomli_w
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.models import Campaign, OperatorAction

from .api_helpers import TOML, Roles, body_data, client, create, json_body, toml_body
from .builders import NAME, official, xi_jinping

MANAGER_ONLY = {"campaigns"}  # Permission.CAMPAIGNS
OPERATOR_ONLY = {"deliveries"}  # Permission.DELIVERIES


def test_every_api_endpoint_needs_a_token_and_the_right_role(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    assert http.get("/openapi.json").status_code == 401  # the map of the API is not public either
    assert http.get("/api/docs").status_code == 401
    schema = http.get("/openapi.json", headers=roles.viewer).json()
    routes = [
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if path.startswith("/api/")
        for method in operations
    ]
    assert len(routes) == 24
    assert {"CampaignOut", "Page_DeliveryOut_", "TimelineOut", "ImportOut", "ProblemOut"} <= set(
        schema["components"]["schemas"]
    )
    assert "swagger" in http.get("/api/docs", headers=roles.viewer).text.lower()
    writes = 0
    for method, path in routes:
        url = path.replace("{name}", "x").replace("{delivery_id}", "1").replace("{index}", "1")
        nobody = http.request(method, url)
        assert nobody.status_code == 401, (method, path, nobody.status_code)
        assert nobody.headers["www-authenticate"] == "Bearer"
        if method == "GET" or path == "/api/campaigns/validate":
            answer = http.request(method, url, headers=roles.viewer)
            assert answer.status_code != 403, (method, path)  # every role reads
            continue
        writes += 1
        wrong = roles.operator if "/deliveries/" not in path else roles.manager
        refused = http.request(method, url, headers=wrong, json={"reason": "x", "sent": True})
        assert refused.status_code == 403, (method, path, refused.status_code)
        needed = "deliveries" if "/deliveries/" in path else "campaigns"
        assert f"it needs the {needed} permission" in refused.json()["error"]
        viewer = http.request(method, url, headers=roles.viewer, json={"reason": "x", "sent": True})
        assert viewer.status_code == 403, (method, path)
    assert writes == 10  # create, replace, 4 campaign actions, list import, retry, resolve, cancel


def test_a_campaign_is_created_from_toml_shown_listed_and_its_draft_replaced(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    saved = create(http, roles.manager)
    assert (saved["name"], saved["status"], saved["planned"], saved["skipped"]) == (NAME, "created", 4, 0)

    shown = http.get(f"/api/campaigns/{NAME}", headers=roles.viewer).json()
    assert (shown["status"], shown["total"], shown["counts"]) == ("draft", 4, {"planned": 4})
    assert shown["schedule"]["mode"] == "now" and shown["route_policy"] == "first-success"
    listed = http.get("/api/campaigns", headers=roles.viewer).json()
    assert [(c["name"], c["counts"]) for c in listed] == [(NAME, {"planned": 4})]

    again = http.post("/api/campaigns", content=toml_body(), headers={**roles.manager, **TOML})
    assert again.status_code == 409 and "PUT /api/campaigns/" in again.json()["error"]

    same = http.put(f"/api/campaigns/{NAME}", content=toml_body(), headers={**roles.manager, **TOML})
    assert same.json()["status"] == "unchanged"
    changed = http.put(
        f"/api/campaigns/{NAME}", content=toml_body(title="New title"), headers={**roles.manager, **TOML}
    )
    assert (changed.status_code, changed.json()["status"]) == (200, "replaced")
    assert http.get(f"/api/campaigns/{NAME}", headers=roles.viewer).json()["title"] == "New title"

    other = http.put(f"/api/campaigns/{NAME}", content=toml_body(name="another-one"), headers={**roles.manager, **TOML})
    assert other.status_code == 422 and "'another-one'" in other.json()["error"]
    missing = http.put("/api/campaigns/another-one", content=toml_body(name="another-one"), headers=roles.manager)
    assert missing.status_code == 404

    scheduled = http.post(f"/api/campaigns/{NAME}/schedule", headers=roles.manager, json={"reason": "go"})
    assert (scheduled.status_code, scheduled.json()["state"]) == (200, "scheduled")
    late = http.put(f"/api/campaigns/{NAME}", content=toml_body(title="Too late"), headers={**roles.manager, **TOML})
    assert late.status_code == 409 and "never rewritten" in late.json()["error"]
    with factory() as session:
        logged = [
            (a.actor, a.action, a.reason) for a in session.scalars(select(OperatorAction).order_by(OperatorAction.id))
        ]
    assert logged == [
        ("token:tester-manager/tests", "campaign.create", ""),
        ("token:tester-manager/tests", "campaign.replace", ""),
        ("token:tester-manager/tests", "campaign.schedule", "go"),
    ]


def test_a_campaign_is_created_from_json(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    response = http.post(
        "/api/campaigns", content=json_body(), headers={**roles.manager, "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["planned"] == 4


def test_the_campaign_actions_follow_the_campaign_and_an_operator_cannot_schedule(
    factory: sessionmaker[Session],
) -> None:
    http = client(factory)
    roles = Roles(factory)
    create(http, roles.manager)
    assert http.post(f"/api/campaigns/{NAME}/schedule", headers=roles.operator).status_code == 403
    assert http.post(f"/api/campaigns/{NAME}/resume", headers=roles.manager).status_code == 409
    for verb, state in (
        ("schedule", "scheduled"),
        ("pause", "paused"),
        ("resume", "scheduled"),
        ("cancel", "cancelled"),
    ):
        response = http.post(f"/api/campaigns/{NAME}/{verb}", headers=roles.manager)
        assert (response.status_code, response.json()["state"]) == (200, state), response.text
    assert http.post("/api/campaigns/no-such/pause", headers=roles.manager).status_code == 404
    assert http.get(f"/api/campaigns/{NAME}", headers=roles.viewer).json()["counts"] == {"cancelled": 4}


def test_validation_lists_every_problem_with_its_place_and_suggestion(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    good = http.post("/api/campaigns/validate", content=toml_body(), headers={**roles.viewer, **TOML})
    assert (good.status_code, good.json()["ok"], good.json()["errors"]) == (200, True, 0)
    bad_fax = ["+86 10 6307 0900", "+011 10 6238 1025"]
    body = toml_body(to=[xi_jinping(fax=bad_fax, timezone="Asia/Shangai")], extra={"campaign": {"colour": "red"}})
    found = http.post("/api/campaigns/validate", content=body, headers={**roles.viewer, **TOML})
    assert found.status_code == 422
    problems = {(p["where"], p["field"]): p for p in found.json()["problems"]}
    fax = problems[("to[0] (Xi Jinping)", "fax[1]")]
    assert "international dialling prefix" in fax["message"]
    assert (fax["suggestion"], fax["severity"], fax["file"]) == ("+86 10 6238 1025", "error", "request body")
    assert problems[("to[0] (Xi Jinping)", "timezone")]["suggestion"] == "Asia/Shanghai"
    assert any("colour" in where + field for where, field in problems)
    # nothing is saved by validating, and a create with errors saves nothing either
    created = http.post("/api/campaigns", content=body, headers={**roles.manager, **TOML})
    assert created.status_code == 422 and len(created.json()["problems"]) == len(problems)
    with factory() as session:
        assert session.scalars(select(Campaign)).all() == []
    for raw in (b"[campaign\nname=", b"\xff\xfe", b"[1, 2]"):
        kind = "application/json" if raw.startswith(b"[1") else "application/toml"
        answer = http.post("/api/campaigns/validate", content=raw, headers={**roles.viewer, "Content-Type": kind})
        assert answer.status_code == 422, raw
        assert answer.json()["problems"][0]["message"]


@pytest.mark.parametrize(
    ("table", "key", "told"),
    [("letter", "template", "letter.body"), ("supporters", "csv", "supporters.lists")],
)
def test_a_body_naming_a_server_file_is_refused_and_nothing_is_read(
    factory: sessionmaker[Session], tmp_path: Path, table: str, key: str, told: str
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("THE SERVER'S SECRET {{ 7 * 7 }}", encoding="utf-8")
    http = client(factory)
    roles = Roles(factory)
    for path in ("../../etc/passwd", str(secret), "/dev/zero"):
        data = body_data(lists=["friends"])
        data[table][key] = path
        hostile = tomli_w.dumps(data)
        for url in ("/api/campaigns", "/api/campaigns/validate"):
            response = http.post(url, content=hostile.encode(), headers={**roles.manager, **TOML})
            assert response.status_code == 422, (url, response.text)
            problems = response.json()["problems"]
            assert [(p["where"], p["field"]) for p in problems] == [(table, key)]
            assert told in problems[0]["message"]
            assert "SECRET" not in response.text and "49" not in response.text and "root:" not in response.text
    with factory() as session:
        assert session.scalars(select(Campaign)).all() == []


def test_bodies_are_bounded_and_typed(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    big = toml_body() + b"\n# " + b"x" * (1024 * 1024) + b"\n"
    assert http.post("/api/campaigns", content=big, headers={**roles.manager, **TOML}).status_code == 413
    assert http.post("/api/campaigns/validate", content=big, headers={**roles.viewer, **TOML}).status_code == 413
    odd = http.post("/api/campaigns", content=toml_body(), headers={**roles.manager, "Content-Type": "image/png"})
    assert odd.status_code == 415
    odd = http.post("/api/campaigns/validate", content=b"x", headers={**roles.viewer, "Content-Type": "image/png"})
    assert odd.status_code == 415 and "application/toml" in odd.json()["error"]


def test_a_campaign_naming_a_list_that_does_not_exist_is_refused(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    response = http.post("/api/campaigns", content=toml_body(lists=["friends"]), headers={**roles.manager, **TOML})
    assert response.status_code == 422
    assert [(p["where"], p["field"]) for p in response.json()["problems"]] == [("supporters", "lists")]


def test_the_preview_gives_the_email_and_the_fax_pdf_at_its_own_url(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    create(http, roles.manager, to=[xi_jinping(), official("Li Keqiang", title="Premier", fax=["+86 10 6309 6576"])])
    preview = http.get(f"/api/campaigns/{NAME}/preview", headers=roles.viewer)
    assert preview.status_code == 200, preview.text
    letters = preview.json()["letters"]
    assert [(le["index"], le["to"]) for le in letters] == [(1, "Xi Jinping"), (2, "Li Keqiang")]
    first = letters[0]
    assert "Dear President Xi Jinping" in first["email"]["text"]
    assert first["email"]["html"].startswith("<!DOCTYPE html>") or "<p>" in first["email"]["html"]
    for letter in letters:
        pdf = http.get(letter["fax"]["url"], headers=roles.viewer)
        assert (pdf.status_code, pdf.headers["content-type"]) == (200, "application/pdf")
        assert pdf.content.startswith(b"%PDF")
        assert hashlib.sha256(pdf.content).hexdigest() == letter["fax"]["sha256"]
    assert http.get(f"/api/campaigns/{NAME}/preview/3.pdf", headers=roles.viewer).status_code == 404
    assert http.get("/api/campaigns/none-such/preview", headers=roles.viewer).status_code == 404


def test_addressees_show_their_routes_and_each_route_s_delivery(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    bad = xi_jinping(fax=["+86 10 6307 0900", "+011 10 6238 1025"])
    response = http.post(
        "/api/campaigns?skip_invalid=true", content=toml_body(to=[bad]), headers={**roles.manager, **TOML}
    )
    assert (response.status_code, response.json()["skipped"]) == (201, 1), response.text
    people = http.get(f"/api/campaigns/{NAME}/addressees", headers=roles.viewer).json()
    assert [(p["role"], p["name"]) for p in people] == [("to", "Xi Jinping"), ("cc", "Guo Shengkun"), ("cc", "Wang Yi")]
    routes = people[0]["routes"]
    assert [(r["channel"], r["destination"], r["valid"]) for r in routes] == [
        ("fax", "+861063070900", True),
        ("fax", "+011 10 6238 1025", False),
    ]
    assert routes[0]["delivery"]["state"] == "planned"
    assert routes[1]["delivery"]["state"] == "skipped" and "dialling prefix" in routes[1]["problem"]


def test_the_export_makes_formula_cells_inert_and_names_no_supporter(factory: sessionmaker[Session]) -> None:
    from .test_api_lists import import_csv

    http = client(factory)
    roles = Roles(factory)
    import_csv(http, roles.manager, "friends", 'email,name,consent\nada@example.org,=HYPERLINK("http://x"),yes\n')
    hostile = official(
        '=HYPERLINK("http://evil.example","click") <script>alert(1)</script>', email=["minister@example.gov.cn"]
    )
    create(http, roles.manager, to=[hostile], cc=[], lists=["friends"], title="+cmd|' /C calc'!A0")
    export = http.get(f"/api/campaigns/{NAME}/export.csv", headers=roles.viewer)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    text = export.content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["event", "at", "delivery"]
    assert len(rows) == 3  # the letter's and the copy's "planned" events
    targets = [row[5] for row in rows[1:]]
    assert targets[0].startswith("'=HYPERLINK(") and "<script>" in targets[0]  # inert; CSV is not HTML
    assert targets[1].startswith("supporter copy #")
    assert "ada@example.org" not in text
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@")), cell
    shown = http.get(f"/api/campaigns/{NAME}/addressees", headers=roles.viewer)
    assert shown.json()[0]["name"].startswith('=HYPERLINK("http://evil.example"')  # JSON keeps the name as it is
    assert shown.headers["content-type"] == "application/json"
