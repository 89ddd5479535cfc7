"""Limits shared by every worker, kept in Redis: per gateway (sends per second, calls in flight: each
gateway's own, from its provider's documentation or DISPATCH_GATEWAY_LIMITS, see workers/runtime.py)
and per campaign for letters to officials (sends per minute, DISPATCH_CAMPAIGN_PER_MINUTE: it spreads an
official's letters; supporter copies, one per supporter, are held by their gateway's limits alone).

A batch of sends (the copies' path, workers/batch.py) holds one in-flight slot for the batch, since its
sends go one after another over one connection, and takes the gateway's rate in tokens: ``take(n)``
grants up to ``n`` sends in the current second with one script call (INCRBY), instead of a few commands
per send.

Per destination limits (one fax call at a time to a number, a gap between faxes) live in the
ledger instead (workers/delivery.py): the ledger knows which faxes are still in progress at the
provider, long after our HTTP call returned.

A worker that hits a limit waits (bounded by ``max_wait``) while it holds its claim; the settings keep
that wait below the claim's lease. An in-flight slot lives as long as the lease (``slot_ttl``) and is
renewed with it by the worker's heartbeat (workers/lease.py): the slot of a killed worker frees itself
when its lease runs out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import redis

from workers import keys

RENEW_SLOT = """
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] the gateway's counter for this second; ARGV: tokens wanted, the limit, the counter's TTL.
# Returns the tokens granted now: as many as the second has left, at most those wanted (0: none left).
TAKE_TOKENS = """
local wanted = tonumber(ARGV[1])
local count = redis.call('INCRBY', KEYS[1], wanted)
if count == wanted then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
local before = count - wanted
local limit = tonumber(ARGV[2])
if before >= limit then
  return 0
end
return math.min(wanted, limit - before)
"""

ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""


class LimitTimeout(RuntimeError):
    """A limit stayed closed longer than max_wait."""


class Slot(Protocol):
    def renew(self) -> bool:
        """Keep the slot another ``slot_ttl``; False when it expired and was taken (it is not taken back)."""


class Tokens(Slot, Protocol):
    """A batch's in-flight slot and its share of the gateway's send rate."""

    def take(self, wanted: int) -> int:
        """Wait (up to max_wait) until the gateway may send, then grant 1 to ``wanted`` sends now;
        LimitTimeout when it stays closed."""


class Limiter(Protocol):
    def sending(self, gateway: str, *, campaign: str | None) -> AbstractContextManager[Slot]:
        """One send: an in-flight slot, the gateway's rate and, for a letter (``campaign`` given), the
        campaign's rate."""

    def batch(self, gateway: str) -> AbstractContextManager[Tokens]:
        """A batch of sends one after another: one in-flight slot, the gateway's rate by ``take``."""


class NoSlot:
    """The slot of a limiter without slots: always held."""

    def renew(self) -> bool:
        return True


class NoTokens(NoSlot):
    """The tokens of a limiter without limits: every send granted."""

    def take(self, wanted: int) -> int:
        return wanted


class NoLimits:
    """The embedded default: one in-process worker needs no shared limits."""

    @contextmanager
    def sending(self, gateway: str, *, campaign: str | None) -> Iterator[Slot]:
        yield NoSlot()

    @contextmanager
    def batch(self, gateway: str) -> Iterator[Tokens]:
        yield NoTokens()


@dataclass(frozen=True)
class GatewayRate:
    """One gateway's own limits: sends per second and calls in flight, all workers together."""

    per_second: int
    in_flight: int


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The shared limits; workers/runtime.py builds them from each gateway's documented defaults,
    DISPATCH_GATEWAY_LIMITS and the rest."""

    gateway_per_second: int  # a gateway not in ``gateways``
    gateway_in_flight: int
    campaign_per_minute: int  # letters to officials only: copies are held by their gateway's limits
    max_wait: float  # seconds a send may wait for a limit before LimitTimeout
    slot_ttl: float  # seconds a slot lives unless renewed: the claim's lease (DISPATCH_LEASE_SECONDS)
    gateways: Mapping[str, GatewayRate] = field(default_factory=dict)  # by gateway name

    def of(self, gateway: str) -> GatewayRate:
        """The limits of gateway ``gateway``: its own, else the ones above."""
        return self.gateways.get(gateway) or GatewayRate(self.gateway_per_second, self.gateway_in_flight)


@dataclass(frozen=True)
class RedisSlot:
    """One in-flight slot: a member of the gateway's sorted set, scored with its expiry time."""

    limiter: RedisLimiter
    key: str
    token: str

    def renew(self) -> bool:
        ttl = self.limiter.limits.slot_ttl
        kept = self.limiter._renew(keys=[self.key], args=[time.time() + ttl, self.token, int(ttl * 2000)])
        return bool(kept == 1)


