"""Planning, claiming and publishing at volume, against baselines measured in the same run.

    python bench/plan_claim.py [--supporters N] [--database sqlite|postgres|both] [--repeats R]
                               [--baseline-supporters N] [--baseline-repeats R] [--claim-supporters N]

- plan: ``load_campaign`` (bulk INSERTs: the campaign CSV's rows imported as its supporter list, then the
  copies planned from the list) vs the old row-by-row planner brought to the supporter lists, copied below
  as the baseline (the list created, then per supporter an ORM member and a flush, the campaign's link to
  the list, then one Delivery and one DeliveryEvent object each). The baseline is slow, so by default it
  plans 5,000 supporters (its cost per row does not depend on N) and the ratio compares rows per second;
  both planners must write the same ledger for the same campaign.
- claim+publish: ``claim_due`` in ticks of ``SchedulerConfig.claim_limit`` rows, then ``publish`` with
  200 ids per message vs one message per id, to a publisher that only counts. The generated campaign sends
  its copies ``at-dispatch``, so they are due at once (``after-delivery`` copies wait for the letters).

Every measurement gets a fresh, migrated, empty ledger (a SQLite file in a temp dir, or a throw-away
PostgreSQL database, dropped at the end); the median of ``--repeats`` runs is printed.
See bench/README.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, create_engine, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dispatcher.domain import db  # noqa: E402
from dispatcher.domain.campaign_file import (  # noqa: E402
    CampaignSpec,
    load_spec,
)
from dispatcher.domain.copies import letters_open  # noqa: E402
from dispatcher.domain.ledger import new_idempotency_key  # noqa: E402
from dispatcher.domain.models import (  # noqa: E402
    Addressee,
    Campaign,
    CampaignList,
    Delivery,
    DeliveryEvent,
    Route,
    Supporter,
    SupporterList,
    utcnow,
)
from dispatcher.domain.planning import (  # noqa: E402
    ACTOR,
    _write_campaign,
    addressee_row,
    content_hash,
    load_campaign,
)
from dispatcher.domain.scheduling import SchedulerConfig, TickResult, claim_due, publish, queue_for  # noqa: E402
from dispatcher.domain.settings import Settings  # noqa: E402
from dispatcher.domain.states import CopiesWhen, State  # noqa: E402
from dispatcher.domain.supporter_import import MemberRow  # noqa: E402
from dispatcher.domain.validation import Report, RouteCheck, validate  # noqa: E402
from tests.builders import build_campaign  # noqa: E402

PG_ADMIN_URL = os.environ.get("DISPATCH_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SCHEDULER = SchedulerConfig.from_settings(Settings())
BATCH = SCHEDULER.batch_size  # DISPATCH_PUBLISH_BATCH_SIZE, 200 ids per broker message by default
CLAIM_LIMIT = SCHEDULER.claim_limit  # DISPATCH_CLAIM_LIMIT, rows claimed per tick


# --- the baseline: the planner as it was before the bulk path (one flush per row), on supporter lists ----


def record_initial(session: Session, delivery: Delivery, *, actor: str, reason: str) -> DeliveryEvent:
    """The first event of a delivery: it was planned (or skipped at planning)."""
    event = DeliveryEvent(
        delivery_id=delivery.id,
        campaign_id=delivery.campaign_id,
        actor=actor,
        from_state=None,
        to_state=delivery.state,
        reason=reason,
    )
    session.add(event)
    return event


def baseline_load(session: Session, spec: CampaignSpec, report: Report, *, source: Path) -> tuple[int, int]:
    """A new campaign whose CSV becomes the list named after it (the bench's campaigns name no other list)."""
    campaign = _write_campaign(session, None, spec, report, content_hash(spec, report), source)
    return _baseline_plan(session, campaign, spec, report)


def _baseline_plan(session: Session, campaign: Campaign, spec: CampaignSpec, report: Report) -> tuple[int, int]:
    deliveries: list[tuple[Delivery, str]] = []
    for role, people in (("to", spec.to), ("cc", spec.cc)):
        for index, person in enumerate(people):
            addressee = addressee_row(campaign, role, index, person)
            session.add(addressee)
            session.flush()
            for position, check in enumerate(report.routes[(role, index)]):
                deliveries.append(_baseline_route_delivery(session, campaign, addressee, role, index, position, check))
    supporters = SupporterList(name=campaign.name, created_at=utcnow(), updated_at=utcnow())
    session.add(supporters)
    session.flush()
    session.add(CampaignList(campaign_id=campaign.id, list_id=supporters.id, position=0))
    for row in report.supporters:
        deliveries.append(_baseline_copy_delivery(session, campaign, supporters, row))
    session.add_all([d for d, _ in deliveries])
    session.flush()
    for delivery, reason in deliveries:
        record_initial(session, delivery, actor=ACTOR, reason=reason)
    skipped = sum(1 for d, _ in deliveries if d.state == State.SKIPPED)
    return len(deliveries) - skipped, skipped


def _baseline_route_delivery(
    session: Session, campaign: Campaign, addressee: Addressee, role: str, index: int, position: int, check: RouteCheck
) -> tuple[Delivery, str]:
    route = Route(
        addressee_id=addressee.id,
        channel=check.channel,
        position=position,
        raw_value=check.raw_value,
        value=check.value,
        valid=check.problem is None,
        problem=check.problem.message if check.problem else None,
    )
    session.add(route)
    session.flush()
    skipped = check.problem is not None
    delivery = Delivery(
        campaign_id=campaign.id,
        kind="letter",
        addressee_id=addressee.id,
        route_id=route.id,
        channel=check.channel,
        destination=check.value or check.raw_value,
        route_position=position,
        state=State.SKIPPED if skipped else State.PLANNED,
        idempotency_key=new_idempotency_key(),
        last_error=str(check.problem) if check.problem else None,
    )
    reason = f"skipped at load (--skip-invalid): {check.problem}" if check.problem else "planned"
    return delivery, reason


def _baseline_copy_delivery(
    session: Session, campaign: Campaign, supporters: SupporterList, row: MemberRow
) -> tuple[Delivery, str]:
    """One member of the campaign's list (a flush: one INSERT round trip) and its copy, planned.

    Rows the CSV left out (invalid, repeated, no consent) are not in ``report.supporters``: no copy, as
    in the bulk path; the bench's suppression list is empty, so no address is checked against it."""
    now = utcnow()
    supporter = Supporter(
        list_id=supporters.id,
        email=row.email,
        name=row.name,
        locale=row.locale,
        consent=True,
        consent_at=row.consent_at or now,
        consent_source=row.consent_source,
        fields=row.fields,
        created_at=now,
        updated_at=now,
    )
    session.add(supporter)
    session.flush()
    delivery = Delivery(
        campaign_id=campaign.id,
        kind="copy",
        supporter_id=supporter.id,
        channel="email",
        destination=row.email,
        route_position=0,
        state=State.PLANNED,
        idempotency_key=new_idempotency_key(),
        last_error=None,
    )
    return delivery, "planned"


# --- ledgers --------------------------------------------------------------------------------------------


class Ledgers:
    """Fresh, migrated, empty ledgers: copies of a migrated template (a file, or a template database)."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind, self.workdir = kind, workdir
        self.created: list[str] = []
        if kind == "sqlite":
            self.template = workdir / "template.db"
            db.upgrade(f"sqlite:///{self.template}")
        else:
            self.template_name = f"dispatch_bench_{uuid.uuid4().hex[:10]}"
            self._admin(f'CREATE DATABASE "{self.template_name}"')
            self.created.append(self.template_name)
            db.upgrade(self._url(self.template_name))

    def _url(self, name: str) -> str:
        return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"

    def _admin(self, statement: str) -> None:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(statement))
        admin.dispose()

    @contextmanager
    def fresh(self) -> Iterator[sessionmaker[Session]]:
        if self.kind == "sqlite":
            path = self.workdir / f"ledger-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(self.template, path)
            url = f"sqlite:///{path}"
        else:
            name = f"{self.template_name}_{uuid.uuid4().hex[:6]}"
            self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template_name}"')
            self.created.append(name)
            url = self._url(name)
        engine = db.make_engine(url)
        try:
            yield db.session_factory(engine)
        finally:
            engine.dispose()
            if self.kind == "sqlite":
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            else:
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                self.created.remove(name)

    def close(self) -> None:
        for name in reversed(self.created):
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


# --- measurements ---------------------------------------------------------------------------------------


def campaign_with(supporters: int, workdir: Path) -> tuple[CampaignSpec, Report, Path]:
    """The example campaign (4 letter routes), its copies sent at dispatch, with ``supporters`` generated
    CSV rows already read: members with a valid address and consent (no consent date, as a CSV without one).

    The rows are built directly rather than read from a CSV, so the figures measure planning only."""
    path = build_campaign(  # the example, its malformed fax number fixed; copies due with the letters
        workdir / f"campaign-{supporters}", extra={"supporters": {"copies": CopiesWhen.AT_DISPATCH.value}}
    )
    spec = load_spec(path)
    report = validate(spec, file=path)
    assert report.ok, [str(p) for p in report.errors]
    report.supporters = [
        MemberRow(line=i + 2, email=f"supporter{i}@example.org", name=f"Supporter {i}") for i in range(supporters)
    ]
    report.supporter_rejects = []
    return spec, report, path


def content(factory: sessionmaker[Session]) -> tuple[int, str]:
    """(deliveries, digest of every delivery, its addressee and route or its list member (with the member's
    list and that list's link to the campaign), and its events): the bulk planner must write exactly what
    the row-by-row one wrote, ids, timestamps and the random idempotency keys aside (keys are compared by
    their length, a member's consent time by whether it is set)."""
    with factory() as session:
        rows = session.execute(
            select(
                func.length(Delivery.idempotency_key),
                Delivery.kind,
                Delivery.channel,
                Delivery.destination,
                Delivery.state,
                Delivery.last_error,
                Delivery.route_position,
                Supporter.email,
                Supporter.name,
                Supporter.locale,
                Supporter.consent,
                Supporter.consent_at.is_not(None),
                Supporter.consent_source,
                Supporter.fields,
                SupporterList.name,
                CampaignList.position,
                Addressee.role,
                Addressee.position,
                Route.position,
                Route.value,
                DeliveryEvent.actor,
                DeliveryEvent.from_state,
                DeliveryEvent.to_state,
                DeliveryEvent.reason,
            )
            .join(DeliveryEvent, DeliveryEvent.delivery_id == Delivery.id)
            .outerjoin(Supporter, Supporter.id == Delivery.supporter_id)
            .outerjoin(SupporterList, SupporterList.id == Supporter.list_id)
            .outerjoin(
                CampaignList,
                and_(CampaignList.list_id == Supporter.list_id, CampaignList.campaign_id == Delivery.campaign_id),
            )
            .outerjoin(Addressee, Addressee.id == Delivery.addressee_id)
            .outerjoin(Route, Route.id == Delivery.route_id)
        ).all()
    digest = hashlib.sha256(repr(sorted(tuple(map(str, r)) for r in rows)).encode()).hexdigest()
    return len(rows), digest


def time_plan(
    ledgers: Ledgers, spec: CampaignSpec, report: Report, path: Path, *, bulk: bool
) -> tuple[float, tuple[int, str]]:
    with ledgers.fresh() as factory:
        started = time.perf_counter()
        with db.transaction(factory) as session:
            if bulk:
                load_campaign(session, spec, report, source=path)
            else:
                baseline_load(session, spec, report, source=path)
        elapsed = time.perf_counter() - started
        return elapsed, content(factory)


@dataclass
class Counter:
    messages: int = 0
    ids: int = 0

    def __call__(self, queue: str, ids: Sequence[int]) -> None:
        self.messages += 1
        self.ids += len(ids)


def baseline_claim_due(session: Session, *, now: datetime, limit: int) -> list[Delivery]:
    """The scheduler's former claim, for comparison: the same locked SELECT (copies' turn included), then
    each row moved through the ORM with its own event (the ledger's move, one row at a time)."""
    from sqlalchemy import exists, or_
    from sqlalchemy.orm import aliased

    from dispatcher.domain.ledger_sql import SqlLedger

    earlier = aliased(Delivery)
    blocked = exists().where(
        earlier.addressee_id == Delivery.addressee_id,
        earlier.kind == "letter",
        earlier.route_position < Delivery.route_position,
        earlier.state.not_in([State.FAILED, State.SKIPPED, State.CANCELLED]),
    )
    query = (
        select(Delivery)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(
            Campaign.status == "scheduled",
            Delivery.state.in_([State.PLANNED, State.RETRY_WAIT]),
            or_(Delivery.not_before.is_(None), Delivery.not_before <= now),
            or_(
                and_(
                    Delivery.kind == "copy",
                    or_(Campaign.copies == CopiesWhen.AT_DISPATCH, ~letters_open(Delivery.campaign_id)),
                ),
                and_(Delivery.kind == "letter", or_(Campaign.route_policy == "all-routes", ~blocked)),
            ),
        )
        .order_by(Delivery.not_before, Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Delivery)
    )
    due = list(session.scalars(query))
    for delivery in due:
        SqlLedger(session).move(delivery, State.QUEUED, actor="scheduler", reason="due", at=now)
        delivery.queued_at = now
    return due


def time_claim(
    ledgers: Ledgers,
    spec: CampaignSpec,
    report: Report,
    path: Path,
    *,
    batch_size: int,
    claimer: Callable[..., Sequence[Any]] = claim_due,
) -> tuple[float, Counter]:
    """Plan (untimed) and schedule the campaign, then time ticks of claim_due + publish until none is due."""
    with ledgers.fresh() as factory:
        with db.transaction(factory) as session:
            load_campaign(session, spec, report, source=path)
            session.execute(update(Campaign).values(status="scheduled"))  # not_before stays NULL: all due now
        counter = Counter()
        now = datetime.now(UTC)
        started = time.perf_counter()
        while True:
            result = TickResult()
            with db.transaction(factory) as session:  # one tick, as run_once: claim, commit, then publish
                for delivery in claimer(session, now=now, limit=CLAIM_LIMIT):
                    result.queued[queue_for(delivery)].append(delivery.id)
            if not result.queued:
                break
            publish(result, counter, batch_size=batch_size)
        return time.perf_counter() - started, counter


@dataclass
class Row:
    database: str
    what: str
    rows: int
    seconds: float
    messages: int | None = None
    baseline: Row | None = None

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


def median_of(label: str, repeats: int, run: Callable[[], float]) -> float:
    runs = [run() for _ in range(repeats)]
    print(f"  {label}: " + " ".join(f"{r:.2f}s" for r in runs), file=sys.stderr, flush=True)
    return statistics.median(runs)


@dataclass(frozen=True)
class Options:
    supporters: int
    baseline_supporters: int
    claim_supporters: int
    repeats: int
    baseline_repeats: int


def bench(kind: str, options: Options, workdir: Path) -> list[Row]:
    campaigns = {
        n: campaign_with(n, workdir / kind)
        for n in {options.supporters, options.baseline_supporters, options.claim_supporters}
    }
    ledgers = Ledgers(kind, workdir)
    try:
        return plan_rows(kind, options, ledgers, campaigns) + claim_rows(kind, options, ledgers, campaigns)
    finally:
        ledgers.close()


Campaigns = dict[int, tuple[CampaignSpec, Report, Path]]


def plan_rows(kind: str, options: Options, ledgers: Ledgers, campaigns: Campaigns) -> list[Row]:
    written: dict[tuple[bool, int], tuple[int, str]] = {}

    def plan(bulk: bool, supporters: int) -> float:
        seconds, written[(bulk, supporters)] = time_plan(ledgers, *campaigns[supporters], bulk=bulk)
        return seconds

    small, big = options.baseline_supporters, options.supporters
    base = Row(
        kind,
        "plan, row by row (baseline)",
        4 + small,
        median_of(f"{kind} plan baseline", options.baseline_repeats, lambda: plan(False, small)),
    )
    bulk = Row(
        kind,
        "plan, bulk INSERT",
        4 + big,
        median_of(f"{kind} plan bulk", options.repeats, lambda: plan(True, big)),
        baseline=base,
    )
    if (True, small) not in written:
        plan(True, small)  # untimed: the same campaign as the baseline, to compare what both wrote
    if written[(True, small)] != written[(False, small)] or written[(True, small)][0] != 4 + small:
        raise SystemExit(f"{kind}: the bulk and the row-by-row ledgers differ: {written}")
    return [base, bulk]


def claim_rows(kind: str, options: Options, ledgers: Ledgers, campaigns: Campaigns) -> list[Row]:
    counters: dict[int, Counter] = {}

    def claim(batch_size: int, claimer: Callable[..., Sequence[Any]] = claim_due, key: int | None = None) -> float:
        seconds, counters[key or batch_size] = time_claim(
            ledgers, *campaigns[options.claim_supporters], batch_size=batch_size, claimer=claimer
        )
        return seconds

    seconds = median_of(
        f"{kind} claim row by row, 1/message", options.repeats, lambda: claim(1, baseline_claim_due, key=-1)
    )
    due = counters[-1].ids  # every delivery but the second fax to one addressee (first-success holds it)
    base = Row(kind, "claim row by row, 1 id/message (baseline)", due, seconds, counters[-1].messages)
    seconds = median_of(f"{kind} claim bulk 1/message", options.repeats, lambda: claim(1))
    single = Row(kind, "claim bulk, 1 id/message", due, seconds, counters[1].messages, baseline=base)
    seconds = median_of(f"{kind} claim bulk {BATCH}/message", options.repeats, lambda: claim(BATCH))
    batched = Row(kind, f"claim bulk, {BATCH} ids/message", due, seconds, counters[BATCH].messages, baseline=base)
    if due != 4 + options.claim_supporters - 1 or {counters[1].ids, counters[BATCH].ids} != {due}:
        raise SystemExit(f"{kind}: published {counters[-1].ids} / {counters[1].ids} / {counters[BATCH].ids} ids")
    return [base, single, batched]


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'database':<9} {'what':<42} {'rows':>7} {'seconds':>8} {'rows/s':>8} {'messages':>8} "
        f"{'ratio vs baseline':>17}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        messages = "" if row.messages is None else str(row.messages)
        ratio = "baseline" if row.baseline is None else f"{row.rate / row.baseline.rate:.1f}x rows/s"
        print(
            f"{row.database:<9} {row.what:<42} {row.rows:>7} {row.seconds:>8.2f} {row.rate:>8.0f} "
            f"{messages:>8} {ratio:>17}"
        )
    for row in rows:
        base = row.baseline
        if row.messages and base is not None and base.messages and row.messages != base.messages:
            print(
                f"{row.database}: {base.messages / row.messages:.0f}x fewer broker messages "
                f"({row.messages} vs {base.messages}) for the same {row.rows} ids"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Planning, claiming and publishing at volume vs baselines.")
    parser.add_argument(
        "--supporters", type=int, default=50_000, help="supporter copies planned by the bulk path (default 50,000)"
    )
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is printed")
    parser.add_argument(
        "--baseline-supporters",
        type=int,
        default=5_000,
        help="supporter copies for the row-by-row planning baseline (default 5,000: it is slow; "
        "its cost per row does not depend on N, pass --supporters' value to check)",
    )
    parser.add_argument("--baseline-repeats", type=int, default=1, help="runs of the planning baseline (default 1)")
    parser.add_argument(
        "--claim-supporters",
        type=int,
        default=5_000,
        help="supporter copies planned (untimed) for each claim+publish run (default 5,000)",
    )
    args = parser.parse_args(argv)
    options = Options(
        args.supporters, args.baseline_supporters, args.claim_supporters, args.repeats, args.baseline_repeats
    )
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    workdir = Path(tempfile.mkdtemp(prefix="dispatch-bench-"))
    started = time.perf_counter()
    try:
        rows: list[Row] = []
        for kind in kinds:
            (workdir / kind).mkdir()
            rows += bench(kind, options, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"plan: bulk {options.supporters} supporter copies (median of {options.repeats}) vs row by row "
        f"{options.baseline_supporters} (median of {options.baseline_repeats}); claim+publish: "
        f"{options.claim_supporters} supporter copies, ticks of {CLAIM_LIMIT} rows (median of {options.repeats}); "
        f"each ledger also has 4 letters; {os.cpu_count()} CPUs; {time.perf_counter() - started:.0f}s in all"
    )
    print_table(rows)


if __name__ == "__main__":
    main()
