"""What the storage tests build alike: the service roles' pools."""

from __future__ import annotations

from memory_service.storage import migrate
from memory_service.storage.database import Database, PoolSettings


def service_database(owner_url: str, size: int = 2) -> Database:
    """A Database connecting as the service roles (faraday_app, faraday_platform); not open."""
    return Database(
        PoolSettings(
            url=migrate.app_role_url(owner_url),
            platform_url=migrate.platform_role_url(owner_url),
            size=size,
            user_size=1,
            max_overflow=0,
        )
    )
