"""The house's layers (docs/architecture.md): each imports only the layers below
it, checked by import-linter's contracts in pyproject.toml."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency (pyproject.toml)"
    run = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout, run.stdout[-2000:]


def test_search_score_is_the_reported_estimate(tmp_path):
    """The blocking search keeps the trial whose emitted code the cost model
    finds cheapest, and the layer reports exactly that figure: re-emitting the
    chosen passes from the same start gives the reported cycles."""
    from compiler.codegen import CodeGen, WeightFrames
    from compiler.cost import pass_cycles
    from compiler.layout import DATA_BASE, allocate, plan_buffers
    from compiler.lower import lower_node
    from compiler.pipeline import _frontend, _stamp_table
    from compiler.program import schedule_layer
    from compiler.quantise import quantise
    import numpy as np
    from onnx_models import every_operator, save
    front = _frontend(save(every_operator(np.random.default_rng(0)), tmp_path), "tiny")
    g, config = front.graph, front.config
    q = quantise(g, config)
    buffers = plan_buffers(g, q.formats, config)
    end = allocate(buffers, DATA_BASE)
    gen = CodeGen(config, _stamp_table(DATA_BASE, len(g.nodes)), WeightFrames(end))
    replay = gen.fork()
    for node in g.nodes:
        window = (buffers[node.output].base, buffers[node.output].size)
        code = schedule_layer(gen, node.name, lower_node(node, g, buffers, config, q), config, window)
        costs = replay.emit_layer(node.name, list(code.passes))
        assert code.pass_cycles == tuple(pass_cycles(c) for c in costs)
    assert gen.lines == replay.lines
