"""Model zoo: every registered model builds, runs, trains, and faithful ones match their
reference's printed Keras parameter count."""

from __future__ import annotations


import pytest
import torch
import torch.nn as nn

from cifarlab.errors import ModelError
from cifarlab.models import ACTIVATIONS, count_params, create_model, list_models, model_info
from cifarlab.models.layers import act_class

ALL = list_models()
FAITHFUL_WITH_REF = [n for n in ALL if model_info(n).faithful and model_info(n).ref_params is not None]


def _meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):  # shape propagation only: instant even for 23M parameters
        return create_model(name, **kw)


# forward + backward of these takes 4-20 CPU-s each (measured on 2 cores): the slow lane's
HEAVY = {"inception_v3", "inception_v3_slim", "inception_v3_slim352", "inception_v3_stem_slim", "resnet110",
         "resnet56", "resnet32", "googlenet"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in ALL])
def test_forward_backward_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([1, 2])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing[:5]}"


@pytest.mark.parametrize("name", ALL)
def test_num_classes_and_grayscale_input(name):
    model = _meta(name, num_classes=7, in_chans=1)
    assert model(torch.empty(2, 1, 32, 32, device="meta")).shape == (2, 7)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 1


@pytest.mark.parametrize("name", FAITHFUL_WITH_REF)
def test_faithful_keras_total_matches_reference(name):
    info, pc = model_info(name), count_params(_meta(name))
    assert pc.keras_total == info.ref_params
    if info.ref_nontrainable is not None:
        assert pc.keras_nontrainable == info.ref_nontrainable
        assert pc.trainable == info.ref_params - info.ref_nontrainable


# --- the reference counts re-derived by hand from the layer specs (Keras counting) ---

def conv(cin, cout, k, bias=True):
    kh, kw = (k, k) if isinstance(k, int) else k
    return cin * cout * kh * kw + (cout if bias else 0)


def bn(c):
    return 4 * c


def dense(cin, cout):
    return cin * cout + cout


def small_inception(cin, ch, stride_unused=None):  # every conv with bias + BN
    return 3 * (conv(cin, ch, 1) + bn(ch)) + conv(ch, ch, 3) + conv(ch, ch, 5) + 2 * bn(ch) + conv(cin, ch, 1) + bn(ch)


def colab_module(cin, c1, r3, c3, r5, c5, pp):
    convs = conv(cin, c1, 1) + conv(cin, r3, 1) + conv(r3, c3, 3) + conv(cin, r5, 1) + conv(r5, c5, 5) + conv(cin, pp, 1)
    return convs + bn(c1 + c3 + c5 + pp)


def basic_block(cin, cout, stride):
    proj = conv(cin, cout, 1, bias=False) + bn(cout) if (stride != 1 or cin != cout) else 0
    return conv(cin, cout, 3, False) + bn(cout) + conv(cout, cout, 3, False) + bn(cout) + proj


