"""LightningDataModules (MNIST family, binarised MNIST, 8x8 digits, 2-D toys) and their file handling."""

from lightning_gm.data import modules
from lightning_gm.data.files import DATA_ENV, ensure_file, read_amat, read_idx, resolve_data_root
from lightning_gm.data.modules import (
    BinarizedMNISTDataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    GenerativeDataModule,
    ImageDataModule,
    MNISTDataModule,
    Toy2DDataModule,
)

# the data modules are listed once, in modules.__all__
__all__ = ["DATA_ENV", "ensure_file", "read_amat", "read_idx", "resolve_data_root", *modules.__all__]
