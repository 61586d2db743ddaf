"""Loading every supported input and preprocessing it as the official loader does."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iggt.views import InputError, LoadedView, load_views, preprocess


def write_png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit PNG written by hand: Pillow cannot write 16-bit colour PNGs."""
    array = np.asarray(array, np.uint16)
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def gradient(height: int = 40, width: int = 60) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 90)], -1).astype(np.uint8)


def pixel(view: LoadedView, x: int = 0, y: int = 0) -> tuple[int, int, int]:
    return view.image.getpixel((x, y))


# -- formats ------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp", ".tif"])
def test_common_formats_load_as_rgb(tmp_path, suffix):
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(gradient()).save(path, quality=95) if suffix in (".jpg", ".webp") else \
        Image.fromarray(gradient()).save(path)
    (view,) = load_views(path)
    assert view.image.mode == "RGB" and view.image.size == (60, 40)
    assert view.name == path.name and view.original_size == (40, 60)
    assert np.abs(np.asarray(view.image, int) - gradient()).mean() < 4


def test_greyscale_and_palette_become_rgb(tmp_path):
    Image.fromarray(np.full((20, 20), 77, np.uint8), "L").save(tmp_path / "grey.png")
    Image.fromarray(gradient()).convert("P").save(tmp_path / "palette.png")
    grey, palette = load_views([tmp_path / "grey.png", tmp_path / "palette.png"])
    assert pixel(grey) == (77, 77, 77)
    assert palette.image.mode == "RGB" and palette.image.size == (60, 40)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    grey = write_png16(tmp_path / "grey16.png", np.full((16, 16), 32768))
    rgb = write_png16(tmp_path / "rgb16.png", np.stack([np.full((16, 16), v) for v in (65535, 16384, 0)], -1))
    grey_view, rgb_view = load_views([grey, rgb])
    assert pixel(grey_view) == (128, 128, 128)
    assert pixel(rgb_view) == (255, 64, 0)


@pytest.mark.parametrize("background, expected", [("white", (255, 127, 127)), ("black", (128, 0, 0))])
def test_rgba_is_composited_over_the_chosen_background(tmp_path, background, expected):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 128  # half transparent red
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    (view,) = load_views(tmp_path / "alpha.png", background=background)
    assert np.abs(np.subtract(pixel(view), expected)).max() <= 1


def test_heic_loads(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    if not pillow_heif.libheif_info()["encoders"]:
        pytest.skip("this pillow-heif build cannot encode HEIC")
    pillow_heif.register_heif_opener()
    Image.fromarray(gradient(64, 96)).save(tmp_path / "phone.heic")
    (view,) = load_views(tmp_path / "phone.heic")
    assert view.image.size == (96, 64)
    assert np.abs(np.asarray(view.image, int) - gradient(64, 96)).mean() < 8


def test_exif_orientation_is_honoured(tmp_path):
    image = Image.fromarray(gradient(40, 60))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "portrait.jpg", exif=exif)
    (view,) = load_views(tmp_path / "portrait.jpg")
    assert view.image.size == (40, 60)  # width and height swapped
    assert view.original_size == (60, 40)


def test_huge_photo_is_downscaled_while_decoding(tmp_path):
    Image.fromarray(np.tile(gradient(), (30, 30, 1))).save(tmp_path / "big.jpg")  # 1800 x 1200
    (view,) = load_views(tmp_path / "big.jpg", max_side=300)
    assert max(view.image.size) <= 300
    assert view.original_size == (1200, 1800)


