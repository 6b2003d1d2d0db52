"""data.image_io: reading/writing 8-bit RGB, refusing what it must not guess about."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from data.image_io import list_images, read_npy_rgb, read_rgb, write_rgb
from utils.errors import ImageError


def test_read_rgb_returns_rgb_order(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    bgr[0, 0] = (1, 2, 3)
    cv2.imwrite(str(tmp_path / "b.png"), bgr)
    img = read_rgb(tmp_path / "b.png")
    assert img.dtype == np.uint8 and img.shape == (4, 5, 3)
    assert img[1, 1].tolist() == [0, 0, 200]
    assert img[0, 0].tolist() == [3, 2, 1]


def test_write_read_roundtrip_creates_parents_and_leaves_no_temp(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    out = tmp_path / "a" / "b" / "x.png"
    write_rgb(out, img)
    np.testing.assert_array_equal(read_rgb(out), img)
    write_rgb(out, img[::-1].copy())  # replacing an existing file
    np.testing.assert_array_equal(read_rgb(out), img[::-1])
    assert os.listdir(out.parent) == ["x.png"]


def test_write_rejects_non_uint8(tmp_path):
    with pytest.raises(ImageError, match="uint8"):
        write_rgb(tmp_path / "f.png", np.zeros((4, 4, 3), np.float32))
    assert not (tmp_path / "f.png").exists()


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="nothere.png.*not found"):
        read_rgb(tmp_path / "nothere.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageError, match="broken.png.*cannot decode"):
        read_rgb(bad)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png"):
        read_rgb(empty)


def test_16bit_is_rejected_not_rescaled(tmp_path):
    p = tmp_path / "deep.png"
    cv2.imwrite(str(p), np.full((3, 3, 3), 40000, np.uint16))
    with pytest.raises(ImageError, match="deep.png.*16-bit.*8-bit"):
        read_rgb(p)


def test_rgba_opaque_drops_alpha_transparent_rejected(tmp_path):
    bgra = np.zeros((3, 4, 4), np.uint8)
    bgra[..., 2] = 77  # red
    bgra[..., 3] = 255
    cv2.imwrite(str(tmp_path / "opaque.png"), bgra)
    img = read_rgb(tmp_path / "opaque.png")
    assert img.shape == (3, 4, 3) and img[..., 0].min() == 77 and img[..., 1:].max() == 0
    bgra[1, 2, 3] = 10
    cv2.imwrite(str(tmp_path / "glass.png"), bgra)
    with pytest.raises(ImageError, match="glass.png.*transparent"):
        read_rgb(tmp_path / "glass.png")


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    img = read_rgb(tmp_path / "g.png")
    assert img.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], gray)


def test_list_images_natsorted_filters_and_errors(tmp_path):
    for n in ["img10.png", "img2.jpg", "img1.PNG", "notes.txt", ".hidden.png"]:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["img1.PNG", "img2.jpg", "img10.png"]
    with pytest.raises(ImageError, match="missing.*not found"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="empty.*no images"):
        list_images(tmp_path / "empty")


def test_npy_frames_channel_order_and_dtype(tmp_path):
    arr = np.zeros((2, 3, 3), np.uint8)
    arr[..., 0] = 9  # first stored channel
    np.save(tmp_path / "f.npy", arr)
    assert read_npy_rgb(tmp_path / "f.npy", "bgr")[..., 2].min() == 9
    assert read_npy_rgb(tmp_path / "f.npy", "rgb")[..., 0].min() == 9
    np.save(tmp_path / "float.npy", arr.astype(np.float32))
    with pytest.raises(ImageError, match="float.npy.*float32"):
        read_npy_rgb(tmp_path / "float.npy")