DERIVED = {
    "lenet5": conv(3, 6, 5) + conv(6, 16, 5) + dense(400, 120) + dense(120, 84) + dense(84, 10),
    "alexnet": conv(3, 96, 3) + bn(96) + conv(96, 256, 3) + bn(256) + conv(256, 384, 3) + conv(384, 384, 3)
    + conv(384, 256, 3) + dense(256 * 2 * 2, 2048) + dense(2048, 2048) + dense(2048, 10),
    "vgg16_faithful": sum(conv(a, b, 3) + bn(b) for a, b in zip(
        [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512],
        [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]))
    + dense(512, 512) + dense(512, 512) + dense(512, 10),
    "googlenet_small": conv(3, 16, 3) + bn(16) + small_inception(16, 16) + small_inception(64, 16)
    + small_inception(64, 32) + small_inception(128, 32) + dense(128, 10),
    "resnet18": conv(3, 64, 3, False) + bn(64) + sum(basic_block(a, b, s) for a, b, s in [
        (64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
        (256, 512, 2), (512, 512, 1)]) + dense(512, 10),
    "inception_colab": colab_module(3, 64, 96, 128, 16, 32, 32) + colab_module(256, 128, 128, 192, 32, 96, 64)
    + colab_module(480, 192, 96, 208, 16, 48, 64) + colab_module(512, 160, 112, 224, 24, 64, 64)
    + dense(512, 128) + bn(128) + dense(128, 64) + bn(64) + dense(64, 10),
    "deepcnn15": sum(conv(a, b, 3) for a, b in zip(
        [3, 32, 32, 32, 48, 48, 80, 80, 80, 80, 80, 128, 128, 128, 128],
        [32, 32, 32, 48, 48, 80, 80, 80, 80, 80, 128, 128, 128, 128, 128])) + dense(128, 500) + dense(500, 10),
}


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_reference_counts_follow_from_the_layer_specs(name):
    assert DERIVED[name] == model_info(name).ref_params
    assert count_params(_meta(name)).keras_total == DERIVED[name]


def test_inception_v3_variants_differ_by_their_stems():
    full_stem = (conv(3, 32, 3) + bn(32) + conv(32, 32, 3) + bn(32) + conv(32, 64, 3) + bn(64)
                 + conv(64, 80, 1) + bn(80) + conv(80, 192, 3) + bn(192))
    slim_stem = conv(3, 192, 3)  # no BN, as printed: non-trainable drops by 2 x 400
    assert model_info("inception_v3").ref_params - model_info("inception_v3_slim").ref_params == full_stem - slim_stem
    assert model_info("inception_v3").ref_nontrainable - model_info("inception_v3_slim").ref_nontrainable == 800
    assert count_params(_meta("inception_v3_stem_slim")).keras_total == model_info("inception_v3").ref_params


def test_cifar_resnet20_has_the_paper_size():
    stages = [(16, 16), (16, 32), (32, 64)]
    expected = conv(3, 16, 3, False) + bn(16) + dense(64, 10)
    for cin, cout in stages:  # option A: parameter-free shortcuts
        expected += conv(cin, cout, 3, False) + 5 * conv(cout, cout, 3, False) + 6 * bn(cout)
    assert count_params(_meta("resnet20")).keras_total == expected
    assert count_params(_meta("resnet20")).trainable == pytest.approx(0.27e6, rel=0.01)


def test_stem_slim_keeps_resolution_and_inception_v3_shrinks_it():
    x = torch.empty(1, 3, 32, 32, device="meta")
    assert _meta("inception_v3").stem(x).shape[-1] == 4
    assert _meta("inception_v3_stem_slim").stem(x).shape[-1] == 32


@pytest.mark.parametrize("name", ALL)
def test_act_kwarg_changes_the_activation_modules(name):
    default = act_class(model_info(name).default_kwargs["act"])
    new = "tanh" if default is not nn.Tanh else "gelu"
    model = _meta(name, act=new)
    kinds = {type(m) for m in model.modules()}
    assert act_class(new) in kinds
    assert default not in kinds


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ModelError) as exc:
        create_model("lenet5", act="swishy")
    for name in ACTIVATIONS:
        assert name in str(exc.value)


def test_unknown_model_lists_close_matches():
    with pytest.raises(ModelError, match="resnet18"):
        create_model("resnet-18")
    with pytest.raises(ModelError, match="googlenet_small"):
        model_info("googlenet_smal")


def test_unknown_kwarg_is_a_model_error():
    with pytest.raises(ModelError, match="depth"):
        create_model("resnet20", depth=3)


def test_list_models_pattern():
    names = list_models("resnet*")
    assert {"resnet18", "resnet20", "resnet32", "resnet56", "resnet110"} <= set(names)
    assert all(n.startswith("resnet") for n in names)
    assert list_models("no_such_*") == []


def test_model_info_marks_modern_forms():
    for name in ALL:
        info = model_info(name)
        if not info.faithful:
            assert info.ref_params is None and info.reproduces.startswith("modern")
    assert model_info("lenet5").ref_accuracy == 0.52
    assert model_info("lenet5").default_kwargs["act"] == "sigmoid"


def test_count_params_separates_frozen_and_bn_statistics():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)
    pc = count_params(model)
    assert pc.trainable == 112 + 8 + 2
    assert pc.non_trainable == 8
    assert pc.keras_nontrainable == 8 + 8          # frozen weight + moving mean/var
    assert pc.keras_total == 112 + 8 + 2 + 8 + 8


@pytest.mark.parametrize("name", ALL)
def test_models_end_in_logits_not_softmax(name):
    kinds = {type(m) for m in _meta(name).modules()}
    assert not kinds & {nn.Softmax, nn.LogSoftmax, nn.Softmax2d}
