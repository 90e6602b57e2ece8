"""The documentation names what the code defines (docs/config-map.md, docs/isa.md later)."""

from pathlib import Path

import pytest

from neuflow_hdl.regs import (ALU_CONFIG, CONV_CONFIG, GRID_STATUS, STATUS, AluOp, ConvMode, Symmetry,
                              Unit, router_sinks, router_sources)

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def config_map():
    return (DOCS / "config-map.md").read_text()


def test_config_map_names_every_field(config_map):
    for layout in (CONV_CONFIG, ALU_CONFIG, STATUS, GRID_STATUS):
        for name, _ in layout:
            if not name.startswith("reserved"):
                assert f"`{name}`" in config_map, name
    for enum in (Unit, ConvMode, AluOp, Symmetry):
        for member in enum:
            assert f"`{member.name}`" in config_map, member


def test_config_map_names_every_router_port(config_map):
    for name in router_sources(1, 1) + router_sinks(1, 1):
        assert f"`{name}`" in config_map, name


def test_host_link_doc_names_every_code():
    from neuflow_hdl.hostlink import MAX_WORDS, STATUS_BYTES, SYNC_COMMAND, SYNC_REPLY, Command, Reply, RunState
    text = (DOCS / "hostlink.md").read_text()
    for enum in (Command, Reply, RunState):
        for member in enum:
            assert f"`{member.name}`" in text, member
            assert (f"{member.value:#04x}" if enum is not RunState else f"`{member.name}` {member.value}") in text
    for name, value in (("SYNC_COMMAND", SYNC_COMMAND), ("SYNC_REPLY", SYNC_REPLY)):
        assert f"`{name}` = {value:#04X}".replace("0X", "0x") in text
    assert f"`MAX_WORDS` ({MAX_WORDS})" in text and f"`STATUS_BYTES` ({STATUS_BYTES})" in text
