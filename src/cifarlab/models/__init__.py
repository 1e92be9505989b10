"""Model zoo: a registry of CIFAR-10 classifiers, faithful reproductions and modern forms.

Importing this package registers every family; ``create_model(name)`` builds one.
"""

from __future__ import annotations

from cifarlab.models import (  # noqa: F401  (imported to register their models)
    airnet, alexnet, googlenet, inception_colab, inception_v3, lenet, plaincnn, resnet, vgg,
)
from cifarlab.models.layers import ACTIVATIONS
from cifarlab.models.registry import (
    ModelInfo, ParamCount, count_params, create_model, list_models, model_info, register_model,
)

__all__ = ["ACTIVATIONS", "ModelInfo", "ParamCount", "count_params", "create_model",
           "list_models", "model_info", "register_model"]
