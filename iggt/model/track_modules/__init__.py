"""Parts of the released point tracker: sampling and codes, correlation pyramid, update transformer, tracker."""
from .tracker import Tracker, TrackOutput

__all__ = ["Tracker", "TrackOutput"]
