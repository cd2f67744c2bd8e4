"""Write two small stand-ins for your own data, with a shortcut to learn instead of the class:

- ``<out>/pets/<class>/*.png``: 32 x 32 images in one folder per class (``cat``, ``dog``); the class is where a
  white square sits (top or bottom half), and the background colour agrees with the class in 90 % of the images;
- ``<out>/shapes.npz``: arrays ``x`` (N, 8), ``y`` and ``attr`` (the shortcut's value, aligned with class c when it
  is c in 90 % of the examples).

    python docs/examples/make_toy_data.py toy
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

AGREE = 0.9
BACKGROUND = ((200, 40, 40), (40, 40, 200))  # the shortcut: red goes with cat, blue with dog


def pets(root: Path, per_class: int, rng: np.random.Generator) -> None:
    for y, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            attr = y if rng.random() < AGREE else 1 - y
            image = np.zeros((32, 32, 3), dtype=np.uint8) + np.array(BACKGROUND[attr], dtype=np.uint8)
            top = int(rng.integers(2, 10)) + (16 if y else 0)
            left = int(rng.integers(2, 20))
            image[top : top + 6, left : left + 10] = 255
            Image.fromarray(image).save(root / name / f"{i:03d}.png")


def shapes(path: Path, n: int, rng: np.random.Generator) -> None:
    y = np.arange(n) % 2
    attr = np.where(rng.random(n) < AGREE, y, 1 - y)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x[:, 0] += 1.0 * (2 * y - 1)  # the class, weakly
    x[:, 1] += 3.0 * (2 * attr - 1)  # the shortcut, strongly
    np.savez(path, x=x, y=y, attr=attr)


def main(out: str) -> None:
    root = Path(out)
    rng = np.random.default_rng(0)
    pets(root / "pets", 60, rng)
    shapes(root / "shapes.npz", 1000, rng)
    sys.stdout.write(f"wrote {root / 'pets'} (120 images in cat/ and dog/) and {root / 'shapes.npz'} (1000 examples)\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "toy")
