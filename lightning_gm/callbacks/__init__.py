"""Lightning callbacks that glue estimators and pictures into the loop."""

from lightning_gm.callbacks.guard import DivergenceGuard
from lightning_gm.callbacks.pictures import SamplePictures
from lightning_gm.callbacks.state import RNGStateCheckpoint
from lightning_gm.callbacks.summary import RunSummary

__all__ = ["DivergenceGuard", "SamplePictures", "RNGStateCheckpoint", "RunSummary"]
