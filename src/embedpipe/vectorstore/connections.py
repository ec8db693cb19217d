"""Opening database connections: a plain Postgres URI, AlloyDB and Cloud SQL through their Python connectors.

Passwords come from an environment variable or Secret Manager, never from a pipeline parameter in
clear; they are never logged (`conninfo.redact_connection_string` hides one a connection string carries).

The AlloyDB and Cloud SQL connectors hand out `pg8000` connections (they do not support psycopg), so
the writer speaks both: psycopg loads with binary COPY, pg8000 with text COPY. The connector paths are
tested against fakes only; they have not been run against a live instance.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from embedpipe.vectorstore.conninfo import ConnectionConfigError, parse_connection_string, redact_connection_string

__all__ = [
    "IP_TYPES",
    "POSTGRES_TARGETS",
    "ConnectionConfigError",
    "ConnectionSettings",
    "redact_uri",
    "resolve_password",
]

#: Targets that are PostgreSQL + pgvector.
POSTGRES_TARGETS = ("postgres", "alloydb", "cloudsql")
#: How the AlloyDB / Cloud SQL connector reaches an instance: private IP, public IP, Private Service Connect.
IP_TYPES = ("PRIVATE", "PUBLIC", "PSC")


def _flag(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:
    """A field whose help (and choices) the command lines show (`embedpipe.embed.settings.add_arguments`)."""
    return field(default=default, metadata={"help": help, "choices": choices})


def redact_uri(uri: str) -> str:
    """The connection string (URI or key/value) with any password replaced by `***` (for logs and reports)."""
    return redact_connection_string(uri or "")


def resolve_password(password_env: str = "", password_secret: str = "", *, secret_client=None) -> str | None:
    """Reads a database password from an environment variable or a Secret Manager secret version.

    Args:
        password_env: Name of an environment variable holding the password (read now, not at import).
        password_secret: `projects/P/secrets/S[/versions/V]` (latest version if none given).
        secret_client: A `SecretManagerServiceClient` (or fake); created if needed.

    Returns:
        The password, or None when neither is given.
    """
    if password_env and password_secret:
        raise ConnectionConfigError("give password_env or password_secret, not both")
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise ConnectionConfigError(f"environment variable {password_env} (password_env) is not set")
        return value
    if password_secret:
        name = password_secret if "/versions/" in password_secret else password_secret.rstrip("/") + "/versions/latest"
        if not re.match(r"^projects/[^/]+/secrets/[^/]+/versions/[^/]+$", name):
            raise ConnectionConfigError(
                f"password_secret {password_secret!r} must look like projects/PROJECT/secrets/NAME[/versions/VERSION]"
            )
        if secret_client is None:
            from embedpipe.extras import require

            secretmanager = require("google.cloud.secretmanager", "cloud", "a password from Secret Manager")
            secret_client = secretmanager.SecretManagerServiceClient()
        return secret_client.access_secret_version(request={"name": name}).payload.data.decode("utf-8")
    return None


@dataclass
class ConnectionSettings:
    """Where and how to connect.

    Attributes:
        target: "postgres" (a URI), "alloydb" or "cloudsql".
        uri: Postgres URI for "postgres" ("" = the embedded default database).
        instance: AlloyDB `projects/P/locations/L/clusters/C/instances/I`, or Cloud SQL `project:region:instance`.
        database: Database name for AlloyDB/Cloud SQL (default "postgres").
        user: Database user (for IAM auth: the service account e-mail without `.gserviceaccount.com`).
        password_env: Environment variable with the password.
        password_secret: Secret Manager secret with the password.
        iam_auth: Use IAM database authentication instead of a password (AlloyDB, Cloud SQL).
        ip_type: "PRIVATE" (default: pipelines run in a VPC), "PUBLIC" or "PSC".
        connector_factory: Builds the connector (tests pass a fake); default the real one.
        secret_client: Secret Manager client (tests pass a fake).
    """

    target: str = _flag("postgres", "postgres (a URI), alloydb or cloudsql", POSTGRES_TARGETS)
    uri: str = ""
    instance: str = _flag(
        "", "AlloyDB projects/P/locations/L/clusters/C/instances/I or Cloud SQL project:region:instance"
    )
    database: str = _flag("postgres", "database name (AlloyDB, Cloud SQL)")
    user: str = _flag(
        "postgres", "database user; with --iam-auth the service account e-mail without .gserviceaccount.com"
    )
    password_env: str = _flag("", "name of an environment variable holding the password")
    password_secret: str = _flag("", "Secret Manager secret holding the password")
    iam_auth: bool = _flag(False, "IAM database authentication instead of a password (AlloyDB, Cloud SQL)")
    ip_type: str = _flag("PRIVATE", "private IP, public IP or Private Service Connect", IP_TYPES)
    connector_factory: Callable[..., Any] | None = field(default=None, repr=False)
    secret_client: Any = field(default=None, repr=False)

    def describe(self) -> str:
        """Where this connects, safe to log."""
        if self.target == "postgres":
            return redact_connection_string(self.uri) or "the embedded database"
        return f"{self.target} {self.instance} database {self.database} as {self.user}"

    def check(self) -> ConnectionSettings:
        if self.target not in POSTGRES_TARGETS:
            raise ConnectionConfigError(
                f"target {self.target!r} is not a Postgres target; expected one of {POSTGRES_TARGETS}"
            )
        if self.target == "postgres":
            parse_connection_string(self.uri, what="database_uri")  # one psycopg could not read is named, not echoed
        if self.target in ("alloydb", "cloudsql") and not self.instance:
            example = (
                "projects/P/locations/L/clusters/C/instances/I"
                if self.target == "alloydb"
                else "project:region:instance"
            )
            raise ConnectionConfigError(f"target {self.target} needs instance, e.g. {example}")
        if self.target == "alloydb" and not re.match(
            r"^projects/[^/]+/locations/[^/]+/clusters/[^/]+/instances/[^/]+$", self.instance
        ):
            raise ConnectionConfigError(
                f"AlloyDB instance {self.instance!r} must look like projects/P/locations/L/clusters/C/instances/I"
            )
        if self.target == "cloudsql" and self.instance.count(":") != 2:
            raise ConnectionConfigError(f"Cloud SQL instance {self.instance!r} must look like project:region:instance")
        return self

    def connection_factory(self) -> Callable[[], Any]:
        """A function opening a new connection each call (the writer calls it again to retry)."""
        self.check()
        if self.target == "postgres":
            uri = self.uri
            password = resolve_password(self.password_env, self.password_secret, secret_client=self.secret_client)

            def connect_uri():
                import psycopg

                target = uri or _embedded_uri()
                kwargs = {"password": password} if password is not None else {}
                return psycopg.connect(target, **kwargs)

            return connect_uri
        password = (
            None
            if self.iam_auth
            else resolve_password(self.password_env, self.password_secret, secret_client=self.secret_client)
        )
        if not self.iam_auth and password is None:
            raise ConnectionConfigError(f"target {self.target} needs password_env or password_secret (or iam_auth)")
        connector = (self.connector_factory or _default_connector_factory(self.target))(
            ip_type=self.ip_type, enable_iam_auth=self.iam_auth
        )
        kwargs = {"user": self.user, "db": self.database}
        if password is not None:
            kwargs["password"] = password
        if self.target == "cloudsql":
            kwargs["enable_iam_auth"] = self.iam_auth  # Cloud SQL takes it per connection too

        def connect_instance():
            return connector.connect(self.instance, "pg8000", **kwargs)

        connect_instance.connector = connector  # closed by the caller when done
        return connect_instance


def _embedded_uri() -> str:
    from embedpipe.vectorstore.embedded import embedded_database_uri

    return embedded_database_uri()


def _default_connector_factory(target: str):
    from embedpipe.extras import require

    module = "google.cloud.alloydb.connector" if target == "alloydb" else "google.cloud.sql.connector"
    require("pg8000", "cloud", f"the {target} target")  # the connectors' driver, needed at the first connect
    return require(module, "cloud", f"the {target} target").Connector
