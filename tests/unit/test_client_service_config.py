"""The client's retry policy: gRPC's service config, one JSON file for every language."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from faraday.memory.v1 import admin_service_pb2, lesson_service_pb2, memory_service_pb2
from faraday_memory_client import ClientConfig

_SERVICES = {
    d.full_name: d
    for module in (memory_service_pb2, lesson_service_pb2, admin_service_pb2)
    for d in module.DESCRIPTOR.services_by_name.values()
}
# Not safe to send twice whatever the request holds (README: "Deadlines and retries").
_NEVER_RETRIED = {
    "faraday.memory.v1.MemoryService/UpdateMemory",
    "faraday.memory.v1.MemoryService/DeleteMemory",
    "faraday.memory.v1.MemoryService/RecallMemories",
    "faraday.memory.v1.MemoryService/ImportMemories",
    "faraday.memory.v1.AdminService/DeleteLesson",
    "faraday.memory.v1.AdminService/DeleteUserData",
}


def _shipped() -> dict[str, object]:
    text = (resources.files("faraday_memory_client") / "service_config.json").read_text()
    config: dict[str, object] = json.loads(text)
    return config


def _retried(config: dict[str, object]) -> set[str]:
    return {
        f"{name['service']}/{name['method']}"
        for method_config in config["methodConfig"]  # type: ignore[attr-defined]
        if "retryPolicy" in method_config
        for name in method_config["name"]
    }


def test_every_named_method_exists_and_none_unsafe_is_retried() -> None:
    retried = _retried(_shipped())
    for path in retried:
        service, method = path.split("/")
        assert method in _SERVICES[service].methods_by_name, path
    assert not retried & _NEVER_RETRIED
    every = {f"{s}/{m}" for s, d in _SERVICES.items() for m in d.methods_by_name}
    assert retried | _NEVER_RETRIED == every  # a new RPC needs a decision


def test_overrides_change_the_policy_and_one_attempt_removes_it() -> None:
    config = ClientConfig(max_attempts=4, initial_backoff_seconds=0.2, max_backoff_seconds=2.5)
    policy = config.service_config()["methodConfig"][0]["retryPolicy"]
    assert (policy["maxAttempts"], policy["initialBackoff"], policy["maxBackoff"]) == (
        4,
        "0.2s",
        "2.5s",
    )
    assert ClientConfig().service_config() == _shipped()
    assert _retried(ClientConfig(max_attempts=1).service_config()) == set()
    options = dict(ClientConfig().channel_options(retries=False))
    assert options["grpc.enable_retries"] == 0
    assert json.loads(options["grpc.service_config"]) == _shipped()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": 6},
        {"initial_backoff_seconds": 2.0},
        {"default_timeout_seconds": 0},
        {"load_balancing": "least_request"},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ClientConfig(**kwargs)  # type: ignore[arg-type]


def test_round_robin_goes_into_the_service_config() -> None:
    config = ClientConfig(load_balancing="round_robin").service_config()
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["methodConfig"] == _shipped()["methodConfig"]
    assert "loadBalancingConfig" not in ClientConfig().service_config()
