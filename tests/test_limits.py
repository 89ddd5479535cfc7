"""RedisLimiter against the real Redis on 127.0.0.1:6379: calls in flight, per-second rate, bounded waits,
and slots left behind by a killed worker.

Every test uses its own gateway and campaign names, so parallel runs never share a key; assertions are
about counts and ordering, never about how long something took.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest
import redis

from workers import keys
from workers.limits import GatewayRate, Limits, LimitTimeout, RedisLimiter

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

GENEROUS = Limits(
    gateway_per_second=1000, gateway_in_flight=1000, campaign_per_minute=100_000, max_wait=10.0, slot_ttl=300.0
)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5, socket_connect_timeout=5)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def names(client: redis.Redis) -> Iterator[tuple[str, str]]:
    """A unique (gateway, campaign) pair; their keys are deleted afterwards."""
    tag = uuid.uuid4().hex[:12]
    gateway, campaign = f"test-gw-{tag}", f"test-campaign-{tag}"
    yield gateway, campaign
    for key in client.scan_iter(match=f"{keys.PREFIX}:*{tag}*", count=1000):
        client.delete(key)


def limits(**changes: object) -> Limits:
    values = {
        "gateway_per_second": GENEROUS.gateway_per_second,
        "gateway_in_flight": GENEROUS.gateway_in_flight,
        "campaign_per_minute": GENEROUS.campaign_per_minute,
        "max_wait": GENEROUS.max_wait,
        "slot_ttl": GENEROUS.slot_ttl,
        **changes,
    }
    return Limits(**values)  # type: ignore[arg-type]


def test_never_more_calls_in_flight_than_allowed(client: redis.Redis, names: tuple[str, str]) -> None:
    gateway, campaign = names
    in_flight, peak, done = 0, 0, 0
    lock = threading.Lock()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal in_flight, peak, done
        limiter = RedisLimiter(client, limits(gateway_in_flight=2))  # one limiter per "worker process"
        try:
            start.wait(timeout=5)
            for _ in range(3):
                with limiter.sending(gateway, campaign=campaign):
                    with lock:
                        in_flight += 1
                        peak = max(peak, in_flight)
                    time.sleep(0.05)  # the gateway call
                    with lock:
                        in_flight -= 1
                        done += 1
        except BaseException as err:  # surfaced below, never lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert done == 12
    assert peak == 2  # the limit was reached (4 workers competed) and never exceeded
    assert client.zcard(keys.gateway_slots(gateway)) == 0  # every slot was given back


def test_per_second_rate_sends_the_rest_to_the_next_window(client: redis.Redis, names: tuple[str, str]) -> None:
    gateway, campaign = names
    limiter = RedisLimiter(client, limits(gateway_per_second=3))
    start = int(time.time())  # a lower bound on the window the first call is admitted in
    admitted: list[int] = []
    for _ in range(7):
        with limiter.sending(gateway, campaign=campaign):
            admitted.append(int(time.time()))  # never earlier than the window the call was admitted in
    # at most 3 per one-second window: call k (from 0) cannot be admitted before window start + k // 3
    assert all(window >= start + k // 3 for k, window in enumerate(admitted)), (start, admitted)
    assert admitted == sorted(admitted)
    assert admitted[6] >= start + 2  # the 7th call waited for a later window than the first three
    assert admitted[6] <= start + 4  # ... and only for the next free one, not for max_wait


def test_concurrent_callers_share_the_per_second_rate(client: redis.Redis, names: tuple[str, str]) -> None:
    gateway, campaign = names
    admitted: list[int] = []
    lock = threading.Lock()
    start = int(time.time())

    def worker() -> None:
        limiter = RedisLimiter(client, limits(gateway_per_second=3))
        with limiter.sending(gateway, campaign=campaign), lock:
            admitted.append(int(time.time()))

    threads = [threading.Thread(target=worker) for _ in range(7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(admitted) == 7
    ordered = sorted(admitted)
    assert all(window >= start + k // 3 for k, window in enumerate(ordered)), (start, ordered)


def test_campaign_rate_is_shared_across_gateways(client: redis.Redis, names: tuple[str, str]) -> None:
    gateway, campaign = names
    limiter = RedisLimiter(client, limits(campaign_per_minute=2, max_wait=0.2))
    if time.time() % 60 > 59:  # keep the three calls inside one minute window
        time.sleep(60 - time.time() % 60)
    with limiter.sending(gateway, campaign=campaign):
        pass
    with limiter.sending(gateway + "-other", campaign=campaign):
        pass
    # the next minute is further away than max_wait
    with pytest.raises(LimitTimeout, match="rate limit"), limiter.sending(gateway + "-third", campaign=campaign):
        pass


def test_waiting_longer_than_max_wait_for_a_slot_raises(client: redis.Redis, names: tuple[str, str]) -> None:
    gateway, campaign = names
    holder = RedisLimiter(client, limits(gateway_in_flight=1))
    waiter = RedisLimiter(client, limits(gateway_in_flight=1, max_wait=0.3))
    entered = False
    with (
        holder.sending(gateway, campaign=campaign),
        pytest.raises(LimitTimeout, match="in flight"),
        waiter.sending(gateway, campaign=campaign),
    ):
        entered = True
    assert not entered
    with waiter.sending(gateway, campaign=campaign):  # released: the slot is free again
        entered = True
    assert entered


def test_waiting_longer_than_max_wait_for_the_rate_raises(client: redis.Redis, names: tuple[str, str]) -> None:
    gateway, campaign = names
    limiter = RedisLimiter(client, limits(gateway_per_second=1, max_wait=0.0))
    # max_wait 0: one call per window passes, the next cannot wait for another window (three calls, so
    # a second boundary passing between two of them changes nothing)
    with pytest.raises(LimitTimeout, match="rate limit"):
        for _ in range(3):
            with limiter.sending(gateway, campaign=campaign):
                pass


def test_slot_of_a_killed_holder_frees_itself_after_its_ttl(client: redis.Redis, names: tuple[str, str]) -> None:
    gateway, campaign = names
    killed = RedisLimiter(client, limits(gateway_in_flight=1, slot_ttl=0.5))
    # entered and never left: the worker was killed mid-send (keep a reference: closing the generator
    # would run its cleanup, which a SIGKILLed process never does)
    abandoned: AbstractContextManager[None] = killed.sending(gateway, campaign=campaign)
    abandoned.__enter__()
    assert client.zcard(keys.gateway_slots(gateway)) == 1

    other = RedisLimiter(client, limits(gateway_in_flight=1, slot_ttl=0.5, max_wait=0.05))
    with pytest.raises(LimitTimeout), other.sending(gateway, campaign=campaign):  # still held
        pass

    patient = RedisLimiter(client, limits(gateway_in_flight=1, slot_ttl=0.5, max_wait=5.0))
    with patient.sending(gateway, campaign=campaign):
        members = client.zrange(keys.gateway_slots(gateway), 0, -1)
        assert len(members) == 1  # the abandoned slot was dropped, ours took its place
    assert client.zcard(keys.gateway_slots(gateway)) == 0
    del abandoned


def test_a_renewed_slot_outlives_its_ttl_and_frees_itself_once_renewals_stop(
    client: redis.Redis, names: tuple[str, str]
) -> None:
    """The slot's life follows the claim's lease: the worker's heartbeat renews both; a killed worker
    renews neither, and its slot is free one lease later."""
    gateway, campaign = names
    holder = RedisLimiter(client, limits(gateway_in_flight=1, slot_ttl=0.6))
    waiter = RedisLimiter(client, limits(gateway_in_flight=1, slot_ttl=0.6, max_wait=0.05))
    abandoned = holder.sending(gateway, campaign=campaign)  # entered and never left, as in a killed worker
    slot = abandoned.__enter__()
    for _ in range(6):  # 1.2 s: twice the ttl, renewed every 0.2 s
        time.sleep(0.2)
        assert slot.renew() is True
    with pytest.raises(LimitTimeout, match="in flight"), waiter.sending(gateway, campaign=campaign):
        pass  # renewed: still held
    patient = RedisLimiter(client, limits(gateway_in_flight=1, slot_ttl=0.6, max_wait=5.0))
    with patient.sending(gateway, campaign=campaign):  # no more renewals: free once the ttl ran out
        assert client.zcard(keys.gateway_slots(gateway)) == 1
        assert slot.renew() is False  # the lost slot is not taken back: that would exceed the limit
        assert client.zcard(keys.gateway_slots(gateway)) == 1
    del abandoned


def test_keys_start_with_the_namespace(client: redis.Redis, names: tuple[str, str]) -> None:
    """DISPATCH_QUEUE_PREFIX leads every key, so one deployment's keys are found (and kept apart) by it."""
    gateway, campaign = names
    namespace = f"test-ns-{gateway}-"
    limiter = RedisLimiter(client, limits(), namespace=namespace)
    try:
        with limiter.sending(gateway, campaign=campaign):
            found = sorted(k.decode() for k in client.scan_iter(match=f"*{gateway}*", count=1000))
        assert found and all(key.startswith(namespace) for key in found), found
        assert keys.gateway_slots(gateway, namespace=namespace) in found
    finally:
        for key in client.scan_iter(match=f"{namespace}*", count=1000):
            client.delete(key)


