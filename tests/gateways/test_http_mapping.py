"""The HTTP mapping every HTTP gateway shares (workers/gateways/http.py): what is ours to fix is a
ConfigurationFault, never a Permanent that would burn the addressee's route."""

from __future__ import annotations

import httpx
import pytest

from workers.gateways.errors import ConfigurationFault, Permanent
from workers.gateways.http import error_for_status, request


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_a_configuration_fault(status: int) -> None:
    error = error_for_status(httpx.Response(status, json={"message": "no"}), provider="acme")
    assert isinstance(error, ConfigurationFault)
    assert error.code == str(status)


def test_other_4xx_stay_permanent() -> None:
    error = error_for_status(httpx.Response(422, json={"message": "bad number"}), provider="acme")
    assert type(error) is Permanent


def test_a_base_url_that_cannot_be_requested_is_a_configuration_fault() -> None:
    with httpx.Client() as client, pytest.raises(ConfigurationFault) as caught:
        request(client, "GET", "ftp://api.example/v1/faxes", provider="acme")
    assert caught.value.code == "url"
