"""Progress bars: every long run shows one on stderr (tqdm), and none when asked to be quiet."""
from __future__ import annotations

import sys


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "tok"):
    """A tqdm bar on stderr (disabled: a no-op with the same interface)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                leave=False)
