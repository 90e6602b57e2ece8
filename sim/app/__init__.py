"""Applications: the ``neuflow`` command, the verify loop, partitioned and
parallel runs, the demo and the benches.  The top layer: it may import
everything below, nothing imports it."""
