"""Any webhook body, signed by the provider, gets an answer below 500 from the real web app (TestClient),
on SQLite and PostgreSQL; so do odd paths of the read API and of the webhook route.

Hypothesis draws, per gateway: random bytes, random JSON, and the provider's own "delivered" report
about a delivery the ledger has in flight (tests/signed_webhooks.py) with one node replaced by a random
value or removed. Every body is signed with the provider's scheme (the emulators' keys), so the
signature verifies and the gateway's parser and the ledger really run. Odd values include what broke
the app before: NUL characters, ids of 200+ characters, timestamps of 1e20, lists where objects
belong, numbers beyond any float.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.models import Delivery, DeliveryEvent
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.states import State
from dispatcher.processes.api import create_app
from dispatcher.processes.web_context import WebContext

from .builders import api_headers, build_campaign
from .signed_webhooks import AT_DISPATCH, WEBHOOK_GATEWAYS, Submitted, gateways, sample, signed, submit_one_per_gateway

pytestmark = pytest.mark.timeout(600)

# No example database: a failure prints its example, and runs leave no files behind.
SETTINGS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

ODD: tuple[object, ...] = (
    None, True, 0, -1, 1e20, -1e20, 1e308, 2**70, 10**4000, "", "\x00", "a\x00b", "x" * 250, "\u202e",
    "\x1b[31m", "\ud800", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2021-13-45T25:61:00Z", [], {}, [None], [{}],
)  # fmt: skip
text = st.text(max_size=30)
leaves = st.sampled_from(ODD) | st.none() | st.booleans() | st.integers() | st.floats() | text
json_values = st.recursive(
    leaves, lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3), max_leaves=8
)


def paths(document: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a node below the root of ``document`` (keys and list indexes)."""
    if prefix:
        yield prefix
    children = (
        document.items() if isinstance(document, dict) else enumerate(document) if isinstance(document, list) else ()
    )
    for key, value in children:
        yield from paths(value, (*prefix, key))


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    """``document`` with the node at ``path`` replaced by ``value`` (removed when ``value`` is _GONE)."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(document, dict):
        copy = dict(document)
        if not rest and value is _GONE:
            del copy[key]
        else:
            copy[key] = replaced(document[key], rest, value)
        return copy
    items = list(document)
    if not rest and value is _GONE:
        del items[key]
    else:
        items[key] = replaced(document[key], rest, value)
    return items


_GONE = object()


def some_leaves(draw: st.DrawFn, document: Any, kind: type, value: object) -> Any:
    """``document`` with leaves of type ``kind`` (bools aside) replaced by ``value``, each one or not."""
    if isinstance(document, dict):
        return {k: some_leaves(draw, v, kind, value) for k, v in document.items()}
    if isinstance(document, list):
        return [some_leaves(draw, v, kind, value) for v in document]
    if isinstance(document, kind) and not isinstance(document, bool) and draw(st.booleans()):
        return value
    return document


@st.composite
def bodies(draw: st.DrawFn, name: str, target: Submitted) -> bytes | Any:
    """Raw bytes, random JSON, or the provider's report about ``target`` with one node changed or removed,
    or with some of its texts (or numbers) replaced by one odd value."""
    kind = draw(st.sampled_from(["bytes", "json", "one", "one", "texts", "numbers"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return draw(json_values)
    document = sample(name, provider_id=target.provider_id, reference=target.reference)
    if kind == "texts":
        return some_leaves(draw, document, str, draw(st.sampled_from(ODD) | text))
    if kind == "numbers":
        return some_leaves(draw, document, int | float, draw(st.sampled_from(ODD) | st.integers() | st.floats()))
    path = draw(st.sampled_from(list(paths(document))))
    return replaced(document, path, draw(st.just(_GONE) | st.sampled_from(ODD) | json_values))


@pytest.fixture
def client(factory: sessionmaker[Session]) -> Iterator[TestClient]:
    context = WebContext(
        factory=factory,
        gateways=gateways(),
        secret=b"s" * 32,
        retry=RetryPolicy(base_seconds=1, cap_seconds=1, max_attempts=1, no_fax_tone_limit=2),
        documents=DocumentCache(),
    )
    with TestClient(create_app(context), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def in_flight(factory: sessionmaker[Session], tmp_path: Path) -> dict[str, Submitted]:
    """One delivery per gateway, mid-send: a report about it is applied, so the ledger writes too."""
    return submit_one_per_gateway(
        factory, build_campaign(tmp_path, route_policy="all-routes", extra=AT_DISPATCH), state=State.SENDING
    )


@pytest.mark.parametrize("name", WEBHOOK_GATEWAYS)
def test_no_signed_webhook_body_gets_a_5xx(client: TestClient, in_flight: dict[str, Submitted], name: str) -> None:
    @SETTINGS
    @given(body=bodies(name, in_flight[name]))
    def post(body: bytes | Any) -> None:
        content, headers = signed(name, body)
        response = client.post(f"/webhooks/{name}", content=content, headers=headers)
        assert response.status_code < 500, (response.status_code, response.text[:300])

    post()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/webhooks/smtp"),
        ("POST", "/webhooks/%00"),
        ("POST", "/webhooks/telnyx%00"),
        ("GET", "/api/campaigns/a%00b/deliveries"),
        ("GET", "/api/campaigns/%00/deliveries"),
        ("GET", "/api/campaigns/%ff%fe/deliveries"),
        ("GET", "/api/campaigns/%ed%a0%80/deliveries"),
        ("GET", "/api/campaigns/" + "x" * 300 + "/deliveries"),
        ("GET", "/media/%00.pdf"),
        ("GET", "/media/" + "A" * 5000 + ".pdf"),
    ],
)
def test_odd_paths_get_a_4xx(client: TestClient, factory: sessionmaker[Session], method: str, path: str) -> None:
    # with a token: the odd path reaches its handler, not only the identity check
    response = client.request(method, path, content=b"{}", headers=api_headers(factory))
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])


HOSTILE_IDS = {
    "NUL in the provider id": {"provider_id": "fax\x00id"},
    "a provider id of 250 characters": {"provider_id": "x" * 250},
    "ESC in the provider id": {"provider_id": "\x1b[2Jfax"},
    "NUL in the reference": {"reference": "d\x00"},
    "a reference of 250 characters": {"reference": "d" * 250},
    "an unpaired surrogate in the reference": {"reference": "d\ud800"},
}


@pytest.mark.parametrize("name", WEBHOOK_GATEWAYS)
@pytest.mark.parametrize("hostile", sorted(HOSTILE_IDS))
def test_ids_no_provider_issues_are_a_4xx_and_change_nothing(
    factory: sessionmaker[Session], client: TestClient, in_flight: dict[str, Submitted], name: str, hostile: str
) -> None:
    target = in_flight[name]
    ids = {"provider_id": target.provider_id, "reference": target.reference, **HOSTILE_IDS[hostile]}
    if name == "phaxio" and not ids["provider_id"].isdigit():
        pytest.skip("a Phaxio fax id is an integer: the report cannot carry this one")
    if name == "telnyx" and "\ud800" in ids["reference"]:
        pytest.skip("Telnyx's client_state is base64 of UTF-8: it cannot carry an unpaired surrogate")
    before = events_and_states(factory)
    content, headers = signed(name, sample(name, **ids))
    response = client.post(f"/webhooks/{name}", content=content, headers=headers)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert events_and_states(factory) == before


def events_and_states(factory: sessionmaker[Session]) -> tuple[int, dict[int, str]]:
    with factory() as session:
        count = int(session.scalar(select(func.count(DeliveryEvent.id))) or 0)
        return count, {d.id: d.state for d in session.scalars(select(Delivery))}
