import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from engine import load_policies

# CI runs every property with at least 500 examples (issues 2 and 3).
settings.register_profile("ci", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """The trained n-gram model is cached in a directory of the test run's own, never the user's,
    so a run neither depends on nor leaves state (subprocesses inherit the variable)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MSGPOLICY_CACHE_DIR", str(tmp_path_factory.mktemp("model-cache")))
        yield


@pytest.fixture(scope="session")
def policies():
    return load_policies(POLICIES)
