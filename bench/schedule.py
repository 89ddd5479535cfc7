"""`dispatch campaign schedule` at volume: the campaign's copies given their send time in one statement,
against the row-by-row loop it replaced (kept below as the baseline), measured in the same run.

    python bench/schedule.py [--supporters N] [--database sqlite|postgres|both] [--repeats R]

Each run loads the example campaign with N supporters (consent given) into a fresh, migrated ledger (a
SQLite file in a temp dir, or a throw-away PostgreSQL database at DISPATCH_BENCH_POSTGRES_URL, dropped at
the end), then times ``control.schedule`` alone; the median of ``--repeats`` runs is printed. Both ways
must leave every copy with the same ``not_before``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dispatcher.domain import control, db  # noqa: E402
from dispatcher.domain.campaign_file import CampaignSpec, load_spec  # noqa: E402
from dispatcher.domain.ledger_sql import SqlLedger  # noqa: E402
from dispatcher.domain.models import Delivery  # noqa: E402
from dispatcher.domain.planning import load_campaign  # noqa: E402
from dispatcher.domain.queries import get_campaign  # noqa: E402
from dispatcher.domain.states import CampaignStatus, State  # noqa: E402
from dispatcher.domain.timing import first_send_time  # noqa: E402
from dispatcher.domain.validation import validate  # noqa: E402
from tests.builders import build_campaign  # noqa: E402

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def baseline_schedule(session: Session, name: str, *, now: datetime) -> None:
    """The former schedule: every planned delivery loaded as an ORM object and given its time one by one."""
    campaign = get_campaign(session, name)
    spec = CampaignSpec.model_validate(campaign.spec)
    zones = {a.id: a.timezone for a in campaign.addressees}
    ledger = SqlLedger(session)
    waiting = list(
        session.scalars(
            select(Delivery)
            .where(Delivery.campaign_id == campaign.id, Delivery.state == State.PLANNED)
            .order_by(Delivery.id)
            .with_for_update()
        )
    )
    letters = [d for d in waiting if d.kind == "letter"]
    for delivery in letters:
        zone = zones.get(delivery.addressee_id or -1, "UTC")
        ledger.wait(delivery, until=first_send_time(spec.campaign.schedule, timezone=zone, now=now))
    for delivery in waiting:
        if delivery.kind == "copy":
            ledger.wait(delivery, until=now)
    campaign.status = CampaignStatus.SCHEDULED
    campaign.scheduled_at = now
    campaign.letter_date = campaign.letter_date or now.date()


def new_schedule(session: Session, name: str, *, now: datetime) -> None:
    control.schedule(session, name, now=now)


def one_run(kind: str, supporters: int, work: Path, schedule: Callable[..., None]) -> tuple[float, int]:
    folder = work / uuid.uuid4().hex[:8]
    rows = [(f"supporter{i}@example.org", f"Supporter {i}") for i in range(supporters)]
    path = build_campaign(folder, supporters=rows)
    spec = load_spec(path)
    report = validate(spec, file=path)
    admin, name = None, None
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'ledger.db'}"
    else:
        base = POSTGRES.rsplit("/", 1)[0]
        name = f"dispatch_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = f"{base}/{name}"
    engine = db.make_engine(url)
    try:
        db.upgrade(url)
        factory = db.session_factory(engine)
        with db.transaction(factory) as session:
            load_campaign(session, spec, report, source=path)
        now = datetime.now(UTC)
        started = time.perf_counter()
        with db.transaction(factory) as session:
            schedule(session, spec.campaign.name, now=now)
        seconds = time.perf_counter() - started
        with factory() as session:
            timed = session.scalar(select(func.count()).where(Delivery.kind == "copy", Delivery.not_before == now))
        return seconds, int(timed or 0)
    finally:
        engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supporters", type=int, default=20_000)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    kinds = ["sqlite", "postgres"] if options.database == "both" else [options.database]
    print(f"schedule: a campaign with {options.supporters} copies (median of {options.repeats} runs)")
    print(f"{'database':<10}{'how':<34}{'seconds':>9}{'copies/s':>11}{'ratio':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            figures = {}
            for label, how in (("row by row (baseline)", baseline_schedule), ("one UPDATE", new_schedule)):
                runs = [one_run(kind, options.supporters, Path(tmp), how) for _ in range(options.repeats)]
                assert all(timed == options.supporters for _, timed in runs), runs  # every copy got its time
                figures[label] = statistics.median(s for s, _ in runs)
            base = figures["row by row (baseline)"]
            for label, seconds in figures.items():
                ratio = "baseline" if seconds == base else f"{base / seconds:.1f}x"
                rate = options.supporters / seconds
                print(f"{kind:<10}{label:<34}{seconds:>9.2f}{rate:>11,.0f}{ratio:>9}")


if __name__ == "__main__":
    main()
