"""Limits shared by every worker, kept in Redis: per gateway (sends per second, calls in flight)
and per campaign (sends per minute).

Per destination limits (one fax call at a time to a number, a gap between faxes) live in the
ledger instead (workers/delivery.py): the ledger knows which faxes are still in progress at the
provider, long after our HTTP call returned.

A worker that hits a limit waits (bounded by ``max_wait``) while it holds its claim; the claim's
lease is far longer than any wait here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import redis

from workers import keys

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


class Limiter(Protocol):
    def sending(self, gateway: str, *, campaign: str) -> AbstractContextManager[None]: ...


class NoLimits:
    """The embedded default: one in-process worker needs no shared limits."""

    @contextmanager
    def sending(self, gateway: str, *, campaign: str) -> Iterator[None]:
        yield


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The shared limits; workers/runtime.py builds them from DISPATCH_GATEWAY_PER_SECOND and the rest."""

    gateway_per_second: int
    gateway_in_flight: int
    campaign_per_minute: int
    max_wait: float  # seconds a send may wait for a limit before LimitTimeout
    slot_ttl: float  # seconds after which a slot held by a killed worker frees itself


class RedisLimiter:
    """Sliding counters and a slot set in Redis; every worker process shares them."""

    def __init__(self, client: redis.Redis, limits: Limits, *, namespace: str = "") -> None:
        self.redis = client
        self.limits = limits
        self.namespace = namespace  # DISPATCH_QUEUE_PREFIX: deployments sharing a Redis keep their own limits
        self._acquire = client.register_script(ACQUIRE_SLOT)

    @contextmanager
    def sending(self, gateway: str, *, campaign: str) -> Iterator[None]:
        gateway, campaign = self.namespace + gateway, self.namespace + campaign
        deadline = time.monotonic() + self.limits.max_wait
        # the slot first, then the rates: a call counted against a second also sends in that second
        token = self._take_slot(gateway, deadline)
        try:
            self._wait_rate(keys.campaign_rate, campaign, 60, self.limits.campaign_per_minute, deadline)
            self._wait_rate(keys.gateway_rate, gateway, 1, self.limits.gateway_per_second, deadline)
            yield
        finally:
            self.redis.zrem(keys.gateway_slots(gateway), token)

    def _wait_rate(self, key_of: object, name: str, window: int, limit: int, deadline: float) -> None:
        while True:
            bucket = int(time.time()) // window
            key = key_of(name, bucket)  # type: ignore[operator]
            count = self.redis.incr(key)
            if count == 1:
                self.redis.expire(key, window * 2)
            if int(count) <= limit:  # type: ignore[arg-type]
                return
            self._sleep_until((bucket + 1) * window - time.time(), deadline, f"rate limit for {name}")

    def _take_slot(self, gateway: str, deadline: float) -> str:
        token = uuid.uuid4().hex
        while True:
            now = time.time()
            taken = self._acquire(
                keys=[keys.gateway_slots(gateway)],
                args=[
                    now,
                    now + self.limits.slot_ttl,
                    self.limits.gateway_in_flight,
                    token,
                    int(self.limits.slot_ttl * 2000),
                ],
            )
            if taken == 1:
                return token
            self._sleep_until(0.05, deadline, f"calls in flight to {gateway}")

    @staticmethod
    def _sleep_until(seconds: float, deadline: float, what: str) -> None:
        if time.monotonic() + max(seconds, 0) > deadline:
            raise LimitTimeout(f"{what} stayed closed too long")
        time.sleep(max(seconds, 0.01))
