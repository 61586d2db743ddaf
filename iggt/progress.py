"""The progress callback that every long step accepts: ``progress(fraction, message)``, the
fraction in [0, 1] of the step done so far and a short text for the user (a CLI bar, the app)."""
from __future__ import annotations

from typing import Callable

Progress = Callable[[float, str], None]
