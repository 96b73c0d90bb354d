"""Flow tests run against one real Prefect server for the whole session (SQLite in a temporary folder)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL

    # The server takes 15-45 s to start on two cores; a slow machine may need more.
    with prefect_test_harness(server_startup_timeout=180):
        from blocks.rate_card import RateCard

        RateCard().save("default", overwrite=True)  # as `gpuflows up` leaves it: flows price with it
        yield str(PREFECT_API_URL.value())