def test_limits_have_no_defaults_of_their_own() -> None:
    """Every value comes from the settings (DISPATCH_GATEWAY_PER_SECOND and the rest)."""
    with pytest.raises(TypeError):
        Limits()  # type: ignore[call-arg]


def test_the_worker_limiter_follows_the_settings(client: redis.Redis, names: tuple[str, str]) -> None:
    from dispatcher.domain.settings import load_settings
    from workers.runtime import _limiter

    gateway, campaign = names
    settings = load_settings(
        broker_url="redis://127.0.0.1:6379/0",
        gateway_per_second=3,
        gateway_in_flight=1,
        campaign_per_minute=7,
        limit_max_wait_seconds=0.2,
        lease_seconds=7.0,
    )
    holder, waiter = _limiter(settings), _limiter(settings)
    assert isinstance(holder, RedisLimiter)
    assert holder.limits == Limits(
        gateway_per_second=3, gateway_in_flight=1, campaign_per_minute=7, max_wait=0.2, slot_ttl=7.0
    )  # a slot lives as long as the lease: renewed with it, freed with it
    with holder.sending(gateway, campaign=campaign):
        assert 0 < client.pttl(keys.gateway_slots(gateway)) <= 14_000  # twice the slot ttl, in ms
        with pytest.raises(LimitTimeout, match="in flight"), waiter.sending(gateway, campaign=campaign):
            pass  # one call in flight already: the second waits 0.2 s, then gives up


