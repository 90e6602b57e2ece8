"""Loop rolling: a layer's passes as a loop over configuration tables.

The code generator emits every pass of a layer as a :class:`PassCode`: the
instructions in series before its streams start (tile starts, port starts),
those that overlap its streams (the next pass's shadow registers and port
descriptors) and its waits.  Passes whose serial and overlapped code are
configuration writes (``cfgwi``) only, or writes and polls (a weight frame
streamed alone before the data), and whose polls are the same become

.. code-block:: none

        li    r4, TABLE          ; the passes' configuration writes
        li    r5, END            ; the table's end
    loop:
        cfgwt r4                 ; this pass's writes; r4 moves to the next pass's
        wait  ...
        bne   r4, r5, loop

with each pass's writes, in their order, in the table (``cfgwt``,
docs/isa.md): first those before its streams start (the last of which
starts them), then, while they stream, the next pass's registers.  A poll
among the serial writes splits them: the loop runs a ``cfgwt`` for the
writes before it, the poll, and a ``cfgwt`` for the rest.  The
machine sees the same configuration writes in the same order as from the
unrolled code, so a layer of 600 passes costs a few instructions plus its
table, four words per write, as a ``cfgwi`` would be.  An entry costs about
what a ``cfgwi`` does (a beat read instead of an instruction fetch), so each
pass runs one more instruction in series per ``cfgwt`` and the branch.

:func:`roll` returns, beside the lines, what each pass's instruction counts
become (:class:`Added`), so the cost model prices the loop; the code
generator rolls a run only when that costs little time or saves much code.
A pass that starts with a label (a resume point) starts a run, and its label
precedes the run's set-up, so a program resumed there sets the loop's
registers itself.
"""

from typing import NamedTuple

import numpy as np

from neuflow_hdl.isa import TABLE_ENTRY_WORDS, table_entries

from .cost import TABLE_ENTRY

__all__ = ["PassCode", "Added", "roll", "render", "TABLE", "END", "MIN_RUN"]

#: Registers the loops use (the stamps use r1, the status checks r2 and r3).
TABLE, END = "r4", "r5"
#: The shortest run that is rolled.
MIN_RUN = 2


def render(lines):
    """The assembly text of ``lines``: strings, and ``(address, value)`` pairs
    for ``cfgwi`` lines (the code generator keeps its writes as pairs until
    the code is final: a layer's writes mostly become table entries, never text)."""
    return "\n".join(line if isinstance(line, str) else f"    cfgwi {line[0]:#07x}, {line[1]:#x}"
                     for line in lines) + "\n"


class PassCode(NamedTuple):
    """One pass's code: assembly lines (instructions, comments, ``cfgwi`` as
    ``(address, value)`` pairs, and at most a leading label) in its three regions."""
    serial: tuple           #: before the streams start
    overlapped: tuple       #: while they run
    waits: tuple            #: the polls after them

    @property
    def label(self):
        first = self.serial[0] if self.serial else ""
        return first if isinstance(first, str) and first.endswith(":") else None


class Added(NamedTuple):
    """What rolling changes in one pass's instruction counts (in instructions,
    :data:`compiler.cost.TABLE_ENTRY` for an entry)."""
    serial: float = 0
    overlapped: float = 0
    after: float = 0        #: in series after the pass's waits (the loop's branch)


def _instructions(lines):
    return [line for line in lines if not isinstance(line, str) or line.startswith("    ")]


def _segments(lines):
    """``(segments, polls)`` of ``lines`` (``cfgwi`` as pairs or text, and
    ``wait`` instructions): the ``[(address, value)]`` writes between the
    polls, and the polls (one fewer than the segments); None if another
    instruction is among them."""
    segments, polls = [[]], []
    for line in lines:
        if not isinstance(line, str):
            segments[-1].append(line)
        elif line.startswith("    "):
            text = line.strip()
            if text.startswith("wait "):
                polls.append(line)
                segments.append([])
            elif text.startswith("cfgwi "):
                address, value = text[len("cfgwi "):].split(",")
                segments[-1].append((int(address, 0), int(value, 0)))
            else:
                return None
    return segments, tuple(polls)


def _writes(lines):
    """``[(address, value)]`` of the ``cfgwi`` in ``lines``, or None if any
    other instruction is among them."""
    found = _segments(lines)
    return found[0][0] if found is not None and not found[1] else None


