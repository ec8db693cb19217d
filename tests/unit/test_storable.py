"""`embedpipe.storable`: strict reading of one JSON line, and what the outputs cannot store."""

import pytest

from embedpipe.storable import (
    MAX_DEPTH,
    LineError,
    Unstorable,
    find_unstorable,
    loads_line,
    nesting_depth,
    short,
    string_problem,
)


def test_nesting_depth_ignores_brackets_inside_strings():
    assert nesting_depth('{"a": "[[[[{{{", "b": [[1], {"c": "\\"]]"}]}') == 3
    assert nesting_depth("[]") == 1 and nesting_depth('"no brackets"') == 0


@pytest.mark.parametrize("depth, ok", [(MAX_DEPTH, True), (MAX_DEPTH + 1, False), (10**5, False)])
def test_loads_line_takes_up_to_max_depth_levels(depth, ok):
    text = "[" * depth + "]" * depth
    if ok:
        assert loads_line(text) == loads_line(text)  # parses; no RecursionError
    else:
        with pytest.raises(LineError, match=f"nested {depth:,} levels deep; at most {MAX_DEPTH}"):
            loads_line(text)


def test_numbers_that_cannot_be_stored_stand_as_unstorable():
    value = loads_line("[NaN, -Infinity, 1e400, 1e-400, 12, 2.5, " + "9" * 101 + ", " + "9" * 100 + "]")
    assert [type(x).__name__ for x in value] == ["Unstorable"] * 3 + ["float", "int", "float", "Unstorable", "int"]
    assert "NaN is not a JSON number" in value[0].reason
    assert "out of the range of a 64-bit float" in value[2].reason
    assert value[6].reason.startswith("a number of 101 characters")
    assert value[7] == int("9" * 100)


def test_invalid_json_is_a_line_error_with_its_column():
    with pytest.raises(LineError, match="invalid JSON: Expecting value at column 7"):
        loads_line('{"a": }')


def test_find_unstorable_names_every_path():
    value = loads_line('{"ok": 1, "a": [1, {"b": NaN}], "odd key": "x\\u0000", "k\\u0000": 2, "s": "\\udc00"}')
    found = dict(find_unstorable(value, "metadata"))
    # An object's own keys come before what is inside it; otherwise in document order.
    assert list(found) == ["metadata", "metadata.a[1].b", 'metadata["odd key"]', "metadata.s"]
    assert found["metadata"].startswith('key "k\\u0000" contains a NUL')
    assert "lone surrogate (\\udc00) at character 1" in found["metadata.s"]


def test_string_problem_accepts_a_surrogate_pair_and_other_text():
    assert string_problem("é \U0001f600 \u2028 \t") is None
    assert "NUL character (\\u0000) at character 3" in string_problem("ab\x00")
    assert isinstance(Unstorable("x", "y"), Unstorable)


def test_short_cuts_long_values_and_escapes_odd_characters():
    assert short("a" * 100).endswith("... (100 characters)")
    assert short("\ud800\x00") == "'\\ud800\\x00'"
