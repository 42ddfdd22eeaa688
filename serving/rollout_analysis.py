"""Judge a challenger from live signals: how it runs (errors, p99 latency against the champion) and, on paired
shadow requests, what it says about the same applicants compared with the champion.

The score comparison goes beyond error-rate-and-latency guardrails (SageMaker, Argo Rollouts, KServe): a model fed a
field in another unit answers every request quickly and without error, yet scores applicants differently. On the
pairs: the PSI of the challenger's scores against the champion's (ten bins at the champion's deciles), the share of
decisions flipped (the two labels differ), the mean absolute probability difference, and each model's CBPE ROC-AUC
(tfx_modules/evaluation/cbpe.py). The limits are settings (common/config/serving.py, rationale in docs/rollouts.md).
Standard library only: the gateway runs from either environment.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from common.config import Settings
from tfx_modules.evaluation.cbpe import expected_auc

WINDOW = 20_000  # latencies and pairs kept per stage (a stage needs hundreds)
# A p99 over fewer answers is their slowest one or two: one pause of a busy host then rolls back a healthy model (CI,
# 2 cores: a challenger's 62 answers after a gateway restart, p99 69 ms against the champion's 12.8 ms). Shadow's 300
# mirrored calls (the default) are enough; a canary step is judged on latency once its share reaches this many.
LATENCY_ANSWERS = 200
PSI_BINS = 10
PSI_FLOOR = 1e-4  # share given to an empty bin, so one empty bin is a large PSI, not an infinite one


@dataclass(frozen=True)
class Limits:
    """The breach limits of a rollout (settings rollout_max_*)."""

    max_psi: float
    max_flip_share: float
    max_mean_abs_diff: float
    max_auc_drop: float
    max_error_ratio: float
    min_errors: int
    max_latency_ratio: float
    min_latency_ms: float
    min_pairs: int

    @classmethod
    def of(cls, s: Settings) -> Limits:
        return cls(
            s.rollout_max_psi,
            s.rollout_max_flip_share,
            s.rollout_max_mean_abs_diff,
            s.rollout_max_auc_drop,
            s.rollout_max_error_ratio,
            s.rollout_min_errors,
            s.rollout_max_latency_ratio,
            s.rollout_min_latency_ms,
            s.rollout_min_pairs,
        )


@dataclass
class RoleStats:
    """One role's requests, errors and latencies (ms) within a stage."""

    requests: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def p99(self) -> float | None:
        return percentile(list(self.latencies), 0.99)