@dataclass(frozen=True)
class RedisTokens:
    """A batch's slot (renewed with the batch's lease) and its tokens of the gateway's rate."""

    slot: RedisSlot
    gateway: str
    per_second: int

    def renew(self) -> bool:
        return self.slot.renew()

    def take(self, wanted: int) -> int:
        limiter = self.slot.limiter
        deadline = time.monotonic() + limiter.limits.max_wait
        while True:
            bucket = int(time.time())
            key = keys.gateway_rate(self.gateway, bucket, namespace=limiter.namespace)
            granted = int(limiter._take(keys=[key], args=[max(wanted, 1), self.per_second, 2]))
            if granted > 0:
                return granted
            limiter._sleep_until(bucket + 1 - time.time(), deadline, f"rate limit for {self.gateway}")


class RedisLimiter:
    """Sliding counters and a slot set in Redis; every worker process shares them."""

    def __init__(self, client: redis.Redis, limits: Limits, *, namespace: str = "") -> None:
        self.redis = client
        self.limits = limits
        self.namespace = namespace  # DISPATCH_QUEUE_PREFIX: deployments sharing a Redis keep their own limits
        self._acquire = client.register_script(ACQUIRE_SLOT)
        self._renew = client.register_script(RENEW_SLOT)
        self._take = client.register_script(TAKE_TOKENS)

    @contextmanager
    def sending(self, gateway: str, *, campaign: str | None) -> Iterator[Slot]:
        deadline = time.monotonic() + self.limits.max_wait
        rate = self.limits.of(gateway)
        # the slot first, then the rates: a call counted against a second also sends in that second
        slot = self._take_slot(gateway, rate.in_flight, deadline)
        try:
            if campaign is not None:
                self._wait_rate(keys.campaign_rate, campaign, 60, self.limits.campaign_per_minute, deadline)
            self._wait_rate(keys.gateway_rate, gateway, 1, rate.per_second, deadline)
            yield slot
        finally:
            self.redis.zrem(slot.key, slot.token)

    @contextmanager
    def batch(self, gateway: str) -> Iterator[Tokens]:
        rate = self.limits.of(gateway)
        slot = self._take_slot(gateway, rate.in_flight, time.monotonic() + self.limits.max_wait)
        try:
            yield RedisTokens(slot, gateway, rate.per_second)
        finally:
            self.redis.zrem(slot.key, slot.token)

    def _wait_rate(self, key_of: Callable[..., str], name: str, window: int, limit: int, deadline: float) -> None:
        while True:
            bucket = int(time.time()) // window
            key = key_of(name, bucket, namespace=self.namespace)
            count = self.redis.incr(key)
            if count == 1:
                self.redis.expire(key, window * 2)
            if int(count) <= limit:  # type: ignore[arg-type]
                return
            self._sleep_until((bucket + 1) * window - time.time(), deadline, f"rate limit for {name}")

    def _take_slot(self, gateway: str, in_flight: int, deadline: float) -> RedisSlot:
        slot = RedisSlot(self, keys.gateway_slots(gateway, namespace=self.namespace), uuid.uuid4().hex)
        while True:
            now = time.time()
            taken = self._acquire(
                keys=[slot.key],
                args=[
                    now,
                    now + self.limits.slot_ttl,
                    in_flight,
                    slot.token,
                    int(self.limits.slot_ttl * 2000),
                ],
            )
            if taken == 1:
                return slot
            self._sleep_until(0.05, deadline, f"calls in flight to {gateway}")

    @staticmethod
    def _sleep_until(seconds: float, deadline: float, what: str) -> None:
        if time.monotonic() + max(seconds, 0) > deadline:
            raise LimitTimeout(f"{what} stayed closed too long")
        time.sleep(max(seconds, 0.01))
