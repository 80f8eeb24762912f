"""Bearer JWTs of an external identity provider, verified against a JWKS served by a
real local HTTP server: signature, audience, issuer, expiry, algorithms, kid rotation,
Supabase-style tenant and role claims."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from postd_gateway.config import JwtSettings

pytestmark = pytest.mark.integration

ISSUER = "https://idp.test/auth/v1"


class IdentityProvider:
    """Signs tokens and serves its JWKS; counts fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        self.url = ""
        self.add_key("k1")

    def add_key(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        entries = []
        for kid, key in self.keys.items():
            entry = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            entries.append({**entry, "kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": entries}

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response(self.jwks())

    def token(self, tenant_id: str, *, kid: str = "k1", key: Any = None, **changes: Any) -> str:
        now = int(time.time())
        claims = {
            "sub": str(uuid.uuid4()),
            "aud": "authenticated",
            "iss": ISSUER,
            "iat": now,
            "exp": now + 300,
            "role": "authenticated",
            "email": "person@example.com",
            "app_metadata": {"tenant_id": tenant_id, "role": "editor"},
        }
        claims.update(changes)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
async def idp():
    provider = IdentityProvider()
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", provider.handle)
    server = TestServer(app)
    await server.start_server()
    provider.url = str(server.make_url("/.well-known/jwks.json"))
    yield provider
    await server.close()


@pytest.fixture
async def jwt_client(make_client, idp):
    settings = JwtSettings(
        jwks_url=idp.url,
        issuer=ISSUER,
        audience="authenticated",
        algorithms=("RS256", "ES256"),
        jwks_ttl_seconds=300,
        jwks_min_refetch_seconds=0,
        leeway_seconds=5,
    )
    return await make_client(jwt=settings)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refused(client, token: str) -> str:
    answer = await client.get("/v1/me", headers=bearer(token))
    problem = await answer.json()
    assert answer.status == 401, problem
    assert problem["code"] == "unauthenticated"
    assert token not in await answer.text()
    return str(problem["detail"])


async def test_a_valid_token_maps_tenant_and_role(jwt_client, idp, make_tenant):
    tenant = await make_tenant()
    answer = await jwt_client.get("/v1/me", headers=bearer(idp.token(tenant.id)))
    me = await answer.json()
    assert answer.status == 200, me
    assert me["tenant_id"] == tenant.id
    assert me["role"] == "editor"
    assert me["credential"] == "jwt"


async def test_the_tokens_role_is_enforced(jwt_client, idp, make_tenant, world):
    tenant = await make_tenant()
    ids = world.seed_tenant(tenant.id)
    token = idp.token(tenant.id)
    path = f"/v1/connections/{ids['connection_id']}"
    assert (await jwt_client.post(path + "/refresh", headers=bearer(token))).status == 200
    assert (await jwt_client.post(path + "/disconnect", headers=bearer(token))).status == 403
    admin = idp.token(tenant.id, app_metadata={"tenant_id": tenant.id, "role": "admin"})
    assert (await jwt_client.post(path + "/disconnect", headers=bearer(admin))).status == 200
    viewer = idp.token(tenant.id, app_metadata={"tenant_id": tenant.id})
    assert (await jwt_client.post(path + "/refresh", headers=bearer(viewer))).status == 403


async def test_bad_signature(jwt_client, idp, make_tenant):
    tenant = await make_tenant()
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    detail = await refused(jwt_client, idp.token(tenant.id, key=forger))
    assert "signature" in detail


async def test_wrong_audience(jwt_client, idp, make_tenant):
    tenant = await make_tenant()
    assert "audience" in await refused(jwt_client, idp.token(tenant.id, aud="another-app"))


async def test_wrong_issuer(jwt_client, idp, make_tenant):
    tenant = await make_tenant()
    assert "issuer" in await refused(jwt_client, idp.token(tenant.id, iss="https://evil.test"))


async def test_expired(jwt_client, idp, make_tenant):
    tenant = await make_tenant()
    past = int(time.time()) - 3600
    assert "expired" in await refused(jwt_client, idp.token(tenant.id, iat=past - 60, exp=past))


async def test_unknown_kid_refetches_once_then_refuses(jwt_client, idp, make_tenant):
    tenant = await make_tenant()
    assert (await jwt_client.get("/v1/me", headers=bearer(idp.token(tenant.id)))).status == 200
    fetched = idp.fetches
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    detail = await refused(jwt_client, idp.token(tenant.id, kid="k-unknown", key=stranger))
    assert "key" in detail
    assert idp.fetches == fetched + 1  # looked again for a rotated key


async def test_a_rotated_key_is_picked_up(jwt_client, idp, make_tenant):
    tenant = await make_tenant()
    assert (await jwt_client.get("/v1/me", headers=bearer(idp.token(tenant.id)))).status == 200
    idp.add_key("k2")
    answer = await jwt_client.get("/v1/me", headers=bearer(idp.token(tenant.id, kid="k2")))
    assert answer.status == 200


async def test_algorithms_outside_the_allow_list(jwt_client, idp, make_tenant):
    tenant = await make_tenant()
    claims = {
        "sub": "x",
        "aud": "authenticated",
        "iss": ISSUER,
        "exp": int(time.time()) + 300,
        "app_metadata": {"tenant_id": tenant.id},
    }
    hs = jwt.encode(
        claims, "a-shared-secret-of-enough-length-32b", algorithm="HS256", headers={"kid": "k1"}
    )
    assert "algorithm" in await refused(jwt_client, hs)
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"kid": "k1"})
    assert "algorithm" in await refused(jwt_client, unsigned)
    # ES256 is allowed, but the JWKS publishes k1 as an RS256 key.
    ec_key = ec.generate_private_key(ec.SECP256R1())
    es = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "k1"})
    await refused(jwt_client, es)


