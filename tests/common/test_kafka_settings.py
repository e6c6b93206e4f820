"""KafkaSettings: every client's TLS and SASL options, secrets from files, and bad combinations refused by name.

The connections themselves are proven against the secured broker (tests/test_secure_kafka*.py); here, what the
settings accept, refuse and hand to aiokafka.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from pydantic import ValidationError

from common.kafka_auth import MskIamTokens
from common.settings import KafkaSettings, settings_problems
from gateway.tls import ensure_self_signed


@pytest.fixture(autouse=True)
def _no_kafka_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's own KAFKA_* variables must not change what these tests see."""
    import os

    for name in list(os.environ):
        if name.startswith("KAFKA_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) and its key."""
    directory = tmp_path_factory.mktemp("pem")
    cert, key = directory / "client.crt", directory / "client.key"
    ensure_self_signed(cert, key)
    return cert, key


def problems(**env: str) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        KafkaSettings(**env)  # type: ignore[arg-type]
    found = settings_problems(caught.value)
    assert found is not None
    return found


def secret_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_plaintext_is_the_default_and_takes_no_tls_or_sasl() -> None:
    kwargs = KafkaSettings().client_kwargs()
    assert kwargs["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in kwargs
    assert "sasl_mechanism" not in kwargs


def test_ssl_without_a_ca_file_trusts_the_system_store() -> None:
    context = KafkaSettings(security_protocol="SSL").client_kwargs()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # Debian's CA bundle, loaded by default


def test_mutual_tls_loads_the_ca_and_the_client_certificate(pem: tuple[Path, Path]) -> None:
    cert, key = pem
    settings = KafkaSettings(security_protocol="SSL", ssl_ca_file=cert, ssl_cert_file=cert, ssl_key_file=key)
    context = settings.client_kwargs()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.cert_store_stats()["x509_ca"] == 1
    assert "client certificate" in settings.describe()


def test_hostname_checking_can_be_switched_off_explicitly(pem: tuple[Path, Path]) -> None:
    context = KafkaSettings(security_protocol="SSL", ssl_ca_file=pem[0], ssl_check_hostname=False).ssl_context()
    assert context is not None
    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_password_from_a_file_is_read_at_each_client_and_never_shown(mechanism: str, tmp_path: Path) -> None:
    path = secret_file(tmp_path, "password", "first-s3cret\n")
    settings = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism=mechanism, sasl_username="svc", sasl_password_file=path
    )
    kwargs = settings.client_kwargs()
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"]) == (mechanism, "svc")
    assert kwargs["sasl_plain_password"] == "first-s3cret"  # one trailing newline dropped
    path.write_text("rotated-s3cret")
    assert settings.client_kwargs()["sasl_plain_password"] == "rotated-s3cret"
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in settings.describe()


def test_a_password_in_the_environment_is_a_secret_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "env-s3cret")
    settings = KafkaSettings()
    assert settings.client_kwargs()["sasl_plain_password"] == "env-s3cret"
    assert "env-s3cret" not in repr(settings)
    assert "env-s3cret" not in str(settings.model_dump())


def test_oauthbearer_shares_one_token_provider_per_process(tmp_path: Path) -> None:
    env = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "OAUTHBEARER",
        "sasl_oauth_token_url": "https://idp.example/oauth2/token",
        "sasl_oauth_client_id": "connector",
        "sasl_oauth_client_secret_file": secret_file(tmp_path, "client-secret", "oauth-s3cret"),
        "sasl_oauth_extensions": "logicalCluster=lkc-1, identityPoolId=pool-2",
    }
    first = KafkaSettings(**env).client_kwargs()  # type: ignore[arg-type]
    second = KafkaSettings(**env).client_kwargs()  # type: ignore[arg-type]
    assert first["sasl_mechanism"] == "OAUTHBEARER"
    provider = first["sasl_oauth_token_provider"]
    assert provider is second["sasl_oauth_token_provider"]
    assert provider.extensions() == {"logicalCluster": "lkc-1", "identityPoolId": "pool-2"}  # type: ignore[attr-defined]


