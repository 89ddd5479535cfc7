"""schemathesis over the whole /openapi.json of `dispatch web`, on SQLite and PostgreSQL, with a token
holding every role: whatever a client sends, the answer is never a server error (5xx).

The ledger holds the example campaign (loaded through the API) and a supporter list, so that requests
naming them reach past the look-up. The number of examples per operation is bounded (about a minute
in all)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy.orm import Session, sessionmaker

from .api_helpers import Roles, client, create
from .test_api_lists import import_csv

EXAMPLES = int(os.environ.get("DISPATCH_API_EXAMPLES", "30"))  # per operation; more for a longer hunt


@pytest.fixture
def everyone(factory: sessionmaker[Session]) -> dict[str, str]:
    return Roles(factory).everyone


def test_no_request_gets_a_server_error(factory: sessionmaker[Session], everyone: dict[str, str]) -> None:
    http = client(factory, secret=b"a secret for document and unsubscribe links")  # as `dispatch web` runs
    import_csv(http, everyone, "friends", "email,name,consent\nada@example.org,Ada Lovelace,yes\n")
    create(http, everyone, lists=["friends"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", http.app, headers=everyone)
    operations = [result.ok() for result in schema.get_all_operations()]
    tested = [op.label for op in operations if op.path.startswith("/api/")]
    assert len(tested) == 24
    failures: dict[str, str] = {}
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def call(case: Any) -> None:
            response = case.call_and_validate(headers=everyone, checks=[not_a_server_error])
            if case.operation.path.startswith("/api/"):
                statuses[response.status_code] += 1

        try:
            call()
        except Exception as err:  # every operation is tried; the failures are listed together
            failures[operation.label] = f"{type(err).__name__}: {str(err)[:2000]}"
    print(f"\nschemathesis: {len(operations)} operations; answers to /api/ by status: {dict(statuses)}")
    assert statuses[200] and not statuses[401] and not statuses[403]  # every role: the API's handlers answer
    assert not failures, "\n\n".join(f"{label}\n{why}" for label, why in failures.items())
