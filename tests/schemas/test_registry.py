"""The Confluent wire format against a real registry (Apicurio, or SCHEMA_REGISTRY_URL): registration,
compatibility, lookup-only mode, cached ids, and the registry's failures kept apart from the records'."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import httpx
import pytest
from fastavro import schemaless_writer

from processors.logic.account_table import AccountState, Readiness
from processors.logic.join import JobOutcome
from processors.wire import account_state_of, state_datum
from schemas.catalog import ACCOUNT_STATE_TOPIC, ACCOUNT_UPDATES_TOPIC
from schemas.codec import CONFLUENT, Codec, SchemaNotResolved, SchemaSettings, build_codec
from schemas.confluent import RegistryClient, RegistryUnavailable, SchemaNotRegistered, client_config
from schemas.envelope import build_family_record
from schemas.store import TOPIC_RECORDS, load_store
from tests.schema_registry import Registry
from tests.schemas.schema_fixtures import ALL_DELIVERIES, RECEIVED_AT, SENT_AT

RECORDS = [
    build_family_record(d.body, webhook_id="wh", pinwheel_version="v", sent_at=SENT_AT, received_at=RECEIVED_AT)
    for d in ALL_DELIVERIES
]


def _get(url: str) -> httpx.Response:
    return httpx.get(url, headers={"Accept": "application/vnd.schemaregistry.v1+json"})


def _post(url: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(url, json=body, headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})


def _subject_id(url: str, subject: str) -> int:
    return int(_get(f"{url}/subjects/{subject}/versions/latest").json()["id"])


def _codec(registry: Registry, prefix: str, **settings: object) -> Codec:
    """A codec whose topics are unique to the test (`<prefix>-<topic>`), so subjects start empty."""
    topics = {f"{prefix}-{topic}": record for topic, record in TOPIC_RECORDS.items()}
    return build_codec(SchemaSettings(registry_url=registry.url, **settings), topics=topics)  # type: ignore[arg-type]


async def test_confluent_format_against_a_registry(schema_registry: Registry) -> None:
    # Subjects of this test's own (`<prefix>-<topic>`): other tests of the session register the real topics'.
    url = schema_registry.url
    prefix = f"t{uuid.uuid4().hex[:8]}"
    codec = _codec(schema_registry, prefix)
    assert codec.content_format == CONFLUENT
    records = [(f"{prefix}-{r.topic}", r.value) for r in RECORDS]
    topics = sorted({topic for topic, _ in records})
    with pytest.raises(SchemaNotResolved):  # encode never does I/O: ids come from prepare
        codec.encode(*records[0])
    await codec.prepare(topics)
    for topic, value in records:
        data = codec.encode(topic, value)
        assert data[0] == 0
        assert int.from_bytes(data[1:5], "big") == _subject_id(url, f"{topic}-value")
        assert codec.decode(topic, data) == value
    for topic in topics:
        assert len(_get(f"{url}/subjects/{topic}-value/versions").json()) == 1

    # A fresh consumer (empty caches) fetches a writer schema by id once, then decodes without the registry.
    consumer = _codec(schema_registry, prefix)
    topic, value = records[0]
    data = codec.encode(topic, value)
    with pytest.raises(SchemaNotResolved):
        consumer.decode(topic, data)
    assert await consumer.decode_resolved(topic, data) == value
    assert consumer.registry is not None
    calls = consumer.registry.requests
    assert await consumer.decode_resolved(topic, data) == value
    assert consumer.registry.requests == calls  # cached
    # Either format decodes whatever the codec's own format is.
    single = Codec().encode(RECORDS[0].topic, RECORDS[0].value)
    assert consumer.decode(RECORDS[0].topic, single) == RECORDS[0].value
    # An id the registry does not know is the registry's problem, not a bad record: never a DecodeError.
    with pytest.raises(SchemaNotResolved, match="unknown to the registry"):
        await consumer.decode_resolved(topic, b"\x00\x7f\xff\xff\xf0" + data[5:])
    await codec.close()
    await consumer.close()


async def test_prepare_registers_every_topic_with_backward_compatibility(schema_registry: Registry) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    codec = _codec(schema_registry, prefix)
    await codec.prepare()
    subjects = set(_get(f"{schema_registry.url}/subjects").json())
    ours = {f"{prefix}-{topic}-value" for topic in TOPIC_RECORDS}
    assert ours <= subjects
    for subject in ours:
        assert _get(f"{schema_registry.url}/config/{subject}").json()["compatibilityLevel"] == "BACKWARD"
    assert codec.registry is not None
    calls = codec.registry.requests
    await codec.prepare()  # ids are cached: no registry call
    assert codec.registry.requests == calls
    await codec.close()


async def test_compatibility_is_configurable_and_enforced(schema_registry: Registry) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}-{ACCOUNT_UPDATES_TOPIC}"
    codec = _codec(schema_registry, prefix, registry_compatibility="FULL")
    await codec.prepare([topic])
    url = schema_registry.url
    assert _get(f"{url}/config/{topic}-value").json()["compatibilityLevel"] == "FULL"
    # The registry now refuses a schema that breaks FULL compatibility for this subject (a field without default).
    schema = json.loads(_get(f"{url}/subjects/{topic}-value/versions/latest").json()["schema"])
    schema["fields"].append({"name": "extra_required", "type": "int"})
    assert _post(f"{url}/subjects/{topic}-value/versions", {"schema": json.dumps(schema)}).status_code == 409
    await codec.close()


async def test_lookup_only_mode_names_the_missing_subject_then_uses_the_registered_id(
    schema_registry: Registry,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    record = RECORDS[0]
    topic = f"{prefix}-{record.topic}"
    lookup = _codec(schema_registry, prefix, registry_auto_register=False)
    with pytest.raises(SchemaNotRegistered, match=f"{topic}-value.*SCHEMA_REGISTRY_AUTO_REGISTER=false"):
        await lookup.prepare([topic])
    assert _get(f"{schema_registry.url}/subjects/{topic}-value/versions").status_code == 404  # nothing written
    writer = _codec(schema_registry, prefix)
    await writer.prepare([topic])
    await lookup.prepare([topic])
    assert lookup.encode(topic, record.value) == writer.encode(topic, record.value)
    await lookup.close()
    await writer.close()


async def test_unreachable_registry_is_unavailable_after_retries() -> None:
    codec = build_codec(
        SchemaSettings(registry_url="http://127.0.0.1:9/apis/ccompat/v7", registry_retries=2, registry_retry_wait_ms=10)
    )
    with pytest.raises(RegistryUnavailable, match="ConnectError"):
        await codec.prepare([ACCOUNT_UPDATES_TOPIC])
    assert codec.registry is not None
    assert codec.registry.failures == 1
    await codec.close()


def test_tls_and_auth_options_reach_the_client(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("-----BEGIN X-----\n")
    settings = SchemaSettings(
        registry_url="https://registry:8081",
        registry_ca_file=ca,
        registry_cert_file=cert,
        registry_key_file=key,
        registry_bearer_token="secret-token",
        registry_bearer_logical_cluster="lsrc-1",
    )
    conf = client_config(settings)
    assert conf["ssl.ca.location"] == str(ca)
    assert conf["ssl.certificate.location"] == str(cert)
    assert conf["ssl.key.location"] == str(key)
    assert conf["bearer.auth.credentials.source"] == "STATIC_TOKEN"
    assert conf["bearer.auth.token"] == "secret-token"
    assert "secret-token" not in repr(settings)
    basic = client_config(SchemaSettings(registry_url="http://r", registry_username="u", registry_password="p"))
    assert basic["basic.auth.user.info"] == "u:p"


def test_registry_secrets_can_come_from_files(tmp_path: Path) -> None:
    password, token = tmp_path / "password", tmp_path / "token"
    password.write_text("file-s3cret\n")
    token.write_text("file-t0ken\n")
    basic = SchemaSettings(registry_url="http://r", registry_username="u", registry_password_file=password)
    assert client_config(basic)["basic.auth.user.info"] == "u:file-s3cret"
    bearer = SchemaSettings(registry_url="http://r", registry_bearer_token_file=token)
    assert client_config(bearer)["bearer.auth.token"] == "file-t0ken"
    assert "s3cret" not in repr(basic)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCHEMA_REGISTRY_USERNAME": "u", "SCHEMA_REGISTRY_BEARER_TOKEN": "t"}, "not both"),
        ({"SCHEMA_REGISTRY_KEY_FILE": __file__}, "needs SCHEMA_REGISTRY_CERT_FILE"),
        ({"SCHEMA_REGISTRY_CA_FILE": "/nonexistent.pem"}, "SCHEMA_REGISTRY_CA_FILE: no such file"),
        ({"SCHEMA_REGISTRY_COMPATIBILITY": "SOMETIMES"}, "BACKWARD"),
        ({"SCHEMA_REGISTRY_PASSWORD_FILE": "/nonexistent"}, "SCHEMA_REGISTRY_PASSWORD_FILE: cannot read"),
        ({"SCHEMA_REGISTRY_BEARER_TOKEN_FILE": __file__, "SCHEMA_REGISTRY_USERNAME": "u"}, "not both"),
    ],
)
def test_bad_registry_settings_are_refused(env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        SchemaSettings()


async def test_an_upgrade_registers_v2_of_the_state_and_reads_the_state_records_written_with_v1(
    schema_registry: Registry,
) -> None:
    # A deployment of the release before AccountState v2: its subjects hold v1 (BACKWARD), its state topic v1
    # records. This release registers v2 under the same subjects, and reads those records back whole.
    prefix = f"t{uuid.uuid4().hex[:8]}"
    state_topic, updates_topic = f"{prefix}-{ACCOUNT_STATE_TOPIC}", f"{prefix}-{ACCOUNT_UPDATES_TOPIC}"
    versions = {v.fullname: v for v in load_store().all_versions() if v.version == 1}
    v1_state = versions[TOPIC_RECORDS[ACCOUNT_STATE_TOPIC]]
    before = RegistryClient(SchemaSettings(registry_url=schema_registry.url))
    v1_id = await before.writer_id(f"{state_topic}-value", v1_state.text)
    await before.writer_id(f"{updates_topic}-value", versions[TOPIC_RECORDS[ACCOUNT_UPDATES_TOPIC]].text)
    await before.close()
    state = AccountState(
        "934f6406-c332-4c05-a3e8-6a90765c842d",
        jobs={"paystubs": JobOutcome("paystubs", None, "pending", None, None, 5, None, 1, 5)},
        version=1,
        last_event_id="e1",
        last_event_type="paystubs.added",
        last_event_sent_at_us=4,
        updated_at_us=6,
        readiness=Readiness(first_seen_us=5),
    )
    body = io.BytesIO()
    schemaless_writer(body, v1_state.parsed, state_datum(state))  # the writer ignores the fields v1 does not have
    written = b"\x00" + v1_id.to_bytes(4, "big") + body.getvalue()

    new = _codec(schema_registry, prefix)
    await new.prepare([state_topic, updates_topic])  # the registry accepts v2 of both subjects (BACKWARD)
    url = schema_registry.url
    for topic in (state_topic, updates_topic):
        assert len(_get(f"{url}/subjects/{topic}-value/versions").json()) == 2
    v2_id = _subject_id(url, f"{state_topic}-value")
    assert v2_id != v1_id
    assert new.encode(state_topic, state_datum(state))[1:5] == v2_id.to_bytes(4, "big")
    read = account_state_of(await new.decode_resolved(state_topic, written))
    # v1 has no readiness; the outcome's as_of is its latest time (pending_since here, as the logic sets it).
    assert read == state._replace(readiness=None)
    assert account_state_of(new.decode(state_topic, new.encode(state_topic, state_datum(state)))) == state
    await new.close()
