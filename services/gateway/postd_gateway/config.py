"""Gateway settings; the only gateway module that reads the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from postd_common.config import EnvReader
from postd_common.settings import GRPC_PORTS, CommonSettings, load_common, service_addr

BACKENDS = tuple(GRPC_PORTS)


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    http_host: str
    http_port: int
    public_url: str
    backends: Mapping[str, str]
    max_body_bytes: int

    @property
    def secure_cookies(self) -> bool:
        return not self.common.is_development


def load_settings(environ: Mapping[str, str]) -> Settings:
    env = EnvReader(environ)
    common = load_common(env, "gateway")
    port = env.integer("POSTD_GATEWAY_PORT", 8080, minimum=1)
    settings = Settings(
        common=common,
        http_host=env.text("POSTD_GATEWAY_HOST", "127.0.0.1"),
        http_port=port,
        public_url=env.text("POSTD_PUBLIC_URL", f"http://127.0.0.1:{port}").rstrip("/"),
        backends={name: service_addr(env, name) for name in BACKENDS},
        max_body_bytes=env.integer("POSTD_GATEWAY_MAX_BODY_BYTES", 1_048_576, minimum=1024),
    )
    env.check()
    return settings
