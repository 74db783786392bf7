"""Pictures of the weights (mlp/pictures.py): W1's tiles and the per-class maps, drawn without pyplot."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlp import MLP, pictures

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)
PARAMS = MLP([784, 16, 10], rng=np.random.default_rng(1)).params


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def render(draw) -> bytes:
    buffer = io.BytesIO()
    draw(buffer)
    return buffer.getvalue()


def test_the_class_maps_are_numbered_without_names_and_named_with_them() -> None:
    numbered = render(lambda out: pictures.plot_digit_maps(PARAMS, out))
    named = render(lambda out: pictures.plot_digit_maps(PARAMS, out, [str(d) for d in range(10)]))
    other = render(lambda out: pictures.plot_digit_maps(PARAMS, out, list("abcdefghij")))
    assert png_size(numbered) == pictures.SIZE
    assert numbered == named != other


def test_neither_the_network_nor_the_weights_route_loads_matplotlib_until_a_picture_is_drawn() -> None:
    code = "import sys, mlp, service.routers.weights; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_w1_tiles_beyond_max_tiles_are_cut() -> None:
    w1 = RNG.standard_normal((784, 40)).astype(np.float32)
    assert png_size(render(lambda out: pictures.plot_w1_tiles(w1, out, max_tiles=9))) == pictures.SIZE


def test_w1_mosaic_puts_tile_k_at_row_k_div_cols_with_grey_lines_and_blank_unused_slots() -> None:
    tiles = np.stack([np.full((2, 2), v) for v in (-1.0, 0.0, 1.0)])  # 3 tiles of 2x2 in 2 columns
    grid = pictures._mosaic(tiles, cols=2)
    assert grid.shape == (7, 7, 4)  # 2 rows/cols of (2 pixels + 1 line), plus the line above/left
    np.testing.assert_allclose(grid[1, 1], pictures.DIVERGING(0.0))  # tile 0, top left: -1
    np.testing.assert_allclose(grid[2, 5], pictures.DIVERGING(0.5))  # tile 1, top right: 0
    np.testing.assert_allclose(grid[5, 2], pictures.DIVERGING(1.0))  # tile 2, bottom left: +1
    assert grid[5, 5, 3] == 0  # the unused fourth slot is transparent
    grey = pictures.TILES(np.nan)
    for line in (grid[0, 3], grid[3, 0], grid[3, 3], grid[1, 3], grid[6, 1]):
        np.testing.assert_allclose(line, grey)


def test_digit_maps_of_a_two_layer_net_are_w1_times_a_column_of_w2() -> None:
    maps = pictures.digit_maps(PARAMS)
    assert maps.shape == (10, 28, 28)
    for d in range(10):
        expected = (PARAMS["w1"].astype(np.float64) @ PARAMS["w2"][:, d]).reshape(28, 28)
        np.testing.assert_allclose(maps[d], expected, rtol=1e-6, atol=1e-9)


def test_digit_maps_of_a_deeper_net_chain_every_weight_matrix() -> None:
    params = MLP([784, 12, 7, 10], rng=np.random.default_rng(2)).params
    maps = pictures.digit_maps(params)
    w1, w2, w3 = (params[f"w{i}"].astype(np.float64) for i in (1, 2, 3))
    for d in range(10):
        expected = np.zeros(784)
        for h1 in range(12):  # the sum over every path pixel -> h1 -> h2 -> d
            for h2 in range(7):
                expected += w1[:, h1] * w2[h1, h2] * w3[h2, d]
        np.testing.assert_allclose(maps[d], expected.reshape(28, 28), rtol=1e-9, atol=1e-12)


def test_digit_maps_refuse_a_non_square_input() -> None:
    with pytest.raises(ValueError, match="not a square image"):
        pictures.digit_maps(MLP([100, 4, 10]).params | {"w1": np.zeros((783, 4))})
