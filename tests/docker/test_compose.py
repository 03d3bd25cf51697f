"""The full-stack compose file, checked without a Docker engine (none runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from core.settings import PROJECT_ROOT, Settings
from ingestion.storage import s3_properties

COMPOSE = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
SECRET_WORDS = re.compile(r"(PASSWORD|SECRET|TOKEN)", re.IGNORECASE)


def _env(service: dict) -> dict[str, str]:  # type: ignore[type-arg]
    env = service.get("environment", {})
    return {k: str(v) for k, v in env.items()} if isinstance(env, dict) else {}


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        one_shot = name.endswith("-init") or "tools" in service.get("profiles", [])
        assert one_shot or "healthcheck" in service, name


def test_dependencies_wait_for_health_or_completion() -> None:
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES, (name, dependency)
            expected = "service_completed_successfully" if dependency.endswith("-init") else "service_healthy"
            assert condition == {"condition": expected}, (name, dependency)
            if expected == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], dependency


def test_ports_are_bound_to_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_no_secret_is_written_in_the_file() -> None:
    for name, service in SERVICES.items():
        for key, value in _env(service).items():
            if SECRET_WORDS.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?Variable not set\}", value), (name, key)
    text = (PROJECT_ROOT / "compose.yaml").read_text()
    for placeholder in ("changethis", "minioadmin"):
        assert placeholder not in text
    example = (PROJECT_ROOT / ".env.example").read_text()
    for variable in set(re.findall(r"\$\{([A-Z_]+):\?", text)):
        assert f"{variable}=" in example, variable


def test_lab_variables_are_settings_fields() -> None:
    fields = set(Settings.model_fields)
    lab_env = {k for service in SERVICES.values() for k in _env(service) if k.startswith("LAB_")}
    assert lab_env, "the stack configures the lab through LAB_* variables"
    unknown = {k for k in lab_env if k.removeprefix("LAB_").lower() not in fields}
    assert not unknown, unknown


def test_full_stack_settings_parse() -> None:
    env = {k.removeprefix("LAB_").lower(): v for k, v in _env(SERVICES["lab"]).items() if k.startswith("LAB_")}
    env = {k: v.replace("${POSTGRES_PASSWORD:?Variable not set}", "pw") for k, v in env.items()}
    env = {k: re.sub(r"\$\{[A-Z_]+:\?Variable not set\}", "real-secret", v) for k, v in env.items()}
    settings = Settings(**env)  # type: ignore[arg-type]
    assert settings.uses_s3 and settings.dbt_target == "postgres"
    assert s3_properties(settings)["s3.endpoint"] == "http://minio:9000"
    assert Path(str(settings.home)) == Path("/data/lab")


def test_the_image_runs_as_a_user_who_is_not_root() -> None:
    dockerfile = (PROJECT_ROOT / "docker" / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1] not in {"root", "0", "0:0"}


def test_the_build_context_leaves_out_secrets_state_and_history() -> None:
    """`COPY . .` must never carry .env, the embedded state or the git history into an image."""
    ignored = {
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".lab/", ".git/", ".venv/"} <= ignored
    assert "!.env.example" in ignored  # the template is harmless and documents the variables