class _Pass(NamedTuple):
    code: PassCode
    serial: list            #: its serial writes between polls (a list per segment), or None
    polls: tuple            #: the polls among its serial writes
    overlapped: list        #: its writes while streaming, or None
    waits: tuple            #: its wait instructions

    @property
    def tabular(self):
        return self.serial is not None and self.overlapped is not None

    @property
    def groups(self):
        """The table's groups of writes, one per ``cfgwt``: the serial
        segments, the overlapped writes joining the last."""
        return self.serial[:-1] + [self.serial[-1] + self.overlapped]


def _pass(unit):
    found = _segments(unit.serial)
    serial, polls = found if found is not None else (None, ())
    return _Pass(unit, serial, polls, _writes(unit.overlapped), tuple(_instructions(unit.waits)))


def _runs(units):
    """Consecutive passes that only write (and poll) before and while
    streaming and poll alike, a label only on a run's first."""
    runs = []
    for unit in units:
        p = _pass(unit)
        if runs and p.tabular and runs[-1][-1].tabular and unit.label is None and \
                (p.polls, p.waits) == (runs[-1][-1].polls, runs[-1][-1].waits):
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _plain(run):
    lines = [line for p in run for region in (p.code.serial, p.code.overlapped, p.code.waits)
             for line in region]
    return lines, [Added()] * len(run)


def _added(run):
    """The :class:`Added` of each pass of ``run`` rolled, in instructions: a
    ``cfgwt`` per group of writes and the branch, each write an entry instead
    of a ``cfgwi`` (a skip entry for a group without writes); the set-up (two
    ``li``) before the first."""
    saved = 1 - TABLE_ENTRY
    added = []
    for p in run:
        groups = p.groups
        added.append(Added(serial=len(groups) - saved * sum(map(len, p.serial)) +
                           TABLE_ENTRY * groups.count([]), overlapped=-saved * len(p.overlapped), after=1))
    added[0] = added[0]._replace(serial=added[0].serial + 2)
    return added


def _table(run):
    """Words of the table of ``run``: each pass's groups of writes, the last
    of each marked (a skip entry for a group without writes)."""
    writes, last, skip = [], [], []
    for group in (group for p in run for group in p.groups):
        if not group:
            group = [(0, 0)]
            skip.append(len(writes))
        writes += group
        last.append(len(writes) - 1)
    pairs = np.array(writes, dtype=np.int64).reshape(-1, 2)
    marks = np.zeros((2, len(writes)), dtype=bool)
    marks[0, last] = True
    marks[1, skip] = True
    entries = table_entries(pairs[:, 0], pairs[:, 1], marks[0], marks[1])
    return entries.astype("<u8").view("<u2").astype(np.int64)


def _loop(run, place_table, label):
    """The lines of ``run`` as a loop over its table."""
    words = _table(run)
    assert len(words) % TABLE_ENTRY_WORDS == 0
    table = place_table(words)
    first = run[0]
    lines = [first.code.label] if first.code.label else []
    lines += [f"    li {TABLE}, {table:#x}", f"    li {END}, {table + len(words):#x}", f"{label}:"]
    for poll in first.polls:
        lines += [f"    cfgwt {TABLE}", poll]
    lines += [f"    cfgwt {TABLE}", *first.waits, f"    bne {TABLE}, {END}, {label}"]
    return lines


def roll(units, place_table, prefix, accept=lambda start, added: True):
    """The lines of ``units`` (:class:`PassCode`, in order), runs of
    :data:`MIN_RUN` or more rolled into loops where ``accept(index of the
    run's first unit, its units' Added)`` says so; and the :class:`Added` of
    each unit.  ``place_table(words)`` gives the word address (a multiple of
    4) of a table; loop labels start with ``prefix``."""
    lines, added, start = [], [], 0
    for number, run in enumerate(_runs(units)):
        rolled = _added(run) if len(run) >= MIN_RUN else None
        if rolled is not None and accept(start, rolled):
            more, extra = _loop(run, place_table, f"{prefix}_{number}"), rolled
        else:
            more, extra = _plain(run)
        lines += more
        added += extra
        start += len(run)
    return lines, added
