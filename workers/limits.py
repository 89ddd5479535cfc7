"""Limits shared by every worker, kept in Redis: per gateway (sends per second, calls in flight: each
gateway's own, from its provider's documentation or DISPATCH_GATEWAY_LIMITS, see workers/runtime.py)
and per campaign (sends per minute).

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


class Limiter(Protocol):
    def sending(self, gateway: str, *, campaign: str) -> AbstractContextManager[Slot]: ...


class NoSlot:
    """The slot of a limiter without slots: always held."""

    def renew(self) -> bool:
        return True


class NoLimits:
    """The embedded default: one in-process worker needs no shared limits."""

    @contextmanager
    def sending(self, gateway: str, *, campaign: str) -> Iterator[Slot]:
        yield NoSlot()


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
    campaign_per_minute: int
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


class RedisLimiter:
    """Sliding counters and a slot set in Redis; every worker process shares them."""

    def __init__(self, client: redis.Redis, limits: Limits, *, namespace: str = "") -> None:
        self.redis = client
        self.limits = limits
        self.namespace = namespace  # DISPATCH_QUEUE_PREFIX: deployments sharing a Redis keep their own limits
        self._acquire = client.register_script(ACQUIRE_SLOT)
        self._renew = client.register_script(RENEW_SLOT)

    @contextmanager
    def sending(self, gateway: str, *, campaign: str) -> Iterator[Slot]:
        deadline = time.monotonic() + self.limits.max_wait
        rate = self.limits.of(gateway)
        # the slot first, then the rates: a call counted against a second also sends in that second
        slot = self._take_slot(gateway, rate.in_flight, deadline)
        try:
            self._wait_rate(keys.campaign_rate, campaign, 60, self.limits.campaign_per_minute, deadline)
            self._wait_rate(keys.gateway_rate, gateway, 1, rate.per_second, deadline)
            yield slot
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