async def test_tenant_claims_are_required_and_must_exist(jwt_client, idp, make_tenant):
    tenant = await make_tenant()
    assert "tenant" in await refused(jwt_client, idp.token(tenant.id, app_metadata={}))
    assert "tenant" in await refused(jwt_client, idp.token(str(uuid.uuid4())))
    bad_role = idp.token(tenant.id, app_metadata={"tenant_id": tenant.id, "role": "root"})
    assert "role" in await refused(jwt_client, bad_role)
    assert "'sub'" in await refused(jwt_client, idp.token(tenant.id, sub=None))


async def test_sign_in_with_an_idp_token(jwt_client, idp, make_tenant):
    tenant = await make_tenant()
    answer = await jwt_client.post("/v1/sessions", json={"id_token": idp.token(tenant.id)})
    body = await answer.json()
    assert answer.status == 201, body
    assert body["role"] == "editor"
    me = await jwt_client.get("/v1/me")
    assert (await me.json())["tenant_id"] == tenant.id


async def test_bearer_tokens_are_refused_when_no_idp_is_configured(client, idp, make_tenant):
    tenant = await make_tenant()
    await refused(client, idp.token(tenant.id))


def test_settings_refuse_symmetric_algorithms(base_env):
    from postd_common.config import ConfigError
    from postd_gateway.config import load_settings

    with pytest.raises(ConfigError, match="HS256"):
        load_settings({**base_env, "POSTD_AUTH_JWT_ALGORITHMS": "HS256"})
    with pytest.raises(ConfigError, match="ISSUER"):
        load_settings({**base_env, "POSTD_AUTH_JWKS_URL": "http://idp.test/jwks"})
    ok = load_settings(
        {**base_env, "POSTD_AUTH_JWKS_URL": "http://idp/jwks", "POSTD_AUTH_JWT_ISSUER": ISSUER}
    )
    assert dataclasses.asdict(ok.jwt)["algorithms"] == ("RS256", "ES256")
