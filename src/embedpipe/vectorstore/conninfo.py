"""Connection strings read the way libpq reads them, to refuse a password given in clear and to hide one when printing.

libpq takes a URI (`postgresql://user:password@host/db?password=...`, `postgres://` alike) or key/value
words (`host=db user=u password='a b'`). A regex sees only some of those spellings, so every question
about a connection string goes through `parse_connection_string`, which asks psycopg's own parser
(`psycopg.conninfo.conninfo_to_dict`, what `psycopg.connect` calls) and never echoes a string it cannot
parse (it may hold a password).

Example:
    >>> parse_connection_string("host=db user=u password=hunter2 dbname=x").redacted
    'user=u password=*** dbname=x host=db'
    >>> parse_connection_string("postgresql://u:hunter2@db/x").redacted
    'postgresql://u:***@db/x'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

#: Parameters whose value is a secret: the password and the password of the client's SSL key.
SECRET_KEYS = ("password", "sslpassword")
#: What a secret is replaced with.
REDACTED = "***"
#: Printed instead of a connection string that cannot be parsed.
UNPARSEABLE = "<a connection string that cannot be parsed>"

_URI_SCHEMES = ("postgresql://", "postgres://")


class ConnectionConfigError(ValueError):
    """Connection settings that cannot work (missing instance, password in clear, ...)."""


@dataclass(frozen=True)
class ConnectionString:
    """A parsed connection string.

    Attributes:
        redacted: The string with every secret replaced by `***` (its URI or key/value form kept where
            possible), safe to print; the string itself when it holds no secret.
        secrets: The secret parameters it gives a non-empty value (`password`, `sslpassword`).
    """

    redacted: str
    secrets: tuple[str, ...] = ()

    @property
    def has_password(self) -> bool:
        return bool(self.secrets)


def parse_connection_string(text: str, *, what: str = "database_uri") -> ConnectionString:
    """Parses a libpq connection string (URI or key/value) with psycopg's parser.

    Args:
        text: The connection string; "" is the empty one (libpq's defaults).
        what: Its name in error messages (a parameter or flag name).

    Returns:
        A ConnectionString: which secrets it carries, and its redacted form.

    Raises:
        ConnectionConfigError: it cannot be parsed; the message says why without quoting it.
        MissingExtra: psycopg (its parser) is not installed.
    """
    from embedpipe.extras import require

    conninfo_to_dict = require("psycopg.conninfo", "local", "a PostgreSQL connection string").conninfo_to_dict

    if not text or not text.strip():
        return ConnectionString(text or "")
    try:
        if "\x00" in text:  # libpq reads a C string: it would stop there and see none of what follows
            raise ValueError("it holds a NUL character")
        params = conninfo_to_dict(text)
    except Exception as err:  # noqa: BLE001 - psycopg raises ProgrammingError, libpq's message inside
        raise ConnectionConfigError(
            f"{what}: cannot parse the connection string ({_unquoted(err)}); it is not shown, as it may hold a "
            "password. Expected postgresql://USER@HOST:PORT/DBNAME or 'host=HOST user=USER dbname=DBNAME'"
        ) from None
    secrets = tuple(key for key in SECRET_KEYS if params.get(key))
    if not secrets:
        return ConnectionString(text)
    return ConnectionString(_redacted(text, params), secrets)


def redact_connection_string(text: str) -> str:
    """The connection string with its secrets replaced by `***`; `UNPARSEABLE` for one that does not parse."""
    try:
        return parse_connection_string(text).redacted
    except ConnectionConfigError:
        return UNPARSEABLE


def check_no_password(text: str, *, what: str = "database_uri") -> str:
    """Refuses a connection string that cannot be parsed or carries a password in clear.

    Args:
        text: The connection string (a pipeline parameter, a flag).
        what: Its name in the message.

    Returns:
        The string, unchanged.

    Raises:
        ConnectionConfigError: naming `what`, with the string redacted.
    """
    parsed = parse_connection_string(text, what=what)
    if parsed.has_password:
        raise ConnectionConfigError(
            f"{what} {parsed.redacted} carries a password in clear ({', '.join(parsed.secrets)}); a pipeline "
            "parameter or command line is logged and stored, so give the password through password_env (an "
            "environment variable) or password_secret (Secret Manager), or libpq's PGPASSWORD / passfile"
        )
    return text


def _redacted(text: str, params: dict) -> str:
    """`text` with its secrets masked in its own form when that re-parses to the same settings, else key/value."""
    masked = {key: (REDACTED if key in SECRET_KEYS and value else value) for key, value in params.items()}
    if text.lstrip().startswith(_URI_SCHEMES):
        candidate = _masked_uri(text.strip())
        if _parses_to(candidate, masked):
            return candidate
    from psycopg.conninfo import make_conninfo

    return make_conninfo("", **masked)


def _masked_uri(uri: str) -> str:
    """Masks the password of `user:password@` and every secret query parameter, as libpq splits a URI."""
    scheme, _, rest = uri.partition("://")
    cut = min((i for i in (rest.find("@"), rest.find("/")) if i >= 0), default=-1)
    if cut >= 0 and rest[cut] == "@":  # libpq: credentials end at the first "@" before any "/"
        user, colon, _ = rest[:cut].partition(":")
        rest = (f"{user}:{REDACTED}" if colon else user) + rest[cut:]
    head, question, query = rest.partition("?")
    if question:
        fields = []
        for item in query.split("&"):
            key, equals, _ = item.partition("=")
            fields.append(f"{key}={REDACTED}" if equals and unquote(key) in SECRET_KEYS else item)
        rest = head + "?" + "&".join(fields)
    return f"{scheme}://{rest}"


def _parses_to(text: str, expected: dict) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(text) == expected
    except Exception:  # noqa: BLE001 - any doubt: the key/value form is used instead
        return False


def _unquoted(err: BaseException) -> str:
    """libpq's message, cut before the piece of the string it quotes (that piece may hold the password); a
    quoted piece is kept only where the whole message is a known form and the piece is a parameter name."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    named = re.fullmatch(r'missing "=" after "([a-z_]+)" in connection info string', message)
    if named and named.group(1) in _keywords():
        return message
    if message.startswith('missing "=" after'):
        return 'missing "=" after a parameter name in connection info string'
    head, quote, _ = message.partition('"')
    return head.rstrip(" :") + (" (the part quoted is not shown)" if quote else "")


def _keywords() -> set[str]:
    try:
        from psycopg import pq

        return {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    except Exception:  # noqa: BLE001 - without them every quoted piece is hidden
        return set()
