"""Registers written where they are clocked, for the simulation build.

Amaranth's Verilog computes every register's next value in a combinational
block and copies it on the clock edge::

    always @(posedge clk)
      count <= \\$12 ;
    always @* begin
      if (\\$auto$verilog_backend.cc:2355:dump_module$0 ) begin end
      \\$12  = count;
      if (en) begin
        \\$12  = \\$11 ;
      end
      if (rst) begin
        \\$12  = 4'h0;
      end
    end

Verilator evaluates such a block on every clock edge, the hold copy
included, however rarely the register changes, which is most of the
harness's time on a grid whose tiles are mostly idle.  :func:`clocked_registers`
rewrites each pair into the equivalent clocked block, in which the register
keeps its value unless a branch that is taken assigns it::

    always @(posedge clk) begin
      if (en) begin
        count <= \\$11 ;
      end
      if (rst) begin
        count <= 4'h0;
      end
    end

The two are the same logic: the block's statements assign the next-value
variables only (it reads none of them), so the last assignment of each bit
in the block's order wins in both (blocking assignments to the variable, or
non-blocking ones to the register).  A block is rewritten only when that
holds and when each next-value variable is used nowhere but in the block,
its declaration and its register's copy; any other block is left as it is.
"""

import re

__all__ = ["clocked_registers"]

#: A register's copy on the clock edge: ``always @(posedge clk)`` and ``X <= \$N ;`` on the next line.
_COPY = re.compile(r"^  always @\(posedge clk\)\n    (?P<reg>\S+ ?) <= (?P<next>\\\$\d+ );\n", re.M)
#: A combinational block, from its first line to its ``end`` at the same indentation.
_BLOCK = re.compile(r"^  always @\* begin\n(?P<body>(?:    .*\n|\n)*?)  end\n", re.M)
#: An assignment statement: the target (an identifier, optionally a part select) and the value.
_ASSIGN = re.compile(r"^(?P<indent> +)(?P<target>\\\S+ |[A-Za-z_][\w$]*)(?P<part> ?\[[^\]]+\])? = (?P<value>.*);$")
_TOKEN = re.compile(r"\\\$\d+ ")             #: a next-value variable's name (Yosys's \$N)
_KICK = "if (\\$auto$verilog_backend.cc:"       #: the line that runs a block at time 0


def clocked_registers(text):
    """``text`` (Verilog from Amaranth) with every register whose next value
    has a combinational block of its own assigned in a clocked block instead;
    returns ``(text, registers rewritten)``."""
    out, done, start = [], 0, 0
    for module in re.finditer(r"^module .*?^endmodule\n", text, re.M | re.S):
        out.append(text[start:module.start()])
        body, count = _module(module.group(0))
        out.append(body)
        done += count
        start = module.end()
    out.append(text[start:])
    return "".join(out), done


def _module(text):
    copies = {m.group("next"): m for m in _COPY.finditer(text)}
    if not copies:
        return text, 0
    uses = {}
    for token in _TOKEN.findall(text):
        uses[token] = uses.get(token, 0) + 1
    edits, registers = [], 0        # edits: (start, end, replacement)
    for block in _BLOCK.finditer(text):
        rewritten = _rewrite(block.group("body"), copies, uses)
        if rewritten is None:
            continue
        lines, targets = rewritten
        edits.append((block.start(), block.end(), "  always @(posedge clk) begin\n" + lines + "  end\n"))
        edits += [(copies[t].start(), copies[t].end(), "") for t in targets]
        registers += len(targets)
    edits.sort()
    out, at = [], 0
    for begin, end, replacement in edits:
        out += [text[at:begin], replacement]
        at = end
    out.append(text[at:])
    return "".join(out), registers


def _rewrite(body, copies, uses):
    """The clocked form of a combinational block's ``body``, and the next-value
    variables it assigned; None when the block is not one register's next value."""
    lines, targets, assigned = [], set(), {}
    for line in body.splitlines():
        if line.strip().startswith(_KICK):
            continue
        match = _ASSIGN.match(line)
        if match is None:
            if any(token in copies for token in _TOKEN.findall(line)):
                return None          # a next value read in a condition
            lines.append(line)
            continue
        target = match.group("target")
        if target not in copies:
            return None              # the block computes something else
        value = match.group("value")
        if any(token in copies for token in _TOKEN.findall(value + " ")):
            return None              # it reads a next value
        register = copies[target].group("reg")
        targets.add(target)
        assigned[target] = assigned.get(target, 0) + 1
        if match.group("part") is None and value.rstrip() == register.rstrip():
            continue                 # the hold: a register keeps its value anyway
        lines.append(f"{match.group('indent')}{register}{match.group('part') or ''} <= {value};")
    if not targets:
        return None
    # Used nowhere else: its declaration, the block's assignments and the copy.
    if any(uses.get(t, 0) != assigned[t] + 2 for t in targets):
        return None
    return "".join(line + "\n" for line in lines), targets
