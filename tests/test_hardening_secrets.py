"""Issue 11 #16: secrets in a MongoDB URL's query string never reach an error message or a log."""

from __future__ import annotations

import pytest

from queuectl.store import redact_url


@pytest.mark.parametrize(
    "option",
    [
        "tlsCertificateKeyFilePassword",
        "authMechanismProperties",
        "tlscertificatekeyfilepassword",
        "sslPEMKeyPassword",
        "proxyPassword",
    ],
)
def test_secret_query_options_are_redacted(option: str) -> None:
    url = f"mongodb://h1:27017/q?tls=true&{option}=hunter2%3Ax&retryWrites=true"
    redacted = redact_url(url)
    assert "hunter2" not in redacted, redacted  # observed: printed as is
    assert redacted == f"mongodb://h1:27017/q?tls=true&{option}=***&retryWrites=true"


def test_password_and_secret_options_together() -> None:
    url = (
        "mongodb+srv://user:pw@cluster0.example.net/db?authMechanism=MONGODB-AWS"
        "&authMechanismProperties=AWS_SESSION_TOKEN:tok3n"
    )
    assert redact_url(url) == (
        "mongodb+srv://user:***@cluster0.example.net/db?authMechanism=MONGODB-AWS&authMechanismProperties=***"
    )


def test_harmless_options_are_kept() -> None:
    url = "mongodb://h/db?replicaSet=rs0&tlsCertificateKeyFile=/etc/k.pem&passwordless=1"
    assert redact_url(url) == url