def test_each_gateway_is_held_to_its_own_rate(client: redis.Redis, names: tuple[str, str]) -> None:
    """Two gateways sending at once, one allowed 2 a second, the other 5: counted per one-second window,
    neither goes over its own rate, and the faster one does reach 5 (it is not held to the other's 2)."""
    gateway, campaign = names
    slow, fast = f"{gateway}-slow", f"{gateway}-fast"
    shared = limits(gateways={slow: GatewayRate(per_second=2, in_flight=100), fast: GatewayRate(5, 100)})
    admitted: dict[str, list[int]] = {slow: [], fast: []}
    errors: list[BaseException] = []

    def sender(name: str, calls: int) -> None:
        limiter = RedisLimiter(client, shared)  # one limiter per "worker process"
        try:
            for _ in range(calls):
                with limiter.sending(name, campaign=campaign):
                    admitted[name].append(int(time.time()))
        except BaseException as err:  # surfaced below, never lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=sender, args=(slow, 6)), threading.Thread(target=sender, args=(fast, 12))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert errors == []
    per_window = {name: Counter(windows) for name, windows in admitted.items()}
    assert sum(per_window[slow].values()) == 6 and sum(per_window[fast].values()) == 12
    assert max(per_window[slow].values()) == 2, per_window  # 6 calls need 3 windows at least
    assert max(per_window[fast].values()) == 5, per_window  # 12 calls fill a whole window between two others


def test_a_gateway_without_limits_of_its_own_has_the_common_ones() -> None:
    shared = limits(gateway_per_second=7, gateway_in_flight=3, gateways={"telnyx": GatewayRate(1, 1)})
    assert shared.of("telnyx") == GatewayRate(per_second=1, in_flight=1)
    assert shared.of("another") == GatewayRate(per_second=7, in_flight=3)


