"""Scraping an agent's ``/metrics`` and reading the Prometheus text exposition.

Parsing is prometheus_client's own (:func:`text_string_to_metric_families`), the library the
agent exposes its metrics with, so tests and benchmarks read exactly what Prometheus would.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from harness.net import HOST

Sample = tuple[str, dict[str, str], float]


@dataclass
class MetricsSnapshot:
    """Samples of one scrape of a Prometheus text endpoint."""

    samples: list[Sample] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> MetricsSnapshot:
        return cls(
            [
                (s.name, dict(s.labels), float(s.value))
                for family in text_string_to_metric_families(text)
                for s in family.samples
            ]
        )

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent).

        Counters are exposed as ``<name>_total``; either spelling works.
        """
        names = {name, f"{name}_total"}
        return sum(
            v
            for n, lab, v in self.samples
            if n in names and all(lab.get(k) == x for k, x in labels.items())
        )

    def exact(self, name: str, **labels: str) -> float:
        """The one sample of ``name`` whose labels are exactly ``labels`` (0 when absent).

        ``<name>`` is looked up before ``<name>_total``.
        """
        for candidate in (name, f"{name}_total"):
            for n, lab, v in self.samples:
                if n == candidate and lab == labels:
                    return v
        return 0.0

    def as_dict(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``{(sample name, sorted label pairs): value}``, for lookups by exact label set."""
        return {(n, tuple(sorted(lab.items()))): v for n, lab, v in self.samples}

    def by_label(self, name: str, label: str) -> dict[str, float]:
        names = {name, f"{name}_total"}
        out: dict[str, float] = {}
        for n, lab, v in self.samples:
            if n in names and label in lab:
                out[lab[label]] = out.get(lab[label], 0.0) + v
        return out

    def histogram(self, name: str) -> Histogram:
        buckets: dict[float, float] = {}
        for n, lab, v in self.samples:
            if n == f"{name}_bucket" and "le" in lab:
                le = float(lab["le"])  # "+Inf" parses as inf
                buckets[le] = buckets.get(le, 0.0) + v
        return Histogram(
            sorted(buckets.items()), self.value(f"{name}_count"), self.value(f"{name}_sum")
        )


@dataclass
class Histogram:
    """Cumulative Prometheus buckets; quantiles are bucket upper bounds (conservative)."""

    buckets: list[tuple[float, float]]
    count: float
    sum: float

    def minus(self, before: Histogram) -> Histogram:
        prev = dict(before.buckets)
        return Histogram(
            [(le, c - prev.get(le, 0.0)) for le, c in self.buckets],
            self.count - before.count,
            self.sum - before.sum,
        )

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (None without observations)."""
        if self.count <= 0:
            return None
        rank = q * self.count
        for le, c in self.buckets:
            if c >= rank:
                return le
        return float("inf")

    def max_bound(self) -> float | None:
        """Upper bound of the highest non-empty bucket: 'never above this'."""
        if self.count <= 0:
            return None
        prev = 0.0
        top = None
        for le, c in self.buckets:
            if c > prev:
                top = le
            prev = c
        return top

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


def scrape_url(url: str, timeout: float = 5.0) -> MetricsSnapshot:
    """One scrape of a ``/metrics`` URL."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return MetricsSnapshot.parse(resp.read().decode("utf-8", errors="replace"))


def scrape(port: int, host: str = HOST, timeout: float = 5.0) -> MetricsSnapshot:
    """One scrape of ``http://host:port/metrics``."""
    return scrape_url(f"http://{host}:{port}/metrics", timeout)
