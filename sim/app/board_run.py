"""A compiled network on a board through the host link: ``neuflow board run``.

Each image: its memory image is written to the board, the processor started
and waited for, and the memory read back; the output, the per-layer cycle
stamps and a layer-by-layer comparison with the reference engine come from
that memory, as on the simulated engines (:mod:`sim.app.verify`).
"""

from boards.link import BoardLink, LinkError
from compiler import CompileError
from compiler.accuracy import run_reference
from compiler.artefacts import as_batch, first_mismatch, input_image, layer_cycles, read_output
from neuflow_hdl.hostlink import RunState, identity
from neuflow_hdl.presets import preset

from .verify import ImageRun, Verification, input_saturation

__all__ = ["run_on_board"]


def _check_board(link, manifest, words):
    """The board carries the network's grid and holds its image; CompileError otherwise."""
    status = link.status()
    want = identity(preset(manifest["grid"]))
    if status.identity != want:
        carried = status.grid
        raise CompileError(f"{link.port}: the board carries the "
                           f"{carried + ' grid' if carried else f'grid with identity {status.identity:#010x}'}"
                           f"; the network was compiled for {manifest['grid']}")
    if words > status.memory_words:
        raise CompileError(f"{link.port}: the network's image needs {words} words; the board's memory "
                           f"holds {status.memory_words}")
    if status.state == RunState.RUNNING:
        link.stop()


def _run_image(link, manifest, img, n, seconds):
    link.write(0, img)
    link.start()
    status = link.wait(seconds)
    if status.state == RunState.FAULT:
        raise CompileError(f"image {n}: the board halted with code {status.halt_code:#x}")
    memory = link.read(0, len(img))
    reference = run_reference(img, preset(manifest["grid"]))
    return ImageRun(read_output(memory, manifest), memory, status.cycles, tuple(layer_cycles(memory, manifest)),
                    first_mismatch(reference, memory, manifest))


def run_on_board(manifest, image, x, port, *, baud, timeout=5.0, run_seconds=60.0, strict=False, progress=None):
    """Run every input of ``x`` (N, ...) on the board at ``port`` (a pyserial
    port or URL); a :class:`~sim.app.verify.Verification` with engine ``board``.
    ``timeout``: seconds a reply may take; ``run_seconds``: a run's limit."""
    x = as_batch(x, manifest["input"]["onnx_shape"])
    saturated = input_saturation(x, manifest, strict)
    runs = []
    try:
        with BoardLink(port, baud=baud, timeout=timeout) as link:
            _check_board(link, manifest, len(image))
            for n in range(x.shape[0]):
                runs.append(_run_image(link, manifest, input_image(image, manifest, x[n]), n, run_seconds))
                if progress:
                    progress(1)
    except LinkError as exc:
        raise CompileError(str(exc)) from None
    return Verification("board", manifest, tuple(runs), saturated)
