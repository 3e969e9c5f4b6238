"""Image loading: every Pillow mode becomes the right 8-bit RGB picture, every bad file one
DataError naming it (the image rows of docs/RELIABILITY.md)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmeb.errors import DataError
from mmeb.items import Item, load_image, to_rgb


def rgb(img: Image.Image) -> np.ndarray:
    out = to_rgb(img)
    assert out.mode == "RGB"
    assert out.size == img.size
    return np.asarray(out)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(levels).save(path)
    assert Image.open(path).mode == "I;16"
    pixels = np.asarray(load_image(str(path)))
    assert pixels[0, :, 0].tolist() == [0, 64, 128, 255]
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_a_dark_16_bit_image_stays_dark(tmp_path):
    path = tmp_path / "dark.png"
    Image.fromarray(np.full((4, 4), 200, dtype=np.uint16)).save(path)
    assert np.asarray(load_image(str(path))).max() <= 1


@pytest.mark.parametrize(("top", "value", "expected"),
                         [(255, 128, 128), (65535, 32896, 128), (1 << 20, 1 << 19, 128)])
def test_32_bit_grayscale_is_scaled_by_the_range_it_uses(top, value, expected):
    pixels = np.array([[0, value, top]], dtype=np.int32)
    out = rgb(Image.fromarray(pixels))
    assert out[0, :, 1].tolist() == [0, expected, 255]


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))  # transparent black
    rgba.putpixel((1, 0), (200, 10, 10, 255))  # opaque red
    out = rgb(rgba)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [200, 10, 10]
    la = Image.new("LA", (1, 1), (0, 0))
    assert rgb(la)[0, 0].tolist() == [255, 255, 255]


def test_a_palette_image_with_a_transparent_index_is_white_there(tmp_path):
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 30, 200, 30] + [0] * 762)
    palette.putpixel((1, 0), 1)
    path = tmp_path / "p.png"
    palette.save(path, transparency=0)
    out = np.asarray(load_image(str(path)))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [30, 200, 30]


def test_cmyk_palette_and_one_bit_convert(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(path, quality=100)  # pure cyan
    cyan = np.asarray(load_image(str(path)))[4, 4]
    assert cyan[0] < 20
    assert min(cyan[1], cyan[2]) > 235
    plain = Image.new("P", (1, 1), 0)
    plain.putpalette([10, 20, 30] + [0] * 765)
    assert rgb(plain)[0, 0].tolist() == [10, 20, 30]
    assert rgb(Image.new("1", (3, 3), 1))[1, 1].tolist() == [255, 255, 255]


def test_a_one_pixel_image_loads(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (1, 2, 3)).save(path)
    item = Item(raw="<|image_1|>\n", text="", image_path=str(path), origin="T row 0 query")
    assert item.image.size == (1, 1)
    assert np.asarray(item.image)[0, 0].tolist() == [1, 2, 3]


def test_an_in_memory_image_goes_through_the_same_conversion():
    item = Item(raw="", text="", pil_image=Image.new("RGBA", (1, 1), (0, 0, 0, 0)))
    assert np.asarray(item.image)[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("pixels", [20 * 20, 15 * 15])  # past the error / the warning limit
def test_a_decompression_bomb_is_one_error_naming_the_file(tmp_path, monkeypatch, pixels):
    side = int(pixels ** 0.5)
    path = tmp_path / "bomb.png"
    Image.new("RGB", (side, side)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 120)
    item = Item(raw="", text="", image_path=str(path), origin="CIRR row 3 candidate 0")
    with pytest.raises(DataError, match=r"CIRR row 3 candidate 0: image .*bomb\.png is too "
                                        r"large to decode safely"):
        _ = item.image


def _truncated(path):
    Image.new("RGB", (64, 64), (9, 99, 199)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "cannot read image"),
        (lambda p: p.write_bytes(b"GIF89a not really"), "cannot read image"),
        (_truncated, "cannot read image"),
        (lambda p: None, "image not found"),
    ],
)
def test_bad_image_files_are_one_error_naming_the_file(tmp_path, make, message):
    path = tmp_path / "x.jpg"
    make(path)
    item = Item(raw="", text="", image_path=str(path), origin="MSCOCO row 7 query")
    with pytest.raises(DataError, match=rf"MSCOCO row 7 query: {message}.*x\.jpg"):
        _ = item.image
