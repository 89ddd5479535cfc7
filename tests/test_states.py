"""The delivery state machine refuses every transition it does not allow."""

from __future__ import annotations

import itertools

import pytest

from dispatcher.domain.errors import TransitionError
from dispatcher.domain.states import ALLOWED, TERMINAL, State, check_transition

ALL_PAIRS = list(itertools.product(State, State))


@pytest.mark.parametrize(("current", "target"), [(a, b) for a, b in ALL_PAIRS if b not in ALLOWED[a]])
def test_forbidden_transitions_raise(current: State, target: State) -> None:
    with pytest.raises(TransitionError, match=f"from {current} to {target}"):
        check_transition(current, target)


@pytest.mark.parametrize(("current", "target"), [(a, b) for a, b in ALL_PAIRS if b in ALLOWED[a]])
def test_allowed_transitions_pass(current: State, target: State) -> None:
    check_transition(current, target)


def test_the_rules_that_protect_against_a_second_send() -> None:
    assert State.QUEUED not in ALLOWED[State.SENDING]  # a claimed send is never simply re-queued
    assert State.QUEUED not in ALLOWED[State.UNKNOWN]  # unknown is reconciled, never resent blindly
    assert ALLOWED[State.DELIVERED] == frozenset()
    assert {State.DELIVERED, State.CANCELLED, State.SKIPPED} <= TERMINAL
