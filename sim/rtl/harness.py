"""The fast simulation build: the processor on Verilator under a C++ main.

:func:`harness_build` elaborates :class:`neuflow_hdl.soc.SimTop` for a grid
preset, shares its identical modules (:mod:`sim.rtl.share`), writes its
registers in clocked blocks (:mod:`sim.rtl.clocked`) and compiles it
with ``harness.cpp`` (the clock, the reset and the external memory, in C++)
into one executable.  Builds are cached under ``build/harness`` by a key made
of everything the executable depends on: the gateware's sources, the preset,
the harness, the tools' versions and the options.  A cached build is found
without elaborating the design.

:func:`run_harness` runs an image on it in a subprocess: no Python, VPI or
cocotb in the run.
"""

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from neuflow_hdl.presets import preset

from .clocked import clocked_registers
from .share import share_modules
from .verilator import BUILD_ROOT, lz4_library, verilator_env

__all__ = ["HarnessBuild", "harness_build", "run_harness", "read_dump", "HarnessRun", "HarnessError"]

HARNESS = Path(__file__).resolve().parent / "harness.cpp"
GATEWARE = Path(__file__).resolve().parents[2] / "neuflow_hdl"

#: Verilator options (Amaranth's output has expected width warnings).
OPTIONS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT", "-O3",
           "--x-assign", "fast", "--x-initial", "fast", "--noassert"]
#: The C++ compiler's optimisation of the model (-march=native measured 1-3% faster: not worth
#: a build that only runs on the machine that made it).
CXX_OPT = "-O2"
#: Profile-guided optimisation: the model is compiled instrumented, runs the
#: three-layer pipeline program this many times, and is compiled again with the
#: profile (measured 1.8x faster on neuflow-v6; see docs/architecture.md).
PGO_REPEAT = 4


class HarnessError(RuntimeError):
    """The harness could not be built or refused the run."""


@dataclass(frozen=True)
class HarnessBuild:
    grid: str
    executable: Path
    word_bits: int
    memory_words: int
    build_seconds: float        #: wall time of the build (when it was made, if it was cached)
    modules: tuple              #: (modules written by Amaranth, modules after sharing)
    cached: bool                #: found built


@dataclass(frozen=True)
class HarnessRun:
    halted: bool
    halt_code: int
    cycles: int                 #: the processor's cycle counter at halt
    steps: int                  #: clock cycles simulated (reset and the cycles after halt included)
    seconds: float              #: wall time of the simulation loop alone
    dump: Path                  #: the memory after halt, raw words
    fault: str


def harness_build(grid="tiny", *, waves=False, threads=1, jobs=None, quiet=False):
    """The fast executable for the preset ``grid`` (built once, then cached).

    ``waves``: an FST-tracing build (``+trace=FILE``); ``threads``: Verilator's
    model threads; ``jobs``: parallel C++ compiles (default: every core)."""
    config = preset(grid)
    name = f"soc_{grid.replace('-', '_')}"
    variant = ("-fst" if waves else "") + (f"-t{threads}" if threads > 1 else "")
    folder = cached_folder("harness", name + variant, [HARNESS.read_bytes(), Path(__file__).read_bytes(),
                                                       repr(config).encode(), repr((waves, threads)).encode()])

    def build():
        if not quiet:
            print(f"harness: building {grid} in {folder}", file=sys.stderr)
        return {"modules": _compile(config, name, folder, waves, threads, jobs or os.cpu_count() or 1)}

    record, cached = cached_build(folder, build)
    return HarnessBuild(grid, folder / "Vtop", config.fmt.width, config.memory_words, record["seconds"],
                        tuple(record["modules"]), cached)


