"""Random connection strings with a password in them: it never shows in what is printed, and a string psycopg
cannot parse is a clear error (never a traceback, never the string echoed)."""

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from embedpipe.vectorstore.conninfo import (
    SECRET_KEYS,
    UNPARSEABLE,
    ConnectionConfigError,
    check_no_password,
    parse_connection_string,
    redact_connection_string,
)

# The other fields use ASCII letters and digits only; every password holds at least one character outside
# ASCII, so if it shows in a redacted string it was leaked, not met by chance in a host or user name.
plain = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
marker = st.sampled_from("éß€密ü")
passwords = st.builds(
    lambda head, mark, tail: head + mark + tail,
    st.text(min_size=0, max_size=12).filter(lambda s: "\x00" not in s),
    marker,
    st.text(min_size=0, max_size=12).filter(lambda s: "\x00" not in s),
)
secret_key = st.sampled_from(["password", "sslpassword"])


@st.composite
def key_value(draw):
    """`make_conninfo` quotes and escapes whatever the password holds (spaces, quotes, backslashes)."""
    password, key = draw(passwords), draw(secret_key)
    fields = {"host": draw(plain), "user": draw(plain), "dbname": draw(plain), key: password}
    order = draw(st.permutations(list(fields)))
    return make_conninfo("", **{name: fields[name] for name in order}), password


@st.composite
def uri(draw):
    password = draw(passwords)
    scheme = draw(st.sampled_from(["postgresql", "postgres"]))
    user, host, db = draw(plain), draw(plain), draw(plain)
    port = draw(st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")))
    extra = draw(st.sampled_from(["", "sslmode=require", "connect_timeout=5"]))
    if draw(st.booleans()):  # user:password@
        text = f"{scheme}://{user}:{quote(password, safe='')}@{host}{port}/{db}" + (f"?{extra}" if extra else "")
    else:  # ?password=
        query = "&".join(q for q in (extra, f"password={quote(password, safe='')}") if q)
        text = f"{scheme}://{user}@{host}{port}/{db}?{query}"
    return text, password


@given(st.one_of(key_value(), uri()))
def test_the_password_never_shows_in_the_redacted_string(case):
    text, password = case
    parsed = parse_connection_string(text)
    assert parsed.has_password
    for shown in (parsed.redacted, redact_connection_string(text)):
        assert password not in shown and quote(password, safe="") not in shown
        assert all(value == "***" for key, value in conninfo_to_dict(shown).items() if key.endswith("password"))
    try:
        check_no_password(text)
    except ConnectionConfigError as err:
        assert password not in str(err) and "password in clear" in str(err)
    else:
        raise AssertionError("a password in clear was accepted")


@given(st.one_of(key_value(), uri()), st.text(max_size=12), st.integers(0, 200))
def test_a_broken_string_is_a_clear_error_without_the_password(case, garbage, where):
    text, password = case
    broken = text[: where % (len(text) + 1)] + garbage + text[where % (len(text) + 1) :]
    try:
        parsed = parse_connection_string(broken, what="database_uri")
    except ConnectionConfigError as err:
        message = str(err)
        assert message.startswith("database_uri: cannot parse the connection string (")
        assert password not in message and quote(password, safe="") not in message
        assert redact_connection_string(broken) == UNPARSEABLE
    else:  # still a connection string: whatever it now holds as a password is hidden
        fields, shown = conninfo_to_dict(broken), conninfo_to_dict(parsed.redacted)
        assert all(shown[key] == "***" for key in parsed.secrets)
        if not any(password in value for key, value in fields.items() if key not in SECRET_KEYS):
            assert password not in parsed.redacted  # unless the garbage made it part of, say, the host name
