"""The IGGT network (nn.Modules only) and the loading of its checkpoints."""
from .checkpoint import CheckpointError, LoadReport, load_checkpoint_file, load_model
from .iggt import IGGT, Predictions

__all__ = ["IGGT", "Predictions", "load_model", "load_checkpoint_file", "LoadReport", "CheckpointError"]
