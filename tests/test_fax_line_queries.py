"""The fax line check of every fax claim (workers/delivery.py: another fax to the number in progress? when did
the last call to it end?) reads an index on the destination, not the whole ledger: on a ledger of 60,000
deliveries PostgreSQL's plan for each query has no sequential scan of `deliveries` (a fax campaign of N numbers
scanned the ledger N times: its pace fell as the ledger grew)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from workers.delivery import line_queries

from .builders import build_campaign
from .integration.conftest import schedule_campaign


def _plan(session: Session, statement: object) -> str:
    compiled = statement.compile(session.bind, compile_kwargs={"literal_binds": True})  # type: ignore[attr-defined]
    rows = session.execute(text(f"EXPLAIN (FORMAT JSON) {compiled}")).scalar_one()
    return json.dumps(rows)


def _scans_of(plan: str, table: str) -> list[str]:
    found: list[str] = []

    def walk(node: dict) -> None:  # type: ignore[type-arg]
        if node.get("Relation Name") == table:
            found.append(node["Node Type"])
        for child in node.get("Plans", []):
            walk(child)

    walk(json.loads(plan)[0]["Plan"])
    return found


@pytest.mark.postgres
def test_the_line_check_reads_an_index_on_a_large_ledger(factory: sessionmaker[Session], tmp_path: Path) -> None:
    if factory.kw["bind"].dialect.name != "postgresql":
        pytest.skip("the plan is PostgreSQL's")
    schedule_campaign(factory, build_campaign(tmp_path))
    with transaction(factory) as session:
        cid = session.execute(text("SELECT min(id) FROM campaigns")).scalar_one()
        session.execute(
            text(
                "INSERT INTO deliveries (campaign_id, kind, channel, destination, route_position, state, "
                "idempotency_key, attempt_count, expects_report, created_at, updated_at) "
                "SELECT :cid, 'letter', CASE WHEN n % 3 = 0 THEN 'fax' ELSE 'email' END, "
                "'+1212' || lpad(n::text, 7, '0'), 0, "
                "CASE WHEN n % 4 = 0 THEN 'submitted' ELSE 'delivered' END, md5(n::text || 'line'), 1, true, "
                "now(), now() FROM generate_series(1, 60000) AS n"
            ),
            {"cid": cid},
        )
        session.execute(
            text(
                "INSERT INTO attempts (delivery_id, number, gateway, started_at, finished_at, outcome) "
                "SELECT id, 1, 'telnyx', now(), now(), 'submitted' FROM deliveries WHERE campaign_id = :cid"
            ),
            {"cid": cid},
        )
        session.execute(text("ANALYZE"))
    with factory() as session:
        for statement in line_queries("+12120001234", 1):
            scans = _scans_of(_plan(session, statement), "deliveries")
            assert scans and "Seq Scan" not in scans, scans
