"""hpgen: diverse video generation from a single video (HP-VAE-GAN, SinGAN-GIF, VGPNN)."""
__version__ = "0.1.0"
