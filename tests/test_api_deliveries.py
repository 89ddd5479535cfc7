"""The deliveries API (dispatcher/processes/api_deliveries.py) through the real app, on SQLite and
PostgreSQL: cursor pages that neither repeat nor miss a delivery, filters, a delivery's timeline, retry /
resolve / cancel with their reasons and roles, the live log's events, and 100,000 deliveries on PostgreSQL."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Attempt, Campaign, Delivery, OperatorAction
from dispatcher.domain.states import State

from .api_helpers import NOW, Roles, client, create
from .builders import NAME


def campaign_id(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        found = session.scalar(select(Campaign.id).where(Campaign.name == NAME))
        assert found is not None
        return found


def add_deliveries(factory: sessionmaker[Session], n: int, **values: Any) -> None:
    """``n`` more letter deliveries (without addressee) in the campaign, inserted in bulk."""
    cid = campaign_id(factory)
    rows = [
        {
            "campaign_id": cid,
            "kind": "letter",
            "channel": "fax" if i % 2 else "email",
            "destination": f"+1212555{i:04d}",
            "route_position": 0,
            "state": "failed" if i % 5 == 0 else "planned",
            "gateway": "telnyx" if i % 3 == 0 else None,
            "idempotency_key": uuid.uuid4().hex,
            **values,
        }
        for i in range(n)
    ]
    with transaction(factory) as session:
        session.execute(insert(Delivery), rows)


def walk(http: TestClient, headers: dict[str, str], url: str, **params: Any) -> tuple[list[int], int]:
    """Every id the pages give, following ``next``; and how many pages it took."""
    ids: list[int] = []
    pages = 0
    after: str | None = None
    while True:
        response = http.get(url, params={**params, **({"after": after} if after else {})}, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        ids += [item["id"] for item in page["items"]]
        after = page["next"]
        if after is None:
            return ids, pages


def test_the_cursor_walks_2500_deliveries_without_repeating_or_missing_one(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    create(http, roles.manager)
    add_deliveries(factory, 2496)
    with factory() as session:
        every = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
    assert len(every) == 2500
    for limit, pages in ((1000, 3), (100, 25), (7, 358)):
        ids, taken = walk(http, roles.viewer, "/api/deliveries", limit=limit)
        assert ids == every and taken == pages
    default, taken = walk(http, roles.viewer, "/api/deliveries")
    assert (default, taken) == (every, 25)  # 100 a page by default
    old, _ = walk(http, roles.viewer, f"/api/campaigns/{NAME}/deliveries", limit=1000)
    assert old == every  # the old endpoint, paginated the same way
    # a delivery added while walking shows on a later page: the keyset never skips it
    first = http.get("/api/deliveries", params={"limit": 1000}, headers=roles.viewer).json()
    add_deliveries(factory, 1)
    rest, _ = walk(http, roles.viewer, "/api/deliveries", limit=1000, after=first["next"])
    assert len(rest) == 1501 and rest[-1] > every[-1]


def test_filters_narrow_the_pages(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    create(http, roles.manager)
    add_deliveries(factory, 300)
    with factory() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.state, Delivery.channel, Delivery.gateway, Delivery.addressee_id)
        ).all()

    def ids(**params: Any) -> list[int]:
        found, _ = walk(http, roles.viewer, "/api/deliveries", limit=50, **params)
        return found

    assert ids(state="failed") == sorted(r.id for r in rows if r.state == "failed")
    assert ids(channel="fax", gateway="telnyx") == sorted(
        r.id for r in rows if r.channel == "fax" and r.gateway == "telnyx"
    )
    xi = next(r.addressee_id for r in rows if r.addressee_id is not None)
    assert ids(addressee=xi, kind="letter") == sorted(r.id for r in rows if r.addressee_id == xi)
    assert ids(campaign=NAME, kind="copy") == []
    assert len(ids(campaign=NAME)) == 304
    one = http.get("/api/deliveries", params={"addressee": xi}, headers=roles.viewer).json()["items"][0]
    assert (one["campaign"], one["addressee"], one["role"], one["destination"]) == (
        NAME,
        "Xi Jinping",
        "to",
        "+861063070900",
    )

    for name in ("no-such", "a\x00b"):  # PostgreSQL cannot compare a NUL: never queried
        assert http.get("/api/deliveries", params={"campaign": name}, headers=roles.viewer).status_code == 404
    for path in ("/api/lists/a%00b", "/api/campaigns/a%00b/export.csv", "/api/events?campaign=%00"):
        assert http.get(path, headers=roles.viewer).status_code == 404, path
    for params in ({"state": "lost"}, {"limit": 1001}, {"limit": 0}, {"addressee": 2**40}, {"gateway": "a\x00b"}):
        assert http.get("/api/deliveries", params=params, headers=roles.viewer).status_code == 422, params
    for cursor in ("nonsense", "ZDE6LTE", "%%%", "ZDE6OTk5OTk5OTk5OTk5"):
        bad = http.get("/api/deliveries", params={"after": cursor}, headers=roles.viewer)
        assert bad.status_code == 400 and "after=" in bad.json()["error"], cursor


def test_a_delivery_s_timeline_shows_its_events_and_attempts(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    create(http, roles.manager)
    http.post(f"/api/campaigns/{NAME}/schedule", headers=roles.manager)
    delivery_id = http.get("/api/deliveries", params={"channel": "fax"}, headers=roles.viewer).json()["items"][0]["id"]
    with transaction(factory) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        ledger = SqlLedger(session)
        for state in (State.QUEUED, State.SENDING):
            ledger.move(delivery, state, actor="test", at=NOW, reason="test")
        session.add(
            Attempt(
                delivery_id=delivery_id,
                number=1,
                gateway="telnyx",
                started_at=NOW,
                finished_at=NOW + timedelta(seconds=42),
                outcome="transient",
                provider_id="fax-1",
                error_code="user_busy",
                detail="the line was busy",
                document_sha256="ab" * 32,
                evidence={"pages": 3, "duration_secs": 40},
            )
        )
        ledger.move(delivery, State.RETRY_WAIT, actor="worker:test", at=NOW, reason="busy", error_class="transient")
    timeline = http.get(f"/api/deliveries/{delivery_id}/events", headers=roles.viewer)
    assert timeline.status_code == 200, timeline.text
    body = timeline.json()
    assert body["delivery"]["state"] == "retry_wait"
    assert [(e["from_state"], e["to_state"]) for e in body["events"]] == [
        (None, "planned"),
        ("planned", "queued"),
        ("queued", "sending"),
        ("sending", "retry_wait"),
    ]
    (attempt,) = body["attempts"]
    assert (attempt["gateway"], attempt["outcome"], attempt["error_code"], attempt["pages"]) == (
        "telnyx",
        "transient",
        "user_busy",
        3,
    )
    assert (attempt["duration_seconds"], attempt["call_seconds"], attempt["document_sha256"]) == (42.0, 40.0, "ab" * 32)
    assert http.get(f"/api/deliveries/{delivery_id}", headers=roles.viewer).json()["state"] == "retry_wait"
    assert http.get("/api/deliveries/999999", headers=roles.viewer).status_code == 404
    assert http.get("/api/deliveries/999999/events", headers=roles.viewer).status_code == 404


def test_retry_resolve_and_cancel_need_an_operator_and_a_reason(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    create(http, roles.manager)
    http.post(f"/api/campaigns/{NAME}/schedule", headers=roles.manager)
    items = http.get("/api/deliveries", headers=roles.viewer).json()["items"]
    failed, held, waiting = items[0]["id"], items[2]["id"], items[3]["id"]  # Xi's first fax, Guo, Wang
    with transaction(factory) as session:
        ledger = SqlLedger(session)
        for delivery_id, path in (
            (failed, (State.QUEUED, State.SENDING, State.FAILED)),
            (held, (State.QUEUED, State.SENDING, State.UNKNOWN)),
        ):
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            for state in path:
                ledger.move(delivery, state, actor="test", at=NOW, reason="test")

    url = f"/api/deliveries/{failed}/retry"
    assert http.post(url, json={"reason": "checked"}, headers=roles.viewer).status_code == 403  # a viewer cannot retry
    assert http.post(url, json={"reason": "checked"}, headers=roles.manager).status_code == 403
    assert http.post(url, json={}, headers=roles.operator).status_code == 422
    blank = http.post(url, json={"reason": "   "}, headers=roles.operator)
    assert blank.status_code == 422 and "a reason is required" in blank.json()["error"]
    retried = http.post(url, json={"reason": "the number works again"}, headers=roles.operator)
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "planned"

    resolve = f"/api/deliveries/{held}/resolve"
    assert http.post(resolve, json={"sent": True}, headers=roles.operator).status_code == 422
    resolved = http.post(resolve, json={"sent": True, "reason": "Telnyx shows it delivered"}, headers=roles.operator)
    assert (resolved.status_code, resolved.json()["state"]) == (200, "delivered"), resolved.text
    again = http.post(resolve, json={"sent": True, "reason": "twice"}, headers=roles.operator)
    assert again.status_code == 409

    cancel = f"/api/deliveries/{waiting}/cancel"
    assert http.post(cancel, json={"reason": ""}, headers=roles.operator).status_code == 422
    cancelled = http.post(cancel, json={"reason": "the ministry asked us not to"}, headers=roles.operator)
    assert (cancelled.status_code, cancelled.json()["state"]) == (200, "cancelled"), cancelled.text
    assert http.post("/api/deliveries/999999/cancel", json={"reason": "x"}, headers=roles.operator).status_code == 404
    with factory() as session:
        logged = [
            (a.action, a.delivery_id, a.reason)
            for a in session.scalars(select(OperatorAction).order_by(OperatorAction.id))
        ]
    assert logged[-3:] == [
        ("delivery.retry", failed, "the number works again"),
        ("delivery.resolve-sent", held, "Telnyx shows it delivered"),
        ("delivery.cancel", waiting, "the ministry asked us not to"),
    ]


def test_the_live_log_gives_events_after_an_id_and_never_a_supporter_s_address(factory: sessionmaker[Session]) -> None:
    from .test_api_lists import import_csv

    http = client(factory)
    roles = Roles(factory)
    import_csv(http, roles.manager, "friends", "email,name,consent\nada@example.org,Ada Lovelace,yes\n")
    create(http, roles.manager, lists=["friends"])
    first = http.get("/api/events", params={"limit": 3}, headers=roles.viewer).json()
    assert len(first["items"]) == 3 and first["last"] == first["items"][-1]["id"]
    rest = http.get("/api/events", params={"after": first["last"]}, headers=roles.viewer).json()
    assert len(rest["items"]) == 2
    assert [e["id"] for e in first["items"] + rest["items"]] == sorted(
        {e["id"] for e in first["items"] + rest["items"]}
    )
    copy = rest["items"][-1]
    assert copy["target"].startswith("supporter copy #") and copy["campaign"] == NAME
    nothing = http.get("/api/events", params={"after": rest["last"], "campaign": NAME}, headers=roles.viewer).json()
    assert nothing == {"items": [], "last": rest["last"]}
    everything = (
        http.get("/api/events", headers=roles.viewer).text + http.get("/api/deliveries", headers=roles.viewer).text
    )
    assert "ada@example.org" not in everything and "Ada" not in everything
    assert http.get("/api/events", params={"campaign": "nope"}, headers=roles.viewer).status_code == 404


@pytest.mark.postgres
def test_100000_deliveries_on_postgresql_answer_the_first_page_quickly(
    factory: sessionmaker[Session], request: pytest.FixtureRequest
) -> None:
    if factory.kw["bind"].dialect.name != "postgresql":
        pytest.skip("the 100,000 deliveries run on PostgreSQL")
    http = client(factory)
    roles = Roles(factory)
    create(http, roles.manager)
    cid = campaign_id(factory)
    started = time.perf_counter()
    with transaction(factory) as session:
        session.execute(
            text(
                "INSERT INTO deliveries (campaign_id, kind, channel, destination, route_position, state, "
                "idempotency_key, attempt_count, expects_report, created_at, updated_at) "
                "SELECT :cid, 'letter', 'fax', '+1212555' || lpad(n::text, 6, '0'), 0, "
                "CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'planned' END, md5(n::text || 'key'), 0, true, now(), now() "
                "FROM generate_series(1, 100000) AS n"
            ),
            {"cid": cid},
        )
        session.execute(text("ANALYZE deliveries"))
    inserted = time.perf_counter() - started
    timings = {}
    for label, params in (
        ("first page", {}),
        ("first page of failed", {"state": "failed", "campaign": NAME}),
        ("a page deep in", {"after": None}),
    ):
        if label == "a page deep in":
            cursor = http.get("/api/deliveries", params={"limit": 1000}, headers=roles.viewer).json()["next"]
            for _ in range(49):
                cursor = http.get(
                    "/api/deliveries", params={"limit": 1000, "after": cursor}, headers=roles.viewer
                ).json()["next"]
            params = {"after": cursor}
        began = time.perf_counter()
        response = http.get("/api/deliveries", params=params, headers=roles.viewer)
        timings[label] = time.perf_counter() - began
        assert response.status_code == 200 and len(response.json()["items"]) == 100
        assert response.json()["next"] is not None
    print(
        f"\n100,004 deliveries on PostgreSQL (inserted in {inserted:.2f} s): "
        + ", ".join(f"{label} {seconds * 1000:.0f} ms" for label, seconds in timings.items())
    )


def test_a_retry_that_could_send_a_letter_twice_needs_force(factory: sessionmaker[Session]) -> None:
    http = client(factory)
    roles = Roles(factory)
    create(http, roles.manager)
    http.post(f"/api/campaigns/{NAME}/schedule", headers=roles.manager)
    first, second = (item["id"] for item in http.get("/api/deliveries", headers=roles.viewer).json()["items"][:2])
    with transaction(factory) as session:  # Xi Jinping's first fax failed; his second is unknown (it may be out)
        ledger = SqlLedger(session)
        for delivery_id, last in ((first, State.FAILED), (second, State.UNKNOWN)):
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            for state in (State.QUEUED, State.SENDING, last):
                ledger.move(delivery, state, actor="test", at=NOW, reason="test")
    url = f"/api/deliveries/{first}/retry"
    refused = http.post(url, json={"reason": "the line works"}, headers=roles.operator)
    assert refused.status_code == 409
    assert 'send "force": true' in refused.json()["error"] and "--force" not in refused.json()["error"]
    forced = http.post(url, json={"reason": "the line works", "force": True}, headers=roles.operator)
    assert (forced.status_code, forced.json()["state"]) == (200, "planned"), forced.text


def test_a_parameter_that_cannot_be_read_is_a_422_in_the_apis_own_shape(factory: sessionmaker[Session]) -> None:
    http, roles = client(factory), Roles(factory)
    too_many = http.get("/api/deliveries?limit=5000", headers=roles.viewer)
    assert too_many.status_code == 422
    assert too_many.json() == {"error": "query.limit: Input should be less than or equal to 1000"}
    not_an_id = http.get("/api/deliveries/abc", headers=roles.viewer)
    assert not_an_id.status_code == 422
    assert list(not_an_id.json()) == ["error"] and "path.delivery_id" in not_an_id.json()["error"]
