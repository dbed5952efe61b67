"""Shared test configuration."""

from hypothesis import HealthCheck, settings

# CI runs on 2 cores next to other work: time limits per example would only make tests flaky.
settings.register_profile(
    "wattkeeper", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile("wattkeeper")
