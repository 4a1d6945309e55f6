"""Issue 11 #16: secrets in a MongoDB URL's query string never reach an error message or a log;
likewise a PostgreSQL URL's ``password``/``sslpassword`` options, and a driver's message quoting the URL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_cli import clean_env, run_cli

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


# --- PostgreSQL: passwords in the query string, and drivers' messages that quote the URL -------


@pytest.mark.parametrize("option", ["password", "sslpassword", "PASSWORD", "%70assword"])
def test_postgres_password_options_are_redacted(option: str) -> None:
    url = f"postgresql://u@db.example/q?sslmode=require&{option}=s3cretQ&application_name=x"
    assert redact_url(url) == f"postgresql://u@db.example/q?sslmode=require&{option}=***&application_name=x"


def test_userinfo_and_query_password_together() -> None:
    redacted = redact_url("postgresql://u:s3cret@127.0.0.1:1/db?password=s3cretQ")
    assert redacted == "postgresql://u:***@127.0.0.1:1/db?password=***"


def test_redact_message_hides_the_url_and_every_secret_a_driver_quotes() -> None:
    from queuectl.store import redact_message

    url = "postgresql://u:s3%zzcret@h/db?password=p%41ss"
    text = f'invalid URI: "{url}"; invalid percent-encoded token: "s3%zzcret"; password pAss'
    cleaned = redact_message(text, url)
    assert cleaned == f'invalid URI: "{redact_url(url)}"; invalid percent-encoded token: "***"; password ***'


def _cli(tmp_path: Path, *args: str, db: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=clean_env(tmp_path, db or "default"), cwd=tmp_path)


@pytest.mark.parametrize(
    ("args", "db", "code"),
    [
        # port 1 refuses: observed "cannot use PostgreSQL at postgresql://u@127.0.0.1:1/db?password=s3cretQ"
        (("--db", "postgresql://u@127.0.0.1:1/db?password=s3cretQ", "status"), None, 5),
        (("--db", "postgresql://u@127.0.0.1:1/db?sslpassword=s3cretQ", "status"), None, 5),
        # observed: the driver's parse error repeated the whole URL, s3cret and all
        (("--db", "postgresql://u:s3cret@[::1:1/db", "status"), None, 2),
        # observed: the driver quoted the password's bad percent-escape
        (("--db", "postgresql://u:s3cret%zz@127.0.0.1:1/db", "status"), None, 2),
        (("--db", "postgresql://u@127.0.0.1:1/db?password=s3cret%zz", "status"), None, 2),
        (("--db", "mongodb://u:s3cret@[::1:1/db", "status"), None, 2),
    ],
)
def test_postgres_errors_never_print_the_password(
    tmp_path: Path, args: tuple[str, ...], db: str | None, code: int
) -> None:
    proc = _cli(tmp_path, *args, db=db)
    assert proc.returncode == code, proc
    assert "s3cret" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("queuectl: error: "), proc.stderr


def test_config_list_redacts_a_query_password(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "config", "list", db="postgresql://u:s3cret@127.0.0.1:1/db?password=s3cretQ")
    assert "s3cret" not in proc.stderr + proc.stdout, proc.stdout + proc.stderr  # observed: ?password=s3cretQ
    assert "Traceback" not in proc.stderr
