import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_lightning.data import ImageLoadError, image_to_tensor, load_rgb, to_rgb

from .fixtures import write_image


def px(img, x=0, y=0):
    return img.getpixel((x, y))


def close(a, b, tol=1):
    return all(abs(int(u) - int(v)) <= tol for u, v in zip(a, b, strict=True))


# --- conversions (pixel values, not just the mode) -----------------------------------------


def test_rgb_png_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    img = load_rgb(tmp_path / "a.png")
    assert img.mode == "RGB" and img.size == (7, 5)
    assert np.array_equal(np.asarray(img), array)


def test_grayscale_l_is_replicated(tmp_path):
    Image.new("L", (4, 3), 77).save(tmp_path / "g.png")
    img = load_rgb(tmp_path / "g.png")
    assert img.mode == "RGB" and px(img) == (77, 77, 77)


def test_one_bit_image(tmp_path):
    im = Image.new("1", (4, 4), 0)
    im.putpixel((1, 1), 1)
    im.save(tmp_path / "b.png")
    img = load_rgb(tmp_path / "b.png")
    assert px(img) == (0, 0, 0) and px(img, 1, 1) == (255, 255, 255)


def test_la_alpha_composited_on_white(tmp_path):
    im = Image.new("LA", (3, 1))
    im.putpixel((0, 0), (100, 0))
    im.putpixel((1, 0), (100, 255))
    im.putpixel((2, 0), (100, 128))
    im.save(tmp_path / "la.png")
    img = load_rgb(tmp_path / "la.png")
    assert px(img, 0) == (255, 255, 255)
    assert px(img, 1) == (100, 100, 100)
    expected = round(100 * 128 / 255 + 255 * 127 / 255)
    assert close(px(img, 2), (expected,) * 3)


def test_rgba_alpha_composited_on_white(tmp_path):
    im = Image.new("RGBA", (2, 1), (200, 0, 0, 128))
    im.putpixel((1, 0), (10, 20, 30, 0))
    im.save(tmp_path / "rgba.png")
    img = load_rgb(tmp_path / "rgba.png")
    a = 128 / 255
    expected = tuple(round(c * a + 255 * (1 - a)) for c in (200, 0, 0))
    assert close(px(img, 0), expected)
    assert px(img, 1) == (255, 255, 255)


def _palette_image():
    im = Image.new("P", (3, 1))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    for x in range(3):
        im.putpixel((x, 0), x)
    return im


def test_palette_without_transparency(tmp_path):
    _palette_image().save(tmp_path / "p.png")
    img = load_rgb(tmp_path / "p.png")
    assert [px(img, x) for x in range(3)] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def test_palette_with_transparent_index(tmp_path):
    _palette_image().save(tmp_path / "pt.png", transparency=1)
    with Image.open(tmp_path / "pt.png") as raw:
        assert raw.mode == "P" and "transparency" in raw.info
    img = load_rgb(tmp_path / "pt.png")
    assert [px(img, x) for x in range(3)] == [(255, 0, 0), (255, 255, 255), (0, 0, 255)]


def test_palette_with_per_entry_alpha(tmp_path):
    _palette_image().save(tmp_path / "pa.png", transparency=bytes([255, 0, 128]))
    img = load_rgb(tmp_path / "pa.png")
    assert px(img, 0) == (255, 0, 0)
    assert px(img, 1) == (255, 255, 255)
    assert close(px(img, 2), (127, 127, 255))


def test_gif_with_transparency(tmp_path):
    _palette_image().save(tmp_path / "t.gif", transparency=0)
    img = load_rgb(tmp_path / "t.gif")
    assert px(img, 0) == (255, 255, 255) and px(img, 1) == (0, 255, 0)


def test_pa_mode_in_memory():
    im = Image.new("PA", (2, 1))
    im.putpalette([10, 20, 30] + [0] * 765)
    im.putpixel((0, 0), (0, 255))
    im.putpixel((1, 0), (0, 0))
    img = to_rgb(im)
    assert img.mode == "RGB"
    assert px(img, 0) == (10, 20, 30) and px(img, 1) == (255, 255, 255)


