"""The IGGT network: nn.Modules only (loading and saving checkpoints is `iggt.loading`)."""
from .iggt import IGGT, Predictions
from .track_modules import TrackOutput

__all__ = ["IGGT", "Predictions", "TrackOutput"]
