"""Pacing: adaptive round-trip timeouts and packets-per-second caps.

* :class:`RttEstimator` keeps nmap's/TCP's smoothed RTT and variance per host
  and turns them into a probe timeout ``srtt + 4 * rttvar`` clamped to the
  configured bounds (RFC 6298's estimator).
* :class:`TokenBucket` caps a rate; the engine keeps one global bucket and one
  per host.  Both take an injected clock so tests run on fake time.

Neither sleeps itself: callers ask how long to wait and fold that into their
poll timeout, which is where the scan sleeps (and checks its stop event).  A
caller that found the bucket empty should wait :meth:`TokenBucket.batch_wait`
(until a burst's worth of tokens is back, at most 10 ms at high rates), not
:meth:`TokenBucket.wait_time`: waking once per token at 1000 probes per second
costs as much CPU as the probes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from portolan.engine import plans

Clock = Callable[[], float]
_ONE = 1.0 - 1e-9  # a whole token, tolerant of float rounding in clock arithmetic


class RttEstimator:
    """Smoothed RTT and variance of one host, turned into a clamped probe timeout."""

    __slots__ = ("current", "initial", "maximum", "minimum", "rttvar", "samples", "srtt")

    def __init__(self, *, initial: float, minimum: float, maximum: float) -> None:
        self.initial = initial
        self.minimum = minimum
        self.maximum = maximum
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0
        self.current = min(max(initial, minimum), maximum)

    def observe(self, rtt: float) -> None:
        """Fold one measured round trip (seconds) into the estimate."""
        rtt = max(rtt, 0.0)
        self.samples += 1
        srtt = self.srtt
        if srtt is None:
            srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(srtt - rtt)
            srtt = 0.875 * srtt + 0.125 * rtt
        self.srtt = srtt
        self.current = min(max(srtt + 4 * self.rttvar, self.minimum), self.maximum)

    def timeout(self) -> float:
        """The current probe timeout in seconds (kept up to date by :meth:`observe`)."""
        return self.current


def estimator(timing: plans.Timing) -> RttEstimator:
    """An RTT estimator bounded by a spec's timing (milliseconds there, seconds here)."""
    return RttEstimator(
        initial=timing.initial_rtt_timeout_ms / 1000,
        minimum=timing.min_rtt_timeout_ms / 1000,
        maximum=timing.max_rtt_timeout_ms / 1000,
    )


class TokenBucket:
    """A rate cap: ``rate`` tokens per second with a burst of ``burst`` tokens."""

    __slots__ = ("burst", "clock", "rate", "stamp", "tokens")

    def __init__(
        self, rate: float, clock: Clock, *, burst: float | None = None, start_empty: bool = False
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 100)
        self.clock = clock
        self.tokens = 0.0 if start_empty else self.burst
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> bool:
        """Take one token if there is one."""
        self._refill()
        if self.tokens >= _ONE:
            self.tokens -= 1.0
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill()
        if self.tokens >= _ONE:
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def batch_wait(self) -> float:
        """Seconds until the bucket is full again (0 if it is): one wake-up per burst, not per token."""
        self._refill()
        return max(0.0, (self.burst - self.tokens) / self.rate)
