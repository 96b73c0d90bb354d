"""Prefect global concurrency limits the platform relies on (created at set-up, checked at run start).

`concurrency(name)` silently runs unlimited when the limit does not exist, so every caller passes
`strict=True` and the limits are created before any run uses them.
"""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


def ensure_limit(name: str, limit: int) -> int:
    """Create the limit if it is missing; an existing one keeps the value an operator gave it."""
    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(name).limit
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            return limit
        except ObjectAlreadyExists:  # another run created it between our read and create
            return client.read_global_concurrency_limit_by_name(name).limit
