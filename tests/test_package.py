"""The package surface: ``import fastjmt`` is cheap and every public name resolves."""

import os
import subprocess
import sys

import pytest

import fastjmt


def test_import_loads_no_numerical_library():
    code = ("import sys, fastjmt; heavy = [m for m in ('numpy', 'scipy', 'numba') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert out == ""


@pytest.mark.parametrize("name", fastjmt.__all__)
def test_every_public_name_resolves_to_its_object(name):
    obj = getattr(fastjmt, name)
    assert obj is getattr(fastjmt, name)  # cached after the first look-up
    assert name in dir(fastjmt)
    if name not in ("DEFAULT_WEIGHTS",):
        assert getattr(obj, "__name__", name) == name


def test_simulate_stays_the_function_after_its_module_is_imported():
    import fastjmt.simulation  # noqa: F401  (a submodule import must not shadow the function)

    assert callable(fastjmt.simulate) and fastjmt.simulate.__module__ == "fastjmt.simulation"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_thing'"):
        fastjmt.not_a_thing


def test_ruff_finds_nothing():
    """The linter (ruff, in the ``test`` extra; settings in pyproject.toml) passes on the package, tests,
    benchmarks and docs examples."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "fastjmt", "tests", "benchmarks", "docs"],
                          cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_module_is_on_the_map_of_the_code():
    """docs/architecture.md names every module of the package (the map must not fall behind the code)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "architecture.md"), encoding="utf-8") as fh:
        text = fh.read()
    missing = []
    for folder, _, files in os.walk(os.path.join(root, "fastjmt")):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
                if f"`{rel}`" not in text and not (name == "__init__.py" and "kernels" in rel):
                    missing.append(rel)
    assert not missing, missing
