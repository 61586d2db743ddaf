"""The IGGT network: nn.Modules only (loading and saving checkpoints is `iggt.loading`)."""
from .iggt import IGGT, Predictions

__all__ = ["IGGT", "Predictions"]