@dataclass
class StageStats:
    """What the gateway saw in one stage (or canary step); thread-safe, the request path only appends."""

    champion: RoleStats = field(default_factory=RoleStats)
    challenger: RoleStats = field(default_factory=RoleStats)
    pairs: deque[tuple[float, float, int, int]] = field(default_factory=lambda: deque(maxlen=WINDOW))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, role: str, latency_ms: float, ok: bool) -> None:
        with self._lock:
            stats = self.champion if role == "champion" else self.challenger
            stats.requests += 1
            stats.errors += not ok
            if ok:
                stats.latencies.append(latency_ms)

    def paired(self, champion: tuple[float, int], challenger: tuple[float, int]) -> None:
        """One applicant's (probability, label) from each model."""
        with self._lock:
            self.pairs.append((champion[0], challenger[0], champion[1], challenger[1]))

    def numbers(self) -> dict[str, Any]:
        """Every figure of the stage (None where there is nothing to compute it from)."""
        with self._lock:
            pairs = list(self.pairs)
            roles = {
                r: (s.requests, s.errors, s.p99())
                for r, s in (("champion", self.champion), ("challenger", self.challenger))
            }
        out: dict[str, Any] = {}
        for role, (requests, errors, p99) in roles.items():
            out[role] = {
                "requests": requests,
                "errors": errors,
                "error_ratio": errors / requests if requests else None,
                "p99_ms": p99,
            }
        out["pairs"] = len(pairs)
        out.update(compare_scores(pairs))
        return out


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def psi(expected: list[float], actual: list[float], bins: int = PSI_BINS) -> float:
    """Population stability index of `actual` against `expected`, binned at `expected`'s quantiles."""
    ordered = sorted(expected)
    edges = sorted({ordered[len(ordered) * i // bins] for i in range(1, bins)})

    def shares(values: list[float]) -> list[float]:
        counts = [0] * (len(edges) + 1)
        for v in values:
            counts[bisect.bisect_right(edges, v)] += 1
        return [max(c / len(values), PSI_FLOOR) for c in counts]

    return sum((a - e) * math.log(a / e) for e, a in zip(shares(expected), shares(actual), strict=True))


def compare_scores(pairs: list[tuple[float, float, int, int]]) -> dict[str, float | None]:
    """PSI, flipped share, mean absolute difference and both CBPE AUCs of (p_champion, p_challenger, labels) pairs."""
    if not pairs:
        return {"psi": None, "flip_share": None, "mean_abs_diff": None, "auc_champion": None, "auc_challenger": None}
    champion = [p[0] for p in pairs]
    challenger = [p[1] for p in pairs]
    return {
        "psi": psi(champion, challenger),
        "flip_share": sum(p[2] != p[3] for p in pairs) / len(pairs),
        "mean_abs_diff": sum(abs(a - b) for a, b in zip(champion, challenger, strict=True)) / len(pairs),
        "auc_champion": expected_auc(champion),
        "auc_challenger": expected_auc(challenger),
    }


def breaches(numbers: dict[str, Any], limits: Limits) -> list[str]:
    """Each limit the stage's numbers exceed, as a line a person can read; [] when the challenger is fine so far."""
    found = []
    champ, chal = numbers["champion"], numbers["challenger"]
    excess = (chal["error_ratio"] or 0.0) - (champ["error_ratio"] or 0.0)
    if chal["errors"] >= limits.min_errors and excess > limits.max_error_ratio:
        found.append(
            f"error ratio {chal['error_ratio']:.3f} ({chal['errors']} of {chal['requests']}) against the champion's "
            f"{champ['error_ratio'] or 0.0:.3f} (limit +{limits.max_error_ratio})"
        )
    if chal["p99_ms"] is not None and champ["p99_ms"] is not None and enough_for_p99(chal, champ):
        slower = chal["p99_ms"] - champ["p99_ms"]
        if chal["p99_ms"] > limits.max_latency_ratio * champ["p99_ms"] and slower > limits.min_latency_ms:
            found.append(
                f"p99 latency {chal['p99_ms']:.1f} ms against the champion's {champ['p99_ms']:.1f} ms "
                f"(limit {limits.max_latency_ratio}x and +{limits.min_latency_ms:.0f} ms)"
            )
    if numbers["pairs"] < limits.min_pairs:
        return found
    checks = (
        ("psi", "PSI of scores", limits.max_psi),
        ("flip_share", "decisions flipped", limits.max_flip_share),
        ("mean_abs_diff", "mean |probability difference|", limits.max_mean_abs_diff),
    )
    for key, what, limit in checks:
        if numbers[key] > limit:
            found.append(f"{what} {numbers[key]:.3f} over {numbers['pairs']} pairs (limit {limit})")
    auc_champion, auc_challenger = numbers["auc_champion"], numbers["auc_challenger"]
    if auc_champion is not None and auc_challenger is not None and auc_champion - auc_challenger > limits.max_auc_drop:
        found.append(
            f"CBPE ROC-AUC {auc_challenger:.3f} against the champion's {auc_champion:.3f} "
            f"(limit -{limits.max_auc_drop})"
        )
    return found


def enough_for_p99(challenger: dict[str, Any], champion: dict[str, Any]) -> bool:
    """LATENCY_ANSWERS answered requests on both sides, so that each p99 means something."""
    return all(role["requests"] - role["errors"] >= LATENCY_ANSWERS for role in (challenger, champion))


def summary(numbers: dict[str, Any]) -> str:
    """The deciding numbers in one line, for the rollout's last line and its alert."""
    parts = []
    chal = numbers["challenger"]
    parts.append(f"challenger {chal['requests']} requests, {chal['errors']} errors")
    if chal["p99_ms"] is not None and numbers["champion"]["p99_ms"] is not None:
        parts.append(f"p99 {chal['p99_ms']:.1f} ms vs {numbers['champion']['p99_ms']:.1f} ms")
    if numbers["pairs"]:
        parts.append(
            f"{numbers['pairs']} pairs: PSI {numbers['psi']:.3f}, flipped {numbers['flip_share']:.3f}, "
            f"mean |diff| {numbers['mean_abs_diff']:.3f}"
        )
        if numbers["auc_champion"] is not None and numbers["auc_challenger"] is not None:
            parts.append(f"CBPE AUC {numbers['auc_challenger']:.3f} vs {numbers['auc_champion']:.3f}")
    return "; ".join(parts)
