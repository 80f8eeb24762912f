"""Settings of the local stack (``make up``); the only devstack module reading the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from postd_common.config import EnvReader

# Base ports; POSTD_PORT_OFFSET shifts every one of them so two stacks run side by side.
BASE_PORTS: Mapping[str, int] = {
    "gateway": 8080,
    "sandbox": 8090,
    "postgres": 55432,
    "broker": 19092,
    "vault": 50051,
    "connectors": 50052,
    "publisher": 50053,
    "webhook-router": 50054,
    "health": 50055,
    "metrics-gateway": 9100,
    "metrics-vault": 9101,
    "metrics-connectors": 9102,
    "metrics-publisher": 9103,
    "metrics-webhook-router": 9104,
    "metrics-health": 9105,
}


@dataclass(frozen=True)
class StackSettings:
    state: Path
    offset: int
    database_url: str | None
    kafka_bootstrap: str | None
    log_level: str
    passthrough: Mapping[str, str]

    def port(self, name: str) -> int:
        return BASE_PORTS[name] + self.offset


def load(state: Path, environ: Mapping[str, str] | None = None) -> StackSettings:
    env_map = dict(os.environ if environ is None else environ)
    env = EnvReader(env_map)
    settings = StackSettings(
        state=state.resolve(),
        offset=env.integer("POSTD_PORT_OFFSET", 0, minimum=0),
        database_url=env.optional("DATABASE_URL"),
        kafka_bootstrap=env.optional("KAFKA_BOOTSTRAP"),
        log_level=env.choice("POSTD_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        # Every POSTD_* / OTEL_* variable the user set reaches the services unchanged.
        passthrough={
            k: v
            for k, v in env_map.items()
            if k.startswith(("POSTD_", "OTEL_")) or k in ("PATH", "HOME", "LANG")
        },
    )
    env.check()
    return settings
