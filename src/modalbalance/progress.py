"""When tqdm progress bars are shown."""

from __future__ import annotations

import logging


def bar_disable(enabled: bool = True) -> bool | None:
    """Return the ``disable`` argument for a tqdm bar.

    True hides the bar: when ``enabled`` is false, or when the ``modalbalance``
    logger is quieter than INFO (the ``-q`` option). Otherwise None, which lets
    tqdm show the bar only when its output stream is a terminal, so that logs
    redirected to a file get no bar fragments.
    """
    if not enabled or not logging.getLogger("modalbalance").isEnabledFor(logging.INFO):
        return True
    return None
