"""Each augmentation op checked pixel by pixel on known images."""

from __future__ import annotations

import pytest
import torch

from cifarlab.data import augment as A
from cifarlab.data import build_augment
from cifarlab.errors import ConfigError


def _ramp(n=4, c=3, h=8, w=8):
    return torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w) + 1


def test_shift_crop_zero_is_the_shifted_slice():
    x = _ramp()
    dy, dx = torch.tensor([0, 4, 2, 1]), torch.tensor([0, 4, 3, 2])
    out = A.shift_crop(x, dy, dx, pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(4):
        torch.testing.assert_close(out[i], padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8], rtol=0, atol=0)
    assert (out[0, :, :2, :] == 0).all() and (out[1, :, -2:, :] == 0).all()  # zero fill
    # offset (2, 3) with pad 2: no vertical shift, content moves one pixel left
    torch.testing.assert_close(out[2, :, :, :7], x[2, :, :, 1:], rtol=0, atol=0)


def test_shift_crop_reflect_fills_with_mirrored_pixels():
    x = _ramp(1)
    out = A.shift_crop(x, torch.tensor([0]), torch.tensor([0]), pad=1, mode="reflect")
    assert out[0, 0, 0, 0] == x[0, 0, 1, 1]  # reflect of (-1,-1) is (1,1)
    torch.testing.assert_close(out[0, :, 1:, 1:], x[0, :, :-1, :-1], rtol=0, atol=0)


def test_random_crop_is_seeded_and_moves_within_pad():
    x = _ramp(16)
    a = A.random_crop(x, torch.Generator().manual_seed(3), pad=2)
    b = A.random_crop(x, torch.Generator().manual_seed(3), pad=2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # every output equals some shifted slice of the padded input
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        assert any(torch.equal(a[i], padded[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))


def test_flip_reverses_columns_where_masked():
    x = _ramp()
    out = A.flip_where(x, torch.tensor([True, False, True, False]))
    torch.testing.assert_close(out[0], x[0, :, :, torch.arange(7, -1, -1)], rtol=0, atol=0)
    torch.testing.assert_close(out[1], x[1], rtol=0, atol=0)


def test_random_flip_flips_about_half():
    x = _ramp(1000, 1, 2, 2)
    out = A.random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out != x).any(dim=(1, 2, 3)).sum().item()
    assert 400 < flipped < 600


def test_altflip_flips_complementary_images_on_consecutive_epochs():
    x = _ramp(64, 1, 2, 2)
    index = torch.arange(100, 164)
    masks = [A.alt_flip_mask(index, e, seed=5) for e in range(4)]
    assert 10 < masks[0].sum() < 54
    assert torch.equal(masks[1], ~masks[0]) and torch.equal(masks[2], masks[0]) and torch.equal(masks[3], ~masks[0])
    aug = build_augment("altflip")
    for e in (0, 1):
        out = aug(x, torch.Generator(), epoch=e, index=index, seed=5)
        flipped = (out != x).any(dim=(1, 2, 3))
        assert torch.equal(flipped, masks[e])


def test_altflip_depends_on_image_not_batch_position():
    index = torch.tensor([7, 3, 9])
    m = A.alt_flip_mask(index, 0)
    assert torch.equal(A.alt_flip_mask(index.flip(0), 0), m.flip(0))


def test_cutout_zeroes_exactly_a_square():
    x = _ramp(2, 3, 10, 10)
    out = A.cutout_at(x, torch.tensor([2, 6]), torch.tensor([3, 0]), size=4)
    expected = x.clone()
    expected[0, :, 2:6, 3:7] = 0
    expected[1, :, 6:10, 0:4] = 0
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    rand = A.random_cutout(_ramp(50, 1, 10, 10), torch.Generator().manual_seed(1), size=3)
    assert ((rand == 0).sum(dim=(1, 2, 3)) == 9).all()


def test_rotate_zero_is_identity_and_ninety_matches_rot90():
    x = torch.rand(3, 3, 16, 16)
    zero = torch.zeros(3)
    torch.testing.assert_close(A.affine(x, zero, zero, zero), x, rtol=0, atol=1e-5)
    out = A.affine(x, torch.full((3,), 90.0), zero, zero)
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(2, 3)), rtol=0, atol=1e-4)


def test_shift_moves_content_by_whole_pixels():
    x = torch.rand(1, 1, 8, 8)
    out = A.affine(x, torch.zeros(1), torch.tensor([2.0]), torch.tensor([-1.0]))
    # content moves right by 2 and up by 1; border pixels repeat the edge
    torch.testing.assert_close(out[0, 0, :-1, 2:], x[0, 0, 1:, :-2], rtol=0, atol=1e-5)


def test_random_rotate_and_shift_stay_in_range_and_are_seeded():
    x = torch.rand(8, 3, 32, 32)
    a = build_augment("rotate:10,shift:0.2")(x, torch.Generator().manual_seed(0))
    b = build_augment("rotate:10,shift:0.2")(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.shape == x.shape and a.min() >= x.min() - 1e-6 and a.max() <= x.max() + 1e-6
    assert not torch.allclose(a, x)


@pytest.mark.parametrize("spec", ["crop:4,flip", "crop:4:reflect,flip,cutout:8", "rotate:10,shift:0.2,flip",
                                  "altflip,translate:2", "none", ""])
def test_build_augment_parses_the_documented_specs(spec):
    aug = build_augment(spec)
    x = torch.rand(5, 3, 32, 32)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    if spec in ("none", ""):
        assert not aug and out is x


def test_translate_is_reflect_crop():
    x = _ramp(6)
    a = build_augment("translate:2")(x, torch.Generator().manual_seed(4))
    b = A.random_crop(x, torch.Generator().manual_seed(4), 2, "reflect")
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("spec,match", [("crop:4,blur", "unknown augmentation 'blur'.*crop:PAD"),
                                        ("crop:x", "bad arguments for 'crop'"),
                                        ("crop:4:wrap", "bad arguments"), ("cutout:0", "cutout:SIZE")])
def test_bad_specs_are_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_augment(spec)