def cached_build(folder, build):
    """Run ``build()`` (which returns a record, a dict) once for ``folder``,
    under a lock that parallel workers share; ``(record, cached)``, the record
    with the build's wall time as ``seconds``."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = folder / "build.json"
        if info.exists():
            return json.loads(info.read_text()), True
        started = time.monotonic()
        record = dict(build(), seconds=time.monotonic() - started)
        info.write_text(json.dumps(record))
    return record, False


def _compile(config, name, folder, waves, threads, jobs):
    """Verilate the top, then compile it: twice with a training run between
    (profile-guided) unless it is a tracing build."""
    from neuflow_hdl.soc import SimTop

    defines = [f"-DBEAT_WORDS={config.beat_words}", f"-DWORD_BITS={config.fmt.width}",
               f"-DMEMORY_WORDS={config.memory_words}ull", f"-DRESET_CYCLES={SimTop.RESET_CYCLES}"]
    command, modules = verilate_command(SimTop(config), name, folder, HARNESS, defines, threads=threads,
                                        waves=waves)
    log = folder / "build.log"
    training = None if waves else _training_image(config)
    with open(log, "w") as out:
        _step(command, folder, out, log, name)
        if training is None:
            _make(folder, jobs, "", out, log, name)
        else:
            _make(folder, jobs, "-fprofile-generate", out, log, name)
            _train(config, training, folder, out, log, name)
            for built in (folder / "obj").glob("*"):
                if built.suffix in (".o", ".a", ".gch"):
                    built.unlink()
            _make(folder, jobs, "-fprofile-use -fprofile-correction -Wno-missing-profile", out, log, name)
    return modules


def verilate_command(top, name, folder, main, defines, *, threads=1, waves=False):
    """Write the Verilog of the component ``top`` into ``folder`` (identical
    modules shared, registers assigned in clocked blocks: :mod:`sim.rtl.clocked`)
    and return the Verilator command that builds it with the C++ ``main`` and
    the ``-D`` ``defines``, and the module counts ``[written by Amaranth,
    after sharing]``."""
    from amaranth.back import verilog

    text = verilog.convert(top, name=name, emit_src=False)
    text, before, after = share_modules(text)
    text, _ = clocked_registers(text)
    source = folder / f"{name}.v"
    source.write_text(text)
    root = verilator_env()
    command = [str(root / "bin" / "verilator"), "--cc", "--exe",
               "--top-module", name, "--prefix", "Vtop", "--Mdir", str(folder / "obj"), "-o", str(folder / "Vtop"),
               *OPTIONS, "-CFLAGS", " ".join(defines), "-CFLAGS", "-std=c++17",
               "--output-split", "20000", "--output-split-cfuncs", "2000"]
    if threads > 1:
        command += ["--threads", str(threads)]
    if waves:
        lz4 = lz4_library()
        command += ["--trace-fst", "-CFLAGS", f"-I{lz4}", "-LDFLAGS", f"-L{lz4}"]
    return command + [str(source), str(main)], [before, after]


def build_plain(command, folder, jobs, name):
    """Run the Verilator ``command`` and compile its C++ without a profile (log: ``folder/build.log``)."""
    log = folder / "build.log"
    with open(log, "w") as out:
        _step(command, folder, out, log, name)
        _make(folder, jobs, "", out, log, name)


def cached_folder(kind, name, parts):
    """``build/harness/<name>-<key>``: the build folder of a model made from the bytes ``parts``
    (with the gateware's sources and the tools' versions)."""
    parts = list(parts) + [metadata.version("amaranth").encode(), metadata.version("verilator").encode(),
                           repr((OPTIONS, CXX_OPT)).encode(), (Path(__file__).parent / "share.py").read_bytes(),
                                                   (Path(__file__).parent / "clocked.py").read_bytes()]
    parts += [path.read_bytes() for path in sorted(GATEWARE.glob("*.py"))]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return BUILD_ROOT / kind / f"{name}-{digest.hexdigest()[:16]}"


def _training_image(config):
    """The profiling run's memory image: the three-layer pipeline program, or
    None on a grid too small for it (then the build is not profile-guided)."""
    from .pipeline_program import three_layer_pipeline

    try:
        return three_layer_pipeline(config, np.random.default_rng(1), repeat=PGO_REPEAT).image
    except ValueError:
        return None


def _step(command, folder, out, log, name):
    out.write("$ " + " ".join(command) + "\n")
    out.flush()
    done = subprocess.run(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        out.flush()
        raise HarnessError(f"the build of {name} failed; see {log}:\n" + log.read_text()[-3000:])


def _make(folder, jobs, profile, out, log, name):
    """Compile Verilator's C++ and the harness; ``profile``: the compiler's
    profile-guided-optimisation flags (also given to the linker)."""
    _step(["make", "-s", "-j", str(jobs), "-C", str(folder / "obj"), "-f", "Vtop.mk",
           f"OPT_FAST={CXX_OPT} {profile}", "OPT_SLOW=-O1", f"OPT_GLOBAL=-O2 {profile}",
           f"LDFLAGS={profile}", "CFG_CXXFLAGS_PCH_I=-include"], folder, out, log, name)


def _train(config, image, folder, out, log, name):
    """The profiling run of ``image``, checked to halt."""
    build = HarnessBuild(name, folder / "Vtop", config.fmt.width, config.memory_words, 0.0, (), False)
    with tempfile.TemporaryDirectory(dir=folder) as work:
        run = run_harness(build, image, work)
    out.write(f"training run: {run.cycles} cycles in {run.seconds:.2f} s, halted {run.halted}\n")
    if not run.halted or run.fault:
        raise HarnessError(f"the training run of {name} did not halt ({run.fault or 'no halt'}); see {log}")


def _word_dtype(build):
    """The file format of the harness's image and dump: little-endian words of 2
    bytes up to 16 bits, else 4 (as ``harness.cpp`` reads and writes them)."""
    return np.dtype("<u2") if build.word_bits <= 16 else np.dtype("<u4")


def read_dump(build, path):
    """The memory a run of ``build`` dumped to ``path``, as unsigned words."""
    return np.fromfile(path, dtype=_word_dtype(build)).astype(np.int64)


def run_harness(build, image, work, *, latency=2, jitter=0, seed=1, max_cycles=50_000_000, trace=None):
    """Run ``image`` (unsigned memory words from address 0) on ``build`` in the
    folder ``work``; returns a :class:`HarnessRun` (its ``dump`` is in ``work``)."""
    work = Path(work)
    np.asarray(image).astype(_word_dtype(build)).tofile(work / "image.bin")
    command = [str(build.executable), f"+image={work / 'image.bin'}", f"+dump={work / 'dump.bin'}",
               f"+latency={int(latency)}", f"+jitter={int(jitter)}", f"+seed={int(seed)}",
               f"+max_cycles={int(max_cycles)}"]
    if trace is not None:
        command.append(f"+trace={trace}")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise HarnessError(f"the simulation of {build.grid} failed (exit {done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return HarnessRun(halted=bool(result["halted"]), halt_code=int(result["halt_code"]),
                      cycles=int(result["cycles"]), steps=int(result["steps"]), seconds=float(result["seconds"]),
                      dump=work / "dump.bin", fault=result["fault"])
