from pathlib import Path

import pytest

from postd_common.config import ConfigError, EnvReader
from postd_common.settings import load_common


def test_every_problem_is_reported_at_once() -> None:
    env = EnvReader({"POSTD_LOG_LEVEL": "loud", "POSTD_KAFKA_SESSION_TIMEOUT_MS": "soon"})
    load_common(env, "vault")
    with pytest.raises(ConfigError) as caught:
        env.check()
    message = str(caught.value)
    assert "DATABASE_URL is required" in message
    assert "KAFKA_BOOTSTRAP is required" in message
    assert "POSTD_LOG_LEVEL must be one of debug, info, warning, error; got 'loud'" in message
    assert "POSTD_KAFKA_SESSION_TIMEOUT_MS must be an integer; got 'soon'" in message


def test_valid_environment_parses_into_frozen_settings() -> None:
    env = EnvReader(
        {
            "DATABASE_URL": "postgresql://db/postd",
            "KAFKA_BOOTSTRAP": "127.0.0.1:9092",
            "POSTD_GRPC_LISTEN": "0.0.0.0:6000",
            "POSTD_IDENTITY_TRUST_DIR": "/keys",
        }
    )
    settings = load_common(env, "vault")
    env.check()
    assert settings.grpc_listen == "0.0.0.0:6000"
    assert settings.kafka.bootstrap == "127.0.0.1:9092"
    assert settings.identity.trust_dir == Path("/keys")
    assert settings.metrics_listen == "127.0.0.1:9101"
    with pytest.raises(AttributeError):
        settings.service = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("127.0.0.1:80", True),
        ("svc:65535", True),
        ("nohost", False),
        (":80", False),
        ("h:0", False),
        ("h:99999", False),
        ("h:x", False),
    ],
)
def test_address_validation(value: str, ok: bool) -> None:
    env = EnvReader({"A": value})
    env.address("A", "127.0.0.1:1")
    assert (not env.problems) is ok


def test_flags_minimums_and_lists() -> None:
    env = EnvReader({"F": "yes", "G": "maybe", "N": "3", "L": "a, b,,c"})
    assert env.flag("F", False) is True
    assert env.flag("G", True) is True  # default kept, problem recorded
    assert env.integer("N", 10, minimum=5) == 10
    assert env.items("L") == ("a", "b", "c")
    assert len(env.problems) == 2


def test_kafka_security_settings_for_a_managed_cluster() -> None:
    env = EnvReader(
        {
            "DATABASE_URL": "postgresql://db/postd",
            "KAFKA_BOOTSTRAP": "kafka:9093",
            "POSTD_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "POSTD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "POSTD_KAFKA_SASL_USERNAME": "postd",
            "POSTD_KAFKA_SASL_PASSWORD": "s3cret-kafka-password",
        }
    )
    settings = load_common(env, "publisher")
    env.check()
    assert settings.kafka.base()["security.protocol"] == "sasl_ssl"
    assert settings.kafka.base()["sasl.mechanism"] == "SCRAM-SHA-512"
    assert settings.kafka.base()["sasl.password"] == "s3cret-kafka-password"


def test_sasl_without_mechanism_is_refused() -> None:
    env = EnvReader(
        {
            "DATABASE_URL": "x",
            "KAFKA_BOOTSTRAP": "k:1",
            "POSTD_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        }
    )
    load_common(env, "publisher")
    with pytest.raises(ConfigError, match="POSTD_KAFKA_SASL_MECHANISM is required"):
        env.check()


def test_params_number_placeholders_in_order() -> None:
    from postd_common.db import Params

    arg = Params("tenant-1")
    clause = f"tenant_id = $1 AND platform = {arg('meta')} AND state = ANY({arg(['a', 'b'])})"
    assert clause == "tenant_id = $1 AND platform = $2 AND state = ANY($3)"
    assert arg.values == ["tenant-1", "meta", ["a", "b"]]