def test_an_override_from_the_environment_reaches_the_limiter(
    client: redis.Redis, names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dispatcher.domain.settings import load_settings
    from workers.gateways.registry import build_gateway, env_prefix
    from workers.runtime import _limiter

    gateway, campaign = names
    monkeypatch.setenv("DISPATCH_EMAIL_GATEWAY", gateway)
    monkeypatch.setenv(f"{env_prefix(gateway)}PROVIDER", "smtp")
    monkeypatch.setenv(f"{env_prefix(gateway)}HOST", "127.0.0.1")
    monkeypatch.setenv("DISPATCH_GATEWAY_LIMITS", f"{gateway}=3/s:1")
    settings = load_settings(broker_url="redis://127.0.0.1:6379/0", limit_max_wait_seconds=0.2)
    relay = build_gateway(gateway)
    holder, waiter = _limiter(settings, [relay]), _limiter(settings, [relay])
    assert isinstance(holder, RedisLimiter) and isinstance(waiter, RedisLimiter)
    assert holder.limits.of(gateway) == GatewayRate(per_second=3, in_flight=1)  # not smtp's 1,000/s, 10
    with (
        holder.sending(gateway, campaign=campaign),
        pytest.raises(LimitTimeout, match="in flight"),
        waiter.sending(gateway, campaign=campaign),
    ):
        pass  # one call in flight already: the second waits 0.2 s, then gives up


def test_documented_defaults_unless_the_operator_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway's own limits (SMTP: 1,000/s, 10 in flight) unless DISPATCH_GATEWAY_PER_SECOND /
    DISPATCH_GATEWAY_IN_FLIGHT set every gateway's; DISPATCH_GATEWAY_LIMITS wins for the gateways it names."""
    from dispatcher.domain.settings import load_settings
    from workers.gateways.registry import build_gateway
    from workers.runtime import shared_limits

    for name in ("smtp", "relay"):
        monkeypatch.setenv(f"DISPATCH_{name.upper()}_PROVIDER", "smtp")
        monkeypatch.setenv(f"DISPATCH_{name.upper()}_HOST", "127.0.0.1")
    relays = [build_gateway("smtp"), build_gateway("relay")]
    slots = {"email_gateway": "smtp", "copies_gateway": "relay"}

    documented = shared_limits(load_settings(**slots), relays)
    assert documented.of("smtp") == documented.of("relay") == GatewayRate(per_second=1000, in_flight=10)

    every = shared_limits(load_settings(**slots, gateway_per_second=10), relays)
    assert every.of("smtp") == GatewayRate(per_second=10, in_flight=10)  # as before for the rate

    named = shared_limits(
        load_settings(**slots, gateway_per_second=10, gateway_in_flight=4, gateway_limits="relay=40/s"), relays
    )
    assert named.of("smtp") == GatewayRate(per_second=10, in_flight=4)
    assert named.of("relay") == GatewayRate(per_second=40, in_flight=4)  # its rate, the common calls in flight


def test_a_batch_takes_the_rate_in_tokens_granting_what_the_second_has_left(
    client: redis.Redis, names: tuple[str, str]
) -> None:
    gateway, _ = names
    limiter = RedisLimiter(client, limits(gateway_per_second=5))
    second = keys.gateway_rate(gateway, 0)  # one window, as the script sees it: no clock involved
    assert [int(limiter._take(keys=[second], args=[wanted, 5, 2])) for wanted in (3, 3, 1)] == [3, 2, 0]
    assert 0 < int(client.ttl(second)) <= 2  # the window's counter expires by itself


def test_a_batch_holds_one_slot_in_flight_and_no_campaign_rate(client: redis.Redis, names: tuple[str, str]) -> None:
    gateway, campaign = names
    limiter = RedisLimiter(client, limits(gateway_in_flight=1, campaign_per_minute=1, max_wait=0.2))
    with limiter.batch(gateway) as tokens:
        assert tokens.take(4) >= 1  # the campaign's rate (1 a minute) is a letter's, not a copy's
        with pytest.raises(LimitTimeout, match="in flight"), limiter.sending(gateway, campaign=campaign):
            pass  # the batch holds the gateway's only slot
    with limiter.sending(gateway, campaign=None):
        pass  # given back; a copy sent alone counts against no campaign either
