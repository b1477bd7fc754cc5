"""Hypothesis budgets for the security suite: small and derandomised in CI, large on demand.

``HYPOTHESIS_PROFILE=long`` (or ``SESSIONWARE_FUZZ=long``) raises every budget; the profiles are
registered here, not in a conftest, so other suites keep hypothesis's defaults.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "sessionware-ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "sessionware-long",
    max_examples=5000,
    deadline=None,
    stateful_step_count=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

LONG = "long" in (os.environ.get("HYPOTHESIS_PROFILE", ""), os.environ.get("SESSIONWARE_FUZZ", ""))
BUDGET = settings.get_profile("sessionware-long" if LONG else "sessionware-ci")


def budget(examples: int) -> settings:
    """``BUDGET`` with ``examples`` examples in CI (the long profile keeps its own count)."""
    return settings(BUDGET, max_examples=BUDGET.max_examples if LONG else examples)
