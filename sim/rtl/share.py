"""Share identical modules in Amaranth's Verilog output.

Amaranth writes one Verilog module per instance (``soc.grid.tile_0_1``,
``soc.grid.tile_0_2``, ...), so Verilator compiles the grid's identical
tiles, convolvers and FIFOs as as many different C++ classes.  This pass
keeps one module of each distinct text and points every instance of the
others at it, bottom up (a parent is compared after its children have been
renamed), so identical tiles become instances of one module.

The text of two modules is compared after the one name the Verilog writer
numbers per file (``dump_module$N``, a module-local register) is made
uniform; nothing else is rewritten, so the result is the same design.
"""

import hashlib
import re

__all__ = ["share_modules"]

# A module with the attribute lines before it: attributes, name, the rest.
_MODULE = re.compile(r"^((?:\(\*[^\n]*\*\)\n)*)module (\S+)( ?\(.*?^endmodule\n)", re.S | re.M)
# An instance: the module name (escaped names end at a space), the instance
# name, an open parenthesis.
_INSTANCE = re.compile(r"^(\s*)(\\\S+|\w+)(\s+\S+\s+\()", re.M)
_NUMBERED = re.compile(r"dump_module\$\d+")


#: A shared module at least this long (characters of Verilog) stays a module of
#: its own in Verilator's model (``no_inline_module``): its instances then run
#: one copy of its code, which keeps the model's code small enough for the
#: processor's instruction cache.
SEPARATE = 20_000


def share_modules(text, separate=SEPARATE):
    """``text`` (Verilog from Amaranth) with each set of identical modules
    replaced by one; returns ``(text, modules_before, modules_after)``.
    Shared modules of at least ``separate`` characters are marked for
    Verilator not to inline them."""
    text = _NUMBERED.sub("dump_module$0", text)
    modules = [match.groups() for match in _MODULE.finditer(text)]
    if not modules:
        return text, 0, 0
    # Deeper paths first: a module's children are settled before it.
    order = sorted(modules, key=lambda item: -item[1].count("."))
    same_as, first, kept = {}, {}, {}

    def rename(match):
        name = match.group(2)
        return match.group(1) + same_as.get(name, name) + match.group(3)

    for attributes, name, body in order:
        body = _INSTANCE.sub(rename, body)
        digest = hashlib.sha256(body.encode()).hexdigest()
        if digest in first:
            same_as[name] = first[digest]
        else:
            first[digest] = name
            kept[name] = f"{attributes}module {name}{body}"
    instances = {}
    for name, target in same_as.items():
        instances[target] = instances.get(target, 1) + 1
    for name, count in instances.items():
        if len(kept[name]) >= separate:
            header_end = kept[name].index(");\n") + 3
            kept[name] = kept[name][:header_end] + "  /*verilator no_inline_module*/\n" + kept[name][header_end:]
    head = text[:_MODULE.search(text).start()]
    out = head + "\n".join(kept[name] for _, name, _ in modules if name in kept)
    return out, len(modules), len(kept)
