"""Progress bars of the applications (tqdm, drawn on a terminal only)."""

from contextlib import contextmanager

from tqdm import tqdm

__all__ = ["layer_bar", "image_bar"]


@contextmanager
def layer_bar(desc=None, *, quiet=False):
    """A bar over a compile's layers; yields the ``progress(done, total)``
    callback that :func:`compiler.pipeline.compile_model` (``layer_done``) and
    :func:`compiler.pipeline.estimate_model` take."""
    with tqdm(desc=desc, unit="layer", leave=False, disable=True if quiet else None) as bar:
        def advance(done, total):
            bar.total = total
            bar.update(done - bar.n)
        yield advance


def image_bar(total, *, desc=None, quiet=False, unit="image"):
    """A bar over the images (or other ``unit`` s: pieces) of a run (none with
    ``quiet`` or for one); its ``update`` is the verify loop's per-image
    ``progress``."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False,
                disable=True if quiet or total < 2 else None)