def test_folder_expands_to_sorted_photos_and_repeated_names_are_made_unique(tmp_path):
    for name in ("b.png", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x") if name.endswith(".txt") else \
            Image.fromarray(gradient()).save(tmp_path / name)
    views = load_views([tmp_path, tmp_path / "a.png"])
    assert [v.name for v in views] == ["a.png", "b.png", "a_2.png"]


def write_video(path: Path, count: int) -> Path:
    import imageio.v3 as iio

    frames = np.stack([np.full((32, 48, 3), 10 + 20 * i, np.uint8) for i in range(count)])
    iio.imwrite(path, frames, fps=10, codec="libx264", plugin="pyav")
    return path


def test_video_frames_are_sampled(tmp_path):
    video = write_video(tmp_path / "clip.mp4", 10)
    assert len(load_views(video)) == 8  # the default count, evenly spaced
    spaced = load_views(video, frames=4)
    assert [v.name for v in spaced] == [f"clip_frame{i:05d}.png" for i in (0, 3, 6, 9)]
    brightness = [np.asarray(v.image).mean() for v in spaced]
    assert brightness == sorted(brightness)
    assert [v.name for v in load_views(video, every=3)] == [f"clip_frame{i:05d}.png" for i in (0, 3, 6, 9)]
    assert len(load_views(video, every=1, max_views=5)) == 5
    assert len(load_views(video, max_frames=5)) == 5  # with no sampling given, the cap is the count
    assert len(load_views(video, frames=9, max_frames=3)) == 3
    assert spaced[0].image.size == (48, 32)


def write_pan_video(path: Path) -> Path:
    """15 frames of a still camera, then 15 of a pan (3 px a frame), the 5th frame of the pan blurred."""
    import imageio.v3 as iio
    from PIL import ImageFilter

    texture = np.random.default_rng(0).integers(0, 255, (64, 200, 3), np.uint8)
    texture = np.asarray(Image.fromarray(texture).resize((400, 128), Image.Resampling.NEAREST))
    frames = [texture[:, :96] for _ in range(15)] + [texture[:, 3 * i:3 * i + 96] for i in range(1, 16)]
    frames[19] = np.asarray(Image.fromarray(frames[19]).filter(ImageFilter.GaussianBlur(3)))
    iio.imwrite(path, np.stack(frames), fps=10, codec="libx264", plugin="pyav")
    return path


def test_frames_selected_by_change_follow_the_motion_and_avoid_blur(tmp_path):
    from iggt.views import chosen_frames

    video = write_pan_video(tmp_path / "pan.mp4")
    uniform = load_views(video, frames=6)
    assert chosen_frames(uniform) == {"pan": [0, 6, 12, 17, 23, 29]}
    by_change = chosen_frames(load_views(video, frames=6, selection="change"))["pan"]
    assert len(by_change) == 6 and by_change == sorted(by_change)
    assert sum(index >= 15 for index in by_change) >= 5  # the still part gives one view at most
    assert 19 not in by_change  # the blurred frame loses to a sharp neighbour
    with pytest.raises(InputError, match="needs a number of frames"):
        load_views(video, every=2, selection="change")
    assert [view.frame_index for view in load_views(video, every=10)] == [0, 10, 20]


# -- errors -------------------------------------------------------------------------------
def test_not_an_image_names_the_file(tmp_path):
    (tmp_path / "fake.png").write_text("hello")
    Image.fromarray(gradient()).save(tmp_path / "good.png")
    with pytest.raises(InputError, match=r"fake\.png is not an image"):
        load_views([tmp_path / "good.png", tmp_path / "fake.png"])


def test_truncated_file_names_the_file(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.png is corrupt or truncated"):
        load_views(tmp_path / "cut.png")


def test_unsupported_extension_and_missing_file(tmp_path):
    (tmp_path / "model.obj").write_text("v 0 0 0")
    with pytest.raises(InputError, match=r"model\.obj: unsupported file type '\.obj'"):
        load_views(tmp_path / "model.obj")
    with pytest.raises(InputError, match=r"absent\.jpg: file not found"):
        load_views(tmp_path / "absent.jpg")


def test_zero_and_too_many_views(tmp_path):
    with pytest.raises(InputError, match="no views"):
        load_views([])
    for i in range(3):
        Image.fromarray(gradient()).save(tmp_path / f"{i}.png")
    with pytest.raises(InputError, match="too many views: 3 given .* at most 2"):
        load_views(tmp_path, max_views=2)


def test_video_without_frames_names_the_file(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 50)
    with pytest.raises(InputError, match=r"broken\.mp4"):
        load_views(tmp_path / "broken.mp4")


def test_decompression_bomb_is_refused_with_a_message(tmp_path, monkeypatch):
    Image.fromarray(gradient()).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 60 x 40 = 2400 > 2 x 1000
    with pytest.raises(InputError, match=r"bomb\.png: refused, too many pixels"):
        load_views(tmp_path / "bomb.png")


def test_image_smaller_than_a_patch_names_the_file():
    tiny = LoadedView(Image.new("RGB", (30, 10)), "tiny.png", (10, 30))
    with pytest.raises(InputError, match=r"tiny\.png: 30x10 pixels is too small"):
        preprocess([tiny])


# -- preprocessing ------------------------------------------------------------------------
def view_of(width: int, height: int, name: str = "v.png") -> LoadedView:
    return LoadedView(Image.fromarray(gradient(height, width)), name, (height, width))


@pytest.mark.parametrize("width, height, expected", [
    (640, 480, (392, 518)),     # landscape: 518 * 3/4 = 388.5 -> 392
    (480, 640, (518, 518)),     # portrait: 690.7 -> 686, centre-cropped to 518
    (1000, 100, (56, 518)),     # panorama: 51.8 -> 56
])
def test_crop_mode_matches_the_official_sizes(width, height, expected):
    tensor, transforms, names = preprocess([view_of(width, height)], "crop", 518)
    assert tuple(tensor.shape) == (1, 3, *expected)
    assert tensor.dtype.is_floating_point and 0 <= tensor.min() and tensor.max() <= 1
    assert names == ["v.png"]


def test_pad_mode_pads_white_to_a_square():
    tensor, (transform,), _ = preprocess([view_of(480, 640)], "pad", 518)
    assert tuple(tensor.shape) == (1, 3, 518, 518)
    assert transform.resized_size == (518, 392) and transform.offset == (0, 63)
    assert tensor[0, :, :, :63].min() == 1.0  # left padding is white


def test_other_sizes_and_even_grids():
    tensor, _, _ = preprocess([view_of(640, 480)], "crop", 224)
    assert tuple(tensor.shape[-2:]) == (168, 224)
    tensor, _, _ = preprocess([view_of(640, 480)], "crop", 518, grid_multiple=2)
    assert tuple(tensor.shape[-2:]) == (392, 504) and tensor.shape[-1] % 28 == 0
    tensor, _, _ = preprocess([view_of(640, 480)], "resize", target_size=(504, 336))
    assert tuple(tensor.shape[-2:]) == (336, 504)
    with pytest.raises(InputError, match="multiples of 14"):
        preprocess([view_of(640, 480)], "resize", target_size=(500, 336))


def test_views_of_different_shapes_are_padded_to_the_largest():
    tensor, transforms, _ = preprocess([view_of(640, 480, "wide.png"), view_of(600, 600, "square.png")], "crop", 224)
    assert tuple(tensor.shape) == (2, 3, 224, 224)
    assert transforms[0].offset == (28, 0)  # 168 rows centred in 224
    assert tensor[0, :, :28].min() == 1.0


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_view_transform_maps_model_pixels_back_to_the_photo(mode):
    """A red square at a known place in a portrait photo is found where the transform says."""
    photo = np.full((300, 200, 3), 40, np.uint8)
    photo[200:240, 120:160] = (255, 0, 0)
    view = LoadedView(Image.fromarray(photo), "p.png", (300, 200))
    tensor, (transform,), _ = preprocess([view], mode, 140)
    red = (tensor[0, 0] > 0.8) & (tensor[0, 1] < 0.2)
    ys, xs = np.nonzero(red.numpy())
    y, x = transform.to_original(ys.mean() + 0.5, xs.mean() + 0.5)
    assert abs(y - 220) < 3 and abs(x - 140) < 3
    back_y, back_x = transform.from_original(y, x)
    assert np.allclose([back_y, back_x], [ys.mean() + 0.5, xs.mean() + 0.5])
