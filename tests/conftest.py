from __future__ import annotations

import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        help="rewrite fixtures/**/expected from the current output (review the git diff!)",
    )
    parser.addoption(
        "--slow",
        action="store_true",
        help="property tests: ten times the examples (hypothesis profile 'slow')",
    )


def pytest_configure(config: pytest.Config) -> None:
    # A run started in the background by a shell without job control inherits SIGINT ignored,
    # and so would every moe-migrate the tests start: the Ctrl-C tests need it delivered.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Property tests (tests/test_properties.py): 'ci' by default, 'slow' with --slow.
    from hypothesis import HealthCheck, settings

    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("ci", max_examples=100, derandomize=True, **common)
    settings.register_profile("slow", max_examples=1000, **common)
    settings.load_profile("slow" if config.getoption("--slow") else "ci")


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))


@pytest.fixture(scope="session")
def all_rules() -> list[type]:
    from moe_migrate import rules

    return [rules.load(rule_id) for rule_id in rules.RULE_IDS]
