"""The models a benchmark run trains: trunks (the small image and feature trunks, torchvision's
and timm's models by name, local weights files), the parts a config builds (models, loss,
optimizers), and running the trunk in mixed precision.

The trunks are importable from here, as configs name them
(``_target_: pml_regularizers.bench.models.Conv4``).
"""

from .library_trunks import WeightsDownloadError, timm_trunk, torchvision_trunk
from .trunks import MLP, Conv4, SmallResNet

__all__ = ["MLP", "Conv4", "SmallResNet", "WeightsDownloadError", "timm_trunk", "torchvision_trunk"]
