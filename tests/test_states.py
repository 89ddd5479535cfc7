"""The delivery state machine, pinned to the design: every allowed move listed here by hand, every other
move among the ten states refused.

The expected table is written from the design, not read from ``dispatcher.domain.states.ALLOWED``:
README "How a letter is sent, and why never twice" (the diagram and its rules), README's command table
(pause hands queued deliveries back to planned; retry takes a failed delivery), and the architecture
notes: planned -> queued -> sending -> submitted -> delivered, with retry_wait, failed, cancelled,
skipped (another route already succeeded) and unknown (the outcome of a send is not known); unknown is
never resent blindly: it is reconciled or held for an operator.

One move is not drawn in the diagram but follows from its rules: sending -> delivered, a provider's
delivery report that overtakes the worker's record of the receipt. Nothing moves retry_wait back to
planned, and an unknown delivery is never cancelled: it may have been sent (only reconciliation or an
operator settles it), so both are refused.
"""

from __future__ import annotations

import itertools

import pytest

from dispatcher.domain.errors import TransitionError
from dispatcher.domain.states import ALLOWED, TERMINAL, State, check_transition

STATES = [
    "planned",
    "queued",
    "sending",
    "submitted",
    "delivered",
    "retry_wait",
    "unknown",
    "failed",
    "cancelled",
    "skipped",
]

ALLOWED_MOVES = {
    # planned: waiting for its time and turn
    ("planned", "queued"),  # the scheduler claims it
    ("planned", "cancelled"),  # any waiting state -> cancelled
    ("planned", "skipped"),  # another route of the addressee already succeeded
    ("planned", "failed"),  # the campaign's deadline passed
    # queued: its id is on the broker
    ("queued", "sending"),  # the worker's compare-and-set claim
    ("queued", "planned"),  # campaign paused: queued deliveries go back to planned
    ("queued", "cancelled"),
    ("queued", "skipped"),
    ("queued", "failed"),
    # sending: claimed, the request may be on its way; never back to queued
    ("sending", "submitted"),  # the provider's receipt
    ("sending", "delivered"),  # a delivery report that overtakes the receipt
    ("sending", "retry_wait"),  # transient failure: same route again after backoff
    ("sending", "unknown"),  # the outcome of the send is not known
    ("sending", "failed"),  # permanent failure: the next route may go
    # submitted: accepted by the provider
    ("submitted", "delivered"),  # its report (webhook or poll)
    ("submitted", "retry_wait"),  # a transient failure reported later
    ("submitted", "failed"),  # a permanent failure reported later, or given up after N attempts
    # retry_wait: waiting for its backoff
    ("retry_wait", "queued"),  # due again
    ("retry_wait", "cancelled"),
    ("retry_wait", "skipped"),
    ("retry_wait", "failed"),
    # unknown: reconciled with the provider, or settled by an operator; never resent blindly
    ("unknown", "submitted"),
    ("unknown", "delivered"),
    ("unknown", "failed"),
    ("unknown", "retry_wait"),  # the provider twice said it has nothing, or an operator confirmed it
    # failed: an operator's retry plans it again (same route, same key)
    ("failed", "planned"),
    # delivered, cancelled, skipped: final
}

REFUSED_MOVES = [(a, b) for a, b in itertools.product(STATES, STATES) if (a, b) not in ALLOWED_MOVES]


def test_the_ten_states() -> None:
    assert [s.value for s in State] == STATES
    assert len(ALLOWED_MOVES) == 26
    assert len(REFUSED_MOVES) == 74


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED_MOVES))
def test_allowed_transitions_pass(current: str, target: str) -> None:
    check_transition(current, target)
    check_transition(State(current), State(target))


@pytest.mark.parametrize(("current", "target"), REFUSED_MOVES)
def test_every_other_transition_is_refused(current: str, target: str) -> None:
    with pytest.raises(TransitionError, match=f"from {current} to {target}"):
        check_transition(current, target)
    with pytest.raises(TransitionError, match=f"from {current} to {target}"):
        check_transition(State(current), State(target))


def test_the_rules_that_protect_against_a_second_send() -> None:
    assert State.QUEUED not in ALLOWED[State.SENDING]  # a claimed send is never simply re-queued
    assert State.QUEUED not in ALLOWED[State.UNKNOWN]  # unknown is reconciled, never resent blindly
    assert ALLOWED[State.DELIVERED] == frozenset()
    assert {State.DELIVERED, State.CANCELLED, State.SKIPPED} <= TERMINAL
