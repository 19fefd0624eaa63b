"""Package discovery for graphc; everything else is in pyproject.toml.

The source directories install under other names ([tool.setuptools.package-dir] in
pyproject.toml: graphc/ -> graphc, backends/ -> graphc.backends, models/ -> graphc.models),
which pyproject's ``packages.find`` cannot express (it names a package by its path), so the
packages are found here: every directory with an ``__init__.py`` under each mapped
directory, named under its package. A new subpackage needs no edit here
(tests/test_packaging.py checks that).
"""
import os

from setuptools import find_packages, setup

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

HERE = os.path.dirname(os.path.abspath(__file__))


def package_dirs() -> dict:
    """{package name: source directory} from pyproject.toml."""
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as f:
        return dict(tomllib.load(f)["tool"]["setuptools"]["package-dir"])


def find_all(dirs=None) -> list:
    """Every package of the mapped directories, by its installed name."""
    dirs = package_dirs() if dirs is None else dirs
    packages = []
    for name, src in dirs.items():
        packages.append(name)
        packages += [f"{name}.{p}" for p in find_packages(os.path.join(HERE, src))]
    # a mapped directory inside another (none today) would be found twice
    return sorted(set(packages))


if __name__ == "__main__":
    setup(packages=find_all())
