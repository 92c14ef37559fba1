"""Lightning callbacks that glue estimators and pictures into the loop."""

from lightning_gm.callbacks.density import DensityPictures
from lightning_gm.callbacks.guard import DivergenceGuard
from lightning_gm.callbacks.iwae import IWAEEvaluation
from lightning_gm.callbacks.latent import LatentPictures
from lightning_gm.callbacks.pictures import SamplePictures
from lightning_gm.callbacks.state import RNGStateCheckpoint
from lightning_gm.callbacks.summary import RunSummary
from lightning_gm.callbacks.ais import AISEvaluation
from lightning_gm.callbacks.rbm import RBMPictures
from lightning_gm.callbacks.inpainting import InpaintingEvaluation
from lightning_gm.callbacks.sample_quality import SampleQuality
from lightning_gm.callbacks.decoder_ais import DecoderAISEvaluation
from lightning_gm.callbacks.hopfield import HopfieldPictures

__all__ = [
    "DivergenceGuard", "SamplePictures", "RNGStateCheckpoint", "RunSummary", "DensityPictures", "IWAEEvaluation",
    "LatentPictures", "AISEvaluation", "RBMPictures", "InpaintingEvaluation", "SampleQuality", "DecoderAISEvaluation",
    "HopfieldPictures",
]
