"""The delivery state machine (ARCHITECTURE.md, "The ledger is the truth").

planned -> queued -> sending -> submitted -> delivered
              ^          |          |
              |          v          v
          retry_wait <---+----------+          (transient: same route again, after backoff)
sending -> unknown (worker died, or the outcome of a send is not known) -> reconciled
any live state -> cancelled | skipped | failed
"""

from __future__ import annotations

import enum

from dispatcher.domain.errors import TransitionError


class State(enum.StrEnum):
    PLANNED = "planned"
    QUEUED = "queued"
    SENDING = "sending"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    RETRY_WAIT = "retry_wait"
    UNKNOWN = "unknown"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class CampaignStatus(enum.StrEnum):
    """draft -> scheduled <-> paused -> completed (every delivery ended) | cancelled."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


class DeliveryKind(enum.StrEnum):
    LETTER = "letter"  # to an official ("To" or CC), over one of their routes
    COPY = "copy"  # a supporter's copy


class Channel(enum.StrEnum):
    FAX = "fax"
    EMAIL = "email"


class CopiesWhen(enum.StrEnum):
    """When a campaign's supporter copies go (campaign file ``[supporters] copies``)."""

    AT_DISPATCH = "at-dispatch"  # "this letter is being sent to ...": when the letters start going out
    AFTER_DELIVERY = "after-delivery"  # once every official's delivery is final, with each outcome


class RoutePolicy(enum.StrEnum):
    FIRST_SUCCESS = "first-success"  # stop at the first route of an addressee that succeeds
    ALL_ROUTES = "all-routes"  # send over every route


S = State
TERMINAL = frozenset({S.DELIVERED, S.FAILED, S.CANCELLED, S.SKIPPED})

ALLOWED: dict[State, frozenset[State]] = {
    S.PLANNED: frozenset({S.QUEUED, S.CANCELLED, S.SKIPPED, S.FAILED}),
    # queued -> planned: a paused campaign hands its queued rows back to the scheduler
    S.QUEUED: frozenset({S.SENDING, S.PLANNED, S.CANCELLED, S.SKIPPED, S.FAILED}),
    # sending never goes back to queued: a claimed send either has an outcome or is unknown
    S.SENDING: frozenset({S.SUBMITTED, S.DELIVERED, S.RETRY_WAIT, S.UNKNOWN, S.FAILED}),
    S.SUBMITTED: frozenset({S.DELIVERED, S.FAILED, S.RETRY_WAIT}),
    S.RETRY_WAIT: frozenset({S.QUEUED, S.CANCELLED, S.SKIPPED, S.FAILED}),
    # unknown is settled only by reconciliation (the provider's word) or by an operator; never cancelled:
    # the letter may have gone out
    S.UNKNOWN: frozenset({S.SUBMITTED, S.DELIVERED, S.FAILED, S.RETRY_WAIT}),
    S.DELIVERED: frozenset(),
    # an operator may retry a failed delivery: it is planned again, same key, same route
    S.FAILED: frozenset({S.PLANNED}),
    S.CANCELLED: frozenset(),
    S.SKIPPED: frozenset(),
}


def check_transition(current: State | str, target: State | str) -> None:
    """Raise TransitionError unless ``current -> target`` is allowed."""
    current, target = State(current), State(target)
    if target not in ALLOWED[current]:
        allowed = ", ".join(sorted(ALLOWED[current])) or "none: terminal state"
        raise TransitionError(f"delivery cannot go from {current} to {target} (allowed: {allowed})")


def sources_of(target: State) -> frozenset[State]:
    """Every state from which ``target`` may be reached (for compare-and-set updates)."""
    return frozenset(s for s, targets in ALLOWED.items() if target in targets)
