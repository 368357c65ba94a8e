"""API keys in the metadata store, on SQLite and PostgreSQL, and through the gateway on
PostgreSQL: stored hashed, scoped by tenant, revocable."""

from __future__ import annotations

import uuid

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import text

from kubemate.auth import Role, issue_token
from kubemate.errors import ApiKeyNotFound
from kubemate.metadata import MetadataStore, upgrade_to_head
from kubemate.metadata.database import make_engine
from kubemate.metadata.migrate import alembic_config
from kubemate.settings import AuthConfig, DatabaseConfig
from kubemate_gateway.api_keys import issue_api_key, parse_api_key
from kubemate_gateway.main import create_app
from kubemate_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration


@pytest.fixture
def store(database_url: str) -> MetadataStore:
    upgrade_to_head(database_url)
    s = MetadataStore.from_config(DatabaseConfig(url=database_url))
    yield s
    s.dispose()


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def test_keys_are_created_listed_revoked_per_tenant(store: MetadataStore) -> None:
    acme, globex = tenant(), tenant()
    issued = issue_api_key()
    key = store.api_keys.create(
        acme,
        key_id=issued.key_id,
        name="ci",
        roles=["viewer", "editor", "editor"],
        secret_sha256=issued.secret_sha256,
        created_by="admin-1",
    )
    assert key.roles == ("editor", "viewer") and not key.revoked
    assert [k.id for k in store.api_keys.list(acme)] == [issued.key_id]
    assert store.api_keys.list(globex) == []
    with pytest.raises(ApiKeyNotFound):
        store.api_keys.revoke(globex, issued.key_id)
    assert not store.api_keys.find(issued.key_id).revoked  # type: ignore[union-attr]
    first = store.api_keys.revoke(acme, issued.key_id)
    again = store.api_keys.revoke(acme, issued.key_id)
    assert first.revoked_at == again.revoked_at is not None
    assert store.api_keys.find(issued.key_id).revoked  # type: ignore[union-attr]
    assert store.api_keys.find("0" * 16) is None


def test_only_the_hash_is_stored(store: MetadataStore) -> None:
    issued = issue_api_key()
    _, secret = parse_api_key(issued.token)
    store.api_keys.create(
        tenant(),
        key_id=issued.key_id,
        name="k",
        roles=["viewer"],
        secret_sha256=issued.secret_sha256,
        created_by="u",
    )
    with store.database.connection() as conn:
        row = conn.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": issued.key_id})
        values = [str(v) for v in row.one()]
    assert not any(secret in v for v in values)
    with pytest.raises(ValueError):
        store.api_keys.create(
            tenant(), key_id="x", name="k", roles=[], secret_sha256=secret, created_by="u"
        )


def test_the_gateway_issues_and_honours_keys_on_postgres(postgres_url: str) -> None:
    upgrade_to_head(postgres_url)
    settings = GatewaySettings(
        database={"url": postgres_url}, gateway={"rate_limits": {"enabled": False}}
    )
    acme = tenant()
    admin = {"Authorization": f"Bearer {issue_token(AuthConfig(), acme, roles=(Role.ADMIN,))}"}
    with TestClient(create_app(settings)) as client:
        created = client.post(
            "/v1/api-keys", json={"name": "etl", "roles": ["editor"]}, headers=admin
        ).json()
        r = client.get("/auth/verify", headers={"X-API-Key": created["key"]})
        assert r.status_code == 200 and r.headers["x-tenant-id"] == acme
        assert r.headers["x-roles"] == "editor"
        assert client.delete(f"/v1/api-keys/{created['id']}", headers=admin).status_code == 204
        assert client.get("/auth/verify", headers={"X-API-Key": created["key"]}).status_code == 401
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        # The gateway migrated the database to the newest revision (the API keys came in 0002).
        assert (
            version == ScriptDirectory.from_config(alembic_config(postgres_url)).get_current_head()
        )
    finally:
        engine.dispose()
