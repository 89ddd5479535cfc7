"""After each run: did every delivery end, and did each delivery's reference reach the sink or the
emulator exactly once? Read from the ledger (its tables, as any SQL client would) and from what the
receiving end counted per reference."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import bindparam, create_engine, text

ENDED = frozenset({"submitted", "delivered", "failed", "cancelled", "skipped"})
SENT = frozenset({"submitted", "delivered"})  # accepted by the gateway (SMTP has no later report)
# an accepted send that reached, or may have reached, its recipient (workers/sandbox/core.py REACHING)
REACHING = frozenset({"ok", "drop", "bad_gateway", "bounce", "complaint"})


class Ledger:
    """Read-only queries over one deployment's ledger."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_size=1, max_overflow=0)

    def close(self) -> None:
        self.engine.dispose()

    def states(self, campaigns: Sequence[str]) -> Counter[str]:
        query = text(
            "SELECT d.state, count(*) FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id "
            "WHERE c.name IN :names GROUP BY d.state"
        ).bindparams(bindparam("names", expanding=True))
        with self.engine.connect() as conn:
            return Counter({state: int(n) for state, n in conn.execute(query, {"names": list(campaigns)})})

    def references(self, campaigns: Sequence[str]) -> dict[str, str]:
        """idempotency key -> state, for every delivery meant to go out (skipped at planning: not)."""
        query = text(
            "SELECT d.idempotency_key, d.state FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id "
            "WHERE c.name IN :names AND d.state <> 'skipped'"
        ).bindparams(bindparam("names", expanding=True))
        with self.engine.connect() as conn:
            return {key: state for key, state in conn.execute(query, {"names": list(campaigns)})}


@dataclass
class Verdict:
    """What a run's check found; ``problems`` empty when every delivery ended, sent, once."""

    deliveries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        self.problems.append(problem)


def check(ledger_refs: Mapping[str, str], received: Mapping[str, int], *, where: str) -> Verdict:
    """Every ledger delivery ended as sent, and its reference was received exactly once at ``where``;
    nothing was received that the ledger does not hold. Only counts and states are reported (never
    an address)."""
    verdict = Verdict(deliveries=len(ledger_refs))
    states = Counter(ledger_refs.values())
    open_ = {s: n for s, n in states.items() if s not in ENDED}
    if open_:
        verdict.add(f"deliveries not ended: {dict(open_)}")
    unsent = {s: n for s, n in states.items() if s in ENDED and s not in SENT}
    if unsent:
        verdict.add(f"deliveries ended without being sent: {dict(unsent)}")
    missing = sum(1 for key in ledger_refs if received.get(key, 0) == 0)
    twice = sum(1 for key in ledger_refs if received.get(key, 0) > 1)
    strays = sum(1 for key in received if key not in ledger_refs)
    if missing:
        verdict.add(f"{missing} deliveries never reached {where}")
    if twice:
        verdict.add(f"{twice} deliveries reached {where} more than once")
    if strays:
        verdict.add(f"{strays} references reached {where} that the ledger does not hold")
    return verdict


@dataclass(frozen=True)
class Accepted:
    provider_id: str
    reference: str | None
    destination: str
    outcome: str
    at: datetime


class Oracle:
    """An emulator's oracle file, read as it grows: one entry per accepted send, the last line of a
    provider id being its final outcome, its first line the time the emulator accepted it
    (workers/sandbox/core.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, Accepted] = {}
        self._offset = 0
        self._partial = b""

    def read(self) -> list[Accepted]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            raw = json.loads(line)
            first = self.entries.get(raw["provider_id"])
            self.entries[raw["provider_id"]] = Accepted(
                raw["provider_id"],
                raw["reference"],
                raw["destination"],
                raw["outcome"],
                first.at if first else datetime.fromisoformat(raw["accepted_at"]),
            )
        return list(self.entries.values())

    def count(self) -> int:
        return len(self.read())


def reaching_per_reference(accepted: Sequence[Accepted]) -> Counter[str]:
    return Counter(a.reference or "" for a in accepted if a.outcome in REACHING)
