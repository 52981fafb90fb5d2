"""Pure linen modules: the CycleGAN generator and discriminator (and, alongside, the classifier)."""

from xrayjax.models.classifier import ResNetClassifier
from xrayjax.models.discriminator import PatchDiscriminator
from xrayjax.models.generator import ResnetGenerator

__all__ = ["PatchDiscriminator", "ResNetClassifier", "ResnetGenerator"]
