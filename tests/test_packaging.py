"""Packaging: the packages setuptools finds are every package of the source tree (a new
subpackage cannot be forgotten), and a wheel built from this tree holds them, the package
data and the entry points, and imports from outside the tree."""
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_module():
    spec = importlib.util.spec_from_file_location("graphc_setup", os.path.join(ROOT, "setup.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)      # setup() runs only as __main__
    return mod


def _packages_on_disk(dirs):
    """Every directory with an __init__.py under each mapped directory, by the name it
    installs as."""
    found = set()
    for name, src in dirs.items():
        base = os.path.join(ROOT, src)
        for here, subdirs, files in os.walk(base):
            subdirs[:] = [d for d in subdirs if d != "__pycache__"]
            if "__init__.py" in files:
                rel = os.path.relpath(here, base)
                found.add(name if rel == "." else f"{name}.{rel.replace(os.sep, '.')}")
    return found


def test_package_dirs_are_the_design_mapping():
    dirs = _setup_module().package_dirs()
    assert dirs == {"graphc": "graphc", "graphc.backends": "backends",
                    "graphc.models": "models"}


def test_found_packages_cover_every_package_directory():
    setup = _setup_module()
    dirs = setup.package_dirs()
    found = set(setup.find_all())
    on_disk = _packages_on_disk(dirs)
    assert on_disk - found == set(), "packages setuptools would leave out of a wheel"
    assert found - on_disk == set()
    assert {"graphc.passes", "graphc.lower", "graphc.backends.numba_cpu",
            "graphc.backends.cupy_gpu", "graphc.models"} <= found


@pytest.mark.slow       # builds a wheel with pip (~5 CPU s)
def test_wheel_holds_every_package_and_imports_outside_the_tree(tmp_path):
    """Build a wheel (``pip wheel --no-deps --no-build-isolation``, a few seconds) from a
    copy of the sources; unpack it and import every package from there, in a directory
    outside the source tree."""
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    for d in _setup_module().package_dirs().values():
        shutil.copytree(os.path.join(ROOT, d), src / d, ignore=ignore)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
                         capture_output=True, text=True, cwd=tmp_path)
    if out.returncode != 0 and "No module named" in out.stderr and "setuptools" in out.stderr:
        pytest.skip(f"cannot build without isolation here: {out.stderr[-300:]}")
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("graphc-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
                              ).decode()
    packages = {os.path.dirname(n).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packages == _packages_on_disk(_setup_module().package_dirs())
    assert "graphc/backends/cupy_gpu/cuda_emu.h" in names
    assert "[graphc.backends]" in entry_points and "numba = graphc.backends.numba_cpu" \
        in entry_points
    assert "graphc = graphc.cli:main" in entry_points

    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, os.path.join(ROOT, ".ci", "wheel_smoke.py"),
                          "--imports-only", "--source-tree", ROOT],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert str(site) in run.stdout
