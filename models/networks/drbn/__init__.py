"""DRBN (deep recursive band network, CVPR 2020): stage-1 network, stage-2 band recomposition, discriminator."""
from .discriminator import BandDiscriminator, with_sorted_channels  # noqa: F401
from .drbn import DRBN, BandUnit  # noqa: F401  (registers 'DRBN')
from .recompose import BandRecomposer, DRBNRecompose, bands_from_drbn  # noqa: F401  (registers 'DRBNRecompose')
