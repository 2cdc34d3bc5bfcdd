"""What the storage tests build alike: the service roles' pools, a plain recall query."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from memory_service.domain.models import RecallQuery, Weights
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


def recall_query(user: uuid.UUID, weights: Weights, **fields: Any) -> RecallQuery:
    """A recall of `user`'s memories with no query text and no filters, but `fields`."""
    no_filters = RecallQuery(
        user_id=user,
        query="",
        assistant_profile_id=None,
        categories=[],
        tags=[],
        match_all_tags=False,
        context=None,
        min_importance=0.0,
        created_from=None,
        created_before=None,
        limit=10,
        weights=weights,
    )
    return replace(no_filters, **fields)
