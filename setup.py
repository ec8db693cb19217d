"""Package discovery for the three source roots installed under one namespace.

The library lives in src/embedpipe; the KFP components, the pipelines and the example data live at the
top level (as the design card asks) but install inside the same namespace (`embedpipe.components`,
`embedpipe.pipelines`, `embedpipe.examples`). Every package under each root is found here, so a new
module cannot be left out of the wheel (tests/installed/test_wheel.py checks the built wheel).
Everything else about the project is in pyproject.toml.
"""

from setuptools import find_packages, setup

ROOTS = {
    "embedpipe": "src/embedpipe",
    "embedpipe.components": "components",
    "embedpipe.pipelines": "pipelines",
    "embedpipe.examples": "examples",
}


def discover() -> list[str]:
    packages = []
    for name, folder in ROOTS.items():
        packages.append(name)
        packages.extend(f"{name}.{sub}" for sub in find_packages(folder))
    return sorted(packages)


setup(packages=discover(), package_dir=ROOTS)
