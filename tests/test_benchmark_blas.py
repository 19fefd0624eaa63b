"""The BLAS report every benchmark prints first (graphc.timing.blas_report): it names the
library and the kernel this process runs, and warns loudly when an environment variable
forces the kernel or the kernel is narrower than the CPU (issue 17: a run under
OPENBLAS_CORETYPE=Haswell compared graphc on AVX2 GEMMs with peers on AVX-512 ones)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from graphc import timing

ROOT = Path(__file__).resolve().parents[1]
# every benchmark script (plot.py draws charts; it times nothing)
SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py")
                 if p.stem not in ("plot", "turns"))     # helpers, not benchmarks


def this_process_kernel():
    libs = timing.blas_libraries()
    if not libs:
        pytest.skip("threadpoolctl finds no BLAS in this process")
    return libs[0]


def test_report_names_library_version_and_kernel():
    lib = this_process_kernel()
    first = timing.blas_report().splitlines()[0]
    assert first.startswith("BLAS: ")
    assert f"{lib['internal_api']} {lib['version']}" in first
    assert f"kernel {lib['architecture']}" in first


def test_a_benchmark_run_prints_the_kernel_first():
    """A real (tiny) run of the layer benchmark: its first line is the BLAS report of the
    environment it runs in, the same kernel threadpoolctl reports here."""
    lib = this_process_kernel()
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transformer_layer.py"),
                          "--seq", "32", "--peers", "gemm-floor", "--repeat", "1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    first = res.stdout.splitlines()[0]
    assert re.fullmatch(r"BLAS: .*\(kernel \S+, \d+ threads, .*\)", first), first
    assert f"kernel {lib['architecture']}" in first
    assert "gemm-floor" in res.stdout


def test_the_scripts_are_found():
    assert {"transformer_layer", "deepseek_v2", "threads", "onnx_models"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_script_prints_the_report(script):
    text = (ROOT / "benchmarks" / f"{script}.py").read_text()
    assert "blas_report()" in text, f"benchmarks/{script}.py does not print blas_report()"


@pytest.mark.parametrize("var", timing.BLAS_KERNEL_ENV)
def test_a_variable_that_forces_the_kernel_is_a_loud_warning(monkeypatch, var):
    for v in timing.BLAS_KERNEL_ENV:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv(var, "Haswell")
    text = timing.blas_report()
    assert f"WARNING: {var}=Haswell forces the BLAS kernel" in text
    assert f"env -u {var}" in text
    lines = text.splitlines()       # BLAS line, the GEMM graphc uses, then the warning
    assert lines[1].startswith("GEMM (graphc numba): ")
    assert lines[2] == "!" * 78


def test_a_narrow_kernel_on_a_wide_cpu_is_a_warning(monkeypatch):
    for v in timing.BLAS_KERNEL_ENV:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(timing, "cpu_isa", lambda: "avx512")
    libs = [{"internal_api": "openblas", "architecture": "Haswell"}]
    assert timing.blas_warnings(libs) == [
        "OpenBLAS runs its Haswell kernel (avx2) on a CPU with avx512: GEMMs run below "
        "this machine's peak"]
    same = [{"internal_api": "openblas", "architecture": "SkylakeX"}]
    assert timing.blas_warnings(same) == []
    monkeypatch.setattr(timing, "cpu_isa", lambda: "avx2")
    assert timing.blas_warnings(libs) == []          # AVX2 is all an AVX2 CPU has


def test_no_warning_without_a_reason(monkeypatch):
    for v in timing.BLAS_KERNEL_ENV:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(timing, "cpu_isa", lambda: None)
    assert "WARNING" not in timing.blas_report()


def test_cpu_isa_reads_the_flags():
    isa = timing.cpu_isa()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        assert isa is None
        return
    if " avx512f" in flags:
        assert isa == "avx512"
    elif " avx2" in flags:
        assert isa == "avx2"
