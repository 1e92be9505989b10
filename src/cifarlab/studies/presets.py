"""Named studies. ``reference`` is the one-factor study of five-classic-cnns.md §6.

The reference ran each of its six tables separately (25 trainings, the base setting six
times, once per table); here a run that coincides with the base is trained once and shared
by every factor, so the same study is 20 distinct configurations per seed.
"""

from __future__ import annotations

import json

from cifarlab.errors import ConfigError

REFERENCE_LABEL = "reference (Keras, one seed, test set used as validation)"

# five-classic-cnns.md §6: the small "GoogLeNet" (4 Inception blocks), Adam 1e-3, sparse CE,
# ReLU, batch 32, 10 epochs, pixels/255, no augmentation, no schedule, no weight decay
_REFERENCE_BASE = {
    "model": "googlenet_small", "recipe": "reference",
    "optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0,
    "loss": "ce", "label_smoothing": 0.0, "schedule": "constant",
    "batch_size": 32, "epochs": 10, "augment": "none", "model_kwargs": {"act": "relu"},
}

# settings that come with a factor's value: Keras' SGD() has no momentum, where the base's
# momentum 0.9 (Adam's beta1) would otherwise make the SGD row Nesterov SGD
_REFERENCE_VALUE_SETTINGS = {"optimizer": {"sgd": {"momentum": 0.0}}}

_REFERENCE_FACTORS = [
    ("lr", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]),
    ("optimizer", ["sgd", "rmsprop", "adagrad", "adadelta", "adam"]),
    ("loss", ["mse", "bce", "ce"]),
    ("act", ["sigmoid", "tanh", "relu"]),
    ("batch_size", [16, 32, 64, 128, 256]),
    ("epochs", [5, 10, 20, 50]),
]

# §6 tables, copied as data: value -> (train acc, val acc, train loss, val loss, seconds).
# "val" there is the test set, evaluated after the last epoch; one seed per row.
REFERENCE_TABLES: dict[str, dict] = {
    "lr": {1e-4: (0.5496, 0.5476, 1.2334, 1.2509, 257), 3e-4: (0.6894, 0.6855, 0.8766, 0.8889, 259),
           1e-3: (0.7893, 0.7210, 0.5949, 0.8404, 259), 3e-3: (0.7562, 0.7040, 0.6886, 0.8454, 258),
           1e-2: (0.1013, 0.1000, 2.3039, 2.3039, 258)},
    "optimizer": {"sgd": (0.3352, 0.3143, 1.8473, 1.8932, 252), "rmsprop": (0.7721, 0.7126, 0.6516, 0.8594, 291),
                  "adagrad": (0.2974, 0.2905, 1.9084, 1.9276, 263),
                  "adadelta": (0.1131, 0.1092, 2.2927, 2.2936, 265),
                  "adam": (0.8021, 0.7568, 0.5568, 0.7360, 269)},
    "loss": {"mse": (0.1002, 0.1042, 27.6100, 27.6100, 269), "bce": (0.0997, 0.1000, 9.9929, 9.9929, 261),
             "ce": (0.7902, 0.7252, 0.5898, 0.8163, 255)},
    "act": {"sigmoid": (0.5282, 0.5184, 1.2995, 1.2998, 274), "tanh": (0.7803, 0.7166, 0.6294, 0.8125, 271),
            "relu": (0.7887, 0.7300, 0.5965, 0.7784, 266)},
    "batch_size": {16: (0.8072, 0.7370, 0.5468, 0.7911, 333), 32: (0.7924, 0.7500, 0.5888, 0.7418, 257),
                   64: (0.7642, 0.6986, 0.6726, 0.8813, 207), 128: (0.7066, 0.6595, 0.8280, 0.9547, 177),
                   256: (0.6510, 0.6439, 0.9878, 0.9910, 164)},
    "epochs": {5: (0.6803, 0.6625, 0.8992, 0.9388, 128), 10: (0.7832, 0.7286, 0.6171, 0.7774, 256),
               20: (0.8887, 0.7360, 0.3069, 0.9294, 498), 50: (0.9643, 0.7357, 0.1016, 1.5622, 1212)},
}
REFERENCE_COLUMNS = ("train_acc", "val_acc", "train_loss", "val_loss", "time_s")

_PRESETS = {
    "reference": {"base": _REFERENCE_BASE, "factors": _REFERENCE_FACTORS, "tables": REFERENCE_TABLES,
                  "label": REFERENCE_LABEL, "value_settings": _REFERENCE_VALUE_SETTINGS,
                  "description": "five-classic-cnns §6: googlenet_small around Adam 1e-3 / CE / ReLU / "
                                 "batch 32 / 10 epochs; lr, optimizer, loss, act, batch_size, epochs"},
}


def list_presets() -> dict[str, str]:
    return {name: p["description"] for name, p in _PRESETS.items()}


def get_preset(name: str) -> dict:
    """{"base": config dict, "factors": [(name, values)], "tables": ..., "label": ...,
    "value_settings": {factor: {value text: {field: value}}}} (copies)."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown study preset {name!r}; known presets: {', '.join(sorted(_PRESETS))}")
    p = _PRESETS[name]
    return {"base": {**p["base"], "model_kwargs": dict(p["base"]["model_kwargs"])},
            "factors": [(f, list(v)) for f, v in p["factors"]], "tables": p["tables"], "label": p["label"],
            "value_settings": json.loads(json.dumps(p.get("value_settings", {})))}
