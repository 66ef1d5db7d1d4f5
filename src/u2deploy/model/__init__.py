"""The network (``network``, ``blocks``), its weights as data (``registry``), and loading (``weights``)."""

from .deploy import DeployModel
from .network import VARIANTS, U2Net, build, count_parameters
from .registry import WeightsInfo, default_weights, registry
from .weights import LoadedWeights, detect_variant, load_model, load_state_dict

__all__ = [
    "VARIANTS", "U2Net", "build", "count_parameters", "DeployModel", "WeightsInfo",
    "default_weights", "registry", "LoadedWeights", "detect_variant", "load_model",
    "load_state_dict",
]
