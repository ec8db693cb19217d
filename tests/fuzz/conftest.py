"""Every test in this folder is property-based (Hypothesis) and carries the `fuzz` marker."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/fuzz/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.fuzz)
