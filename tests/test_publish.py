"""Publishing claimed ids: small messages for faxes, so they spread over every worker process; large
batches for email and copies."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dispatcher.domain.scheduling import SchedulerConfig, TickResult, publish
from dispatcher.domain.settings import load_settings


def _published(result: TickResult, config: SchedulerConfig) -> list[tuple[str, list[int]]]:
    messages: list[tuple[str, list[int]]] = []

    def publisher(queue: str, ids: Sequence[int]) -> None:
        messages.append((queue, list(ids)))

    count = publish(result, publisher, batch_size=config.batch_size, batch_sizes=config.batch_sizes)
    assert count == len(messages)
    return messages


def _result(**queued: list[int]) -> TickResult:
    result = TickResult()
    for queue, ids in queued.items():
        result.queued[queue].extend(ids)
    return result


def test_by_default_faxes_go_four_to_a_message_and_emails_in_batches() -> None:
    config = SchedulerConfig.from_settings(load_settings())
    messages = _published(_result(fax=list(range(1, 10)), copies=list(range(100, 600))), config)
    assert [ids for queue, ids in messages if queue == "fax"] == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert [len(ids) for queue, ids in messages if queue == "copies"] == [200, 200, 100]


def test_the_fax_batch_size_is_a_setting_and_applies_to_republished_ids_too() -> None:
    config = SchedulerConfig.from_settings(load_settings(fax_publish_batch_size=2))
    result = _result(fax=[1, 2, 3], email=[7, 8, 9])
    result.republished["fax"].extend([4, 5])
    messages = _published(result, config)
    assert messages == [("fax", [1, 2]), ("fax", [3]), ("email", [7, 8, 9]), ("fax", [4, 5])]


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_FAX_PUBLISH_BATCH_SIZE", "5")
    assert SchedulerConfig.from_settings(load_settings()).batch_sizes == {"fax": 5}