def test_cmyk_tiff_and_jpeg(tmp_path):
    cyan = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    cyan.save(tmp_path / "c.tif")
    cyan.save(tmp_path / "c.jpg", quality=95)
    assert px(load_rgb(tmp_path / "c.tif")) == (0, 255, 255)
    assert close(px(load_rgb(tmp_path / "c.jpg"), 4, 4), (0, 255, 255), tol=6)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grayscale_scaled_by_bit_depth(tmp_path, suffix):
    array = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / f"g16{suffix}")
    with Image.open(tmp_path / f"g16{suffix}") as raw:
        assert raw.mode.startswith("I")
    img = load_rgb(tmp_path / f"g16{suffix}")
    values = [px(img, x)[0] for x in range(4)]
    assert values == [0, 64, 128, 255]  # plain convert would give [0, 255, 255, 255]
    assert px(img, 2) == (128, 128, 128)


def test_16bit_big_endian(tmp_path):
    array = np.array([[0, 32768, 65535]], dtype=">u2")
    im = Image.frombytes("I;16B", (3, 1), array.tobytes())
    im.save(tmp_path / "b.tif")
    img = load_rgb(tmp_path / "b.tif")
    assert [px(img, x)[0] for x in range(3)] == [0, 128, 255]
    assert [px(to_rgb(im), x)[0] for x in range(3)] == [0, 128, 255]


def test_32bit_int_with_16bit_values(tmp_path):
    array = np.array([[0, 32768, 65535]], dtype=np.int32)
    Image.fromarray(array).save(tmp_path / "i.tif")
    with Image.open(tmp_path / "i.tif") as raw:
        assert raw.mode == "I"
    img = load_rgb(tmp_path / "i.tif")
    assert [px(img, x)[0] for x in range(3)] == [0, 128, 255]


def test_float_image(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "f.tif")
    img = load_rgb(tmp_path / "f.tif")
    assert [px(img, x)[0] for x in range(3)] == [0, 128, 255]
    wide = to_rgb(Image.fromarray(np.array([[0.0, 100.0, 255.0]], dtype=np.float32)))
    assert [px(wide, x)[0] for x in range(3)] == [0, 100, 255]


def _marked(width=40, height=20):
    im = Image.new("RGB", (width, height), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 10, 10))  # red block at the stored top-left
    return im


