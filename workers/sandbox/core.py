"""What every provider emulator shares: scripted outcomes per destination and the oracle log.

The oracle is append-only: one entry per message a provider *accepted* (including accept-then-drop,
where the provider kept the message but the client never heard back). An accepted send that later
reached nobody before any call was made (the provider could not fetch our document) is *amended*:
``oracle()`` shows its final outcome, and the file gets the amended entry appended (the last line for a
provider id is its final outcome). Tests and the demo judge
"never twice" by counting entries per reference. It lives in memory and, when ``oracle_path`` is
set, is also appended to a JSON-lines file so other processes can read it.

Outcomes, consumed one per send attempt to a destination (then ``ok`` forever):

    ok              accepted; status webhooks follow, ending in success
    busy            fax: accepted, then fails with the provider's "busy" code
    no_answer       fax: accepted, then fails with "no answer"
    no_fax_tone     fax: accepted, then fails with "no fax tone / not a fax machine"
    invalid_number  rejected or failed with the provider's invalid/unallocated number code
    rate_limited    HTTP 429 with Retry-After, nothing accepted
    server_error    HTTP 500, nothing accepted
    bad_gateway     HTTP 502 after the message was accepted (ambiguous to the client)
    drop            accepted, then the connection is dropped before the answer
    bounce          email: accepted, then a hard bounce (the provider's permanent "no such mailbox")
    soft_bounce     email: accepted, then a soft bounce (mailbox full: the provider's temporary failure)
    complaint       email: accepted and delivered, then the person marks it as spam (a complaint event)
    unauthorized    refused as with a wrong key (HTTP 401 in the provider's shape; SMTP 530 at RCPT),
                    nothing accepted
    media_fetch_failed  fax: accepted, then fails with the provider's "could not fetch the document"
                    reason, as when our document URL (DISPATCH_PUBLIC_BASE_URL) is wrong
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

OUTCOMES = frozenset(
    {
        "ok",
        "busy",
        "no_answer",
        "no_fax_tone",
        "invalid_number",
        "rate_limited",
        "server_error",
        "bad_gateway",
        "drop",
        "bounce",
        "soft_bounce",
        "complaint",
        "unauthorized",
        "media_fetch_failed",
    }
)


# Accepted sends that reach (or may reach) the recipient. Two of these for one reference is a
# duplicate letter. A send accepted and then failed (busy, no answer...) reached nobody: its retry
# is not a duplicate.
REACHING = frozenset({"ok", "drop", "bad_gateway", "bounce", "complaint"})


@dataclass(frozen=True)
class OracleEntry:
    provider: str
    provider_id: str
    reference: str | None
    destination: str
    outcome: str
    accepted_at: str


@dataclass
class SandboxState:
    """Shared, thread-safe state of one emulator instance."""

    provider: str
    latency: float = 0.0  # seconds to wait before answering a send
    webhook_delay: float = 0.05  # seconds between status webhooks
    oracle_path: Path | None = None
    retry_after: int = 1
    _scripts: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    _oracle: list[OracleEntry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, destination: str, outcomes: Iterable[str]) -> None:
        """Queue outcomes for the next attempts to ``destination``."""
        outcomes = list(outcomes)
        unknown = sorted(set(outcomes) - OUTCOMES)
        if unknown:
            raise ValueError(f"unknown sandbox outcome(s) {unknown}; known: {sorted(OUTCOMES)}")
        with self._lock:
            self._scripts[destination].extend(outcomes)

    def next_outcome(self, destination: str) -> str:
        with self._lock:
            queue = self._scripts.get(destination)
            return queue.popleft() if queue else "ok"

    def record(self, *, provider_id: str, reference: str | None, destination: str, outcome: str) -> OracleEntry:
        entry = OracleEntry(self.provider, provider_id, reference, destination, outcome, datetime.now(UTC).isoformat())
        with self._lock:
            self._oracle.append(entry)
            self._append(entry)
        return entry

    def amend(self, provider_id: str, outcome: str) -> None:
        """The final outcome of an accepted send, learnt after its acceptance (see the module docstring)."""
        with self._lock:
            for index, entry in enumerate(self._oracle):
                if entry.provider_id == provider_id:
                    self._oracle[index] = replace(entry, outcome=outcome)
                    self._append(self._oracle[index])

    def _append(self, entry: OracleEntry) -> None:
        if self.oracle_path is not None:
            with self.oracle_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(entry)) + "\n")

    def oracle(self) -> list[OracleEntry]:
        with self._lock:
            return list(self._oracle)

    def duplicates(self) -> dict[tuple[str | None, str], int]:
        """(reference, destination) pairs sent more than once in a way that reached, or may have
        reached, the recipient. One email to a To and a Cc is one entry per recipient, not a duplicate."""
        counts: dict[tuple[str | None, str], int] = defaultdict(int)
        for entry in self.oracle():
            if entry.outcome in REACHING:
                counts[(entry.reference, entry.destination)] += 1
        return {key: n for key, n in counts.items() if n > 1}

    def sends_per_reference(self) -> dict[str | None, int]:
        counts: dict[str | None, int] = defaultdict(int)
        for entry in self.oracle():
            counts[entry.reference] += 1
        return dict(counts)