def test_msk_iam_signs_a_token_with_the_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The optional signer makes a SigV4-presigned `kafka-cluster:Connect` URL locally (no AWS call)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    settings = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="AWS_MSK_IAM", aws_region="eu-west-1")
    kwargs = settings.client_kwargs()
    assert kwargs["sasl_mechanism"] == "OAUTHBEARER"
    provider = kwargs["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokens)
    token = asyncio.run(provider.token())
    url = urlparse(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    query = parse_qs(url.query)
    assert url.hostname == "kafka.eu-west-1.amazonaws.com"
    assert query["Action"] == ["kafka-cluster:Connect"]
    assert query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/")
    assert query["X-Amz-Signature"]
    assert asyncio.run(provider.token()) == token  # reused until it nears expiry


BAD = [
    ({"security_protocol": "SASL_SSL"}, "KAFKA_SASL_MECHANISM: required with KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
    (
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_password": "x"},
        "KAFKA_SASL_USERNAME: required",
    ),
    (
        {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
        "KAFKA_SASL_PASSWORD: required (or KAFKA_SASL_PASSWORD_FILE)",
    ),
    (
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER", "sasl_oauth_client_id": "c"},
        "KAFKA_SASL_OAUTH_TOKEN_URL: required",
    ),
    (
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER", "sasl_oauth_token_url": "idp/token",
         "sasl_oauth_client_id": "c", "sasl_oauth_client_secret": "s"},
        "KAFKA_SASL_OAUTH_TOKEN_URL: expected an http(s):// URL",
    ),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "AWS_MSK_IAM"}, "KAFKA_AWS_REGION: required"),
    (
        {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "AWS_MSK_IAM", "aws_region": "eu-west-1"},
        "KAFKA_SECURITY_PROTOCOL: AWS_MSK_IAM needs SASL_SSL",
    ),
    ({"sasl_mechanism": "PLAIN"}, "KAFKA_SASL_MECHANISM: set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ({"ssl_ca_file": "/etc/hostname"}, "KAFKA_SSL_CA_FILE: set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ({"security_protocol": "SSL", "ssl_ca_file": "/nonexistent/ca.pem"}, "KAFKA_SSL_CA_FILE: no such file"),
    ({"security_protocol": "SSL", "ssl_ca_file": "/etc/hostname"}, "KAFKA_SSL_CA_FILE: /etc/hostname is not a usable"),
    ({"security_protocol": "SSL", "ssl_key_file": "/etc/hostname"}, "KAFKA_SSL_KEY_FILE: set without"),
    (
        {"security_protocol": "SSL", "ssl_cert_file": "/etc/hostname"},
        "KAFKA_SSL_CERT_FILE: /etc/hostname and its key do not load",
    ),
    ({"sasl_oauth_extensions": "logicalCluster"}, "KAFKA_SASL_OAUTH_EXTENSIONS: expected key=value"),
]  # fmt: skip


@pytest.mark.parametrize(("env", "expected"), BAD, ids=[b[1].split(":")[0] + "-" + str(i) for i, b in enumerate(BAD)])
def test_a_bad_combination_names_its_variable(env: dict[str, str], expected: str) -> None:
    found = problems(**env)
    assert any(line.startswith(expected) for line in found), found
    assert not any("Value error" in line for line in found)


def test_secret_files_must_be_readable_and_not_empty(tmp_path: Path) -> None:
    base = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "u"}
    missing = problems(**base, sasl_password_file=str(tmp_path / "absent"))
    assert missing[0].startswith("KAFKA_SASL_PASSWORD_FILE: cannot read")
    assert "No such file" in missing[0]
    empty = problems(**base, sasl_password_file=str(secret_file(tmp_path, "empty", "\n")))
    assert empty[0] == f"KAFKA_SASL_PASSWORD_FILE: {tmp_path / 'empty'} is empty"
    both = problems(**base, sasl_password="x", sasl_password_file=str(secret_file(tmp_path, "p", "y")))
    assert both[0] == "KAFKA_SASL_PASSWORD: set either KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both"


def test_a_wrong_key_password_is_refused_at_start(pem: tuple[Path, Path], tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem[1].read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"right-s3cret"),
        )
    )
    base = {"security_protocol": "SSL", "ssl_cert_file": str(pem[0]), "ssl_key_file": str(encrypted)}
    assert KafkaSettings(**base, ssl_key_password="right-s3cret").ssl_context() is not None  # type: ignore[arg-type]
    wrong = problems(**base, ssl_key_password_file=str(secret_file(tmp_path, "kp", "wrong-s3cret")))
    assert wrong[0].startswith("KAFKA_SSL_CERT_FILE:")
    assert "KAFKA_SSL_KEY_PASSWORD" in wrong[0]
    assert "s3cret" not in " ".join(wrong)