@pytest.mark.parametrize(
    ("orientation", "size", "red_at"),
    [
        (1, (40, 20), (2, 2)),
        (3, (40, 20), (37, 17)),
        (6, (20, 40), (17, 2)),
        (8, (20, 40), (2, 37)),
    ],
)
def test_exif_orientation_applied(tmp_path, orientation, size, red_at):
    exif = Image.Exif()
    exif[0x0112] = orientation
    _marked().save(tmp_path / "o.jpg", exif=exif, quality=95)
    img = load_rgb(tmp_path / "o.jpg")
    assert img.size == size
    assert close(px(img, *red_at), (255, 0, 0), tol=40)
    assert close(px(img, size[0] // 2, size[1] // 2), (0, 0, 255), tol=40)


def test_path_with_spaces_and_unicode(tmp_path):
    path = write_image(tmp_path / "my data" / "ünïcødé 图像 1.png", seed=3)
    assert load_rgb(path).mode == "RGB"
    assert load_rgb(str(path)).size == (24, 16)


# --- failures name the file and the reason --------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageLoadError, match="does not exist") as info:
        load_rgb(path)
    assert str(path) in str(info.value) and info.value.path == str(path)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageLoadError, match="directory"):
        load_rgb(tmp_path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty") as info:
        load_rgb(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg(tmp_path):
    path = write_image(tmp_path / "t.jpg", size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as raw:  # the header still parses
        assert raw.size == (64, 64)
    with pytest.raises(ImageLoadError) as info:
        load_rgb(path)
    assert str(path) in str(info.value)
    assert "truncated" in str(info.value).lower()


def test_opens_but_cannot_decode(tmp_path):
    path = write_image(tmp_path / "broken.png", size=(32, 32))
    data = bytearray(path.read_bytes())
    start = data.find(b"IDAT") + 10
    data[start : start + 60] = b"\x55" * 60
    path.write_bytes(bytes(data))
    with Image.open(path) as raw:
        assert raw.size == (32, 32)
    with pytest.raises(ImageLoadError) as info:
        load_rgb(path)
    assert str(path) in str(info.value) and info.value.reason


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a JPEG")
    with pytest.raises(ImageLoadError, match="cannot identify") as info:
        load_rgb(path)
    assert str(path) in str(info.value)


def test_error_type_survives_worker_reraise_and_pickle(tmp_path):
    err = ImageLoadError.for_path(tmp_path / "x.png", "file does not exist")
    assert isinstance(err, RuntimeError)
    rebuilt = type(err)(str(err))  # how a DataLoader worker re-raises in the main process
    assert str(rebuilt) == str(err)
    restored = pickle.loads(pickle.dumps(err))
    assert restored.path == err.path and restored.reason == "file does not exist"


# --- tensors --------------------------------------------------------------------------------


def test_image_to_tensor_shape_range_and_bicubic():
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    tensor = image_to_tensor(img, 16)
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    expected = np.asarray(img.resize((16, 16), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    assert torch.allclose(tensor, torch.from_numpy(expected).permute(2, 0, 1))


def test_image_to_tensor_squashes_without_crop():
    img = Image.new("RGB", (40, 10), (0, 0, 0))
    img.paste((255, 255, 255), (20, 0, 40, 10))
    tensor = image_to_tensor(img, 8)
    assert tensor[:, :, :3].max() < 0.1 and tensor[:, :, 5:].min() > 0.9
    assert torch.allclose(tensor[:, 0], tensor[:, 7])


def test_image_to_tensor_converts_other_modes():
    tensor = image_to_tensor(Image.new("L", (4, 4), 255), 4)
    assert tensor.shape == (3, 4, 4) and torch.all(tensor == 1.0)


def test_short_side_crop_resizes_the_short_side_and_takes_the_centre():
    # torchvision's Resize(448) + CenterCrop(448) on a KADID-sized 512x384 image: the long side
    # becomes int(448 * 512 / 384) = 597, the crop starts at int(round(149 / 2)) = 74.
    from iqa_lightning.data.images import resize_to_array

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (384, 512, 3), dtype=np.uint8))
    ours = resize_to_array(img, 448, "bicubic", resize="short_side_crop")
    expected = img.resize((597, 448), Image.BICUBIC).crop((74, 0, 522, 448))
    assert np.array_equal(ours, np.asarray(expected))
    # Portrait: the crop is vertical; the square result is not the squashed one.
    tall = Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8))
    crop = resize_to_array(tall, 100, resize="short_side_crop")
    assert np.array_equal(
        crop, np.asarray(tall.resize((100, 150), Image.BICUBIC).crop((0, 25, 100, 125)))
    )
    assert not np.array_equal(crop, resize_to_array(tall, 100))


def test_unknown_resize_mode_names_the_key():
    from iqa_lightning.data.images import resize_to_array

    with pytest.raises(ValueError, match="dataset.resize='stretch'"):
        resize_to_array(Image.new("RGB", (8, 8)), 4, resize="stretch")


def test_cache_keeps_resize_modes_apart(tmp_path):
    from iqa_lightning.data.cache import ImageCache

    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 60, 3), dtype=np.uint8)).save(
        path
    )
    squash = ImageCache(tmp_path / "c", 20)
    crop = ImageCache(tmp_path / "c", 20, resize="short_side_crop")
    assert squash.folder != crop.folder and squash.entry_path(path) != crop.entry_path(path)
    assert not torch.equal(squash.load(path), crop.load(path))
    from iqa_lightning.data.images import image_to_tensor, load_rgb

    assert torch.equal(
        crop.load(path), image_to_tensor(load_rgb(path), 20, resize="short_side_crop")
    )
