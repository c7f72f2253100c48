"""Small deterministic pictures for the rehearsal datasets: one shape on a plain background,
optionally with a short word, drawn with PIL from explicit arguments (no randomness here)."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

SIZE = 48  # pixels per side; large enough for a 5-letter word in PIL's built-in bitmap font
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (40, 60, 220),
           "yellow": (230, 210, 30), "purple": (150, 40, 170), "orange": (240, 140, 20)}
SHAPES = ("circle", "square", "triangle")
_BACKGROUND = (235, 235, 235)
_TEXT = (10, 10, 10)


def draw(shape: str, colour: str, *, count: int = 1, word: str | None = None) -> Image.Image:
    """Draw `count` copies (1-4) of a coloured shape, and `word` in black along the bottom edge.

    Args:
        shape: one of SHAPES.
        colour: a key of COLOURS.
        count: how many shapes, placed in the cells of a 2x2 grid.
        word: optional text (ASCII, up to ~7 characters fit).

    Returns:
        An RGB image of SIZE x SIZE pixels.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r} is not one of {SHAPES}")
    if colour not in COLOURS:
        raise ValueError(f"colour {colour!r} is not one of {sorted(COLOURS)}")
    if not 1 <= count <= 4:
        raise ValueError(f"count {count} is outside 1..4")
    img = Image.new("RGB", (SIZE, SIZE), _BACKGROUND)
    pen = ImageDraw.Draw(img)
    cell = SIZE // 2
    for k in range(count):
        x0, y0 = (k % 2) * cell + 3, (k // 2) * cell + 2
        box = (x0, y0, x0 + cell - 7, y0 + cell - 9)
        fill = COLOURS[colour]
        if shape == "circle":
            pen.ellipse(box, fill=fill)
        elif shape == "square":
            pen.rectangle(box, fill=fill)
        else:
            pen.polygon([((box[0] + box[2]) / 2, box[1]), (box[0], box[3]), (box[2], box[3])],
                        fill=fill)
    if word:
        pen.text((2, SIZE - 12), word, fill=_TEXT, font=ImageFont.load_default_imagefont())
    return img
