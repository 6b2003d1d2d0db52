"""Training losses shared by methods: Gaussian SSIM, VGG16 perceptual loss (and its trunk loader), LSGAN."""
from .gan import lsgan_d_loss, lsgan_g_loss, noisy_labels  # noqa: F401
from .perceptual import VGGPerceptualLoss  # noqa: F401
from .ssim import SSIM, ssim_map  # noqa: F401
from .vgg import VGG16_ENV, load_vgg16_features  # noqa: F401
