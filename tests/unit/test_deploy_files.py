"""compose.yaml and the Dockerfile: checks that need no Docker daemon."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml

from memory_service.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _setting_names() -> set[str]:
    fields = getattr(Settings, "model_fields", None)  # should Settings become pydantic's
    names = fields if fields is not None else [f.name for f in dataclasses.fields(Settings)]
    return {f"FARADAY_{name.upper()}" for name in names}


SETTINGS = _setting_names()


def _compose() -> dict[str, dict[str, dict[str, object]]]:
    compose: dict[str, dict[str, dict[str, object]]] = yaml.safe_load(
        (ROOT / "compose.yaml").read_text()
    )
    return compose


def test_compose_sets_only_settings_the_service_reads() -> None:
    """A misspelt FARADAY_ variable is silently ignored by the server."""
    services = _compose()["services"]
    named = {
        name
        for service in services.values()
        for name in dict(service.get("environment") or {})  # type: ignore[call-overload]
        if name.startswith("FARADAY_")
    }
    assert named and named <= SETTINGS, named - SETTINGS


def test_compose_starts_the_service_after_healthy_dependencies() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dependency, condition in dict(service.get("depends_on") or {}).items():  # type: ignore[call-overload]
            assert dependency in services, (name, dependency)
            wanted = "service_healthy" if "healthcheck" in services[dependency] else None
            if wanted:
                assert condition == {"condition": wanted}, (name, dependency)
            else:  # a one-shot step
                assert condition == {"condition": "service_completed_successfully"}
    service = services["memory-service"]
    assert service["healthcheck"]["test"] == ["CMD", "memory-service", "healthcheck"]  # type: ignore[index]


def test_the_image_checks_health_through_the_settings_not_a_fixed_port() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    healthcheck = re.search(r"^HEALTHCHECK .*\n(?:\s+.*\n)*", dockerfile, re.MULTILINE)
    assert healthcheck and '["memory-service", "healthcheck"]' in healthcheck.group()
    assert "--require-hashes -r requirements/server.txt" in dockerfile
