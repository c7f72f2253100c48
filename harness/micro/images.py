"""Rendering micro-world scenes (harness.micro.world.Scene) as small RGB pictures."""

from __future__ import annotations

from PIL import Image, ImageDraw

IMAGE_SIZE = 32
CELL = IMAGE_SIZE // 2
RGB = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (40, 60, 220),
       "yellow": (230, 210, 30), "purple": (150, 40, 170), "white": (250, 250, 250)}
BACKGROUND = (60, 60, 60)


def render(objects) -> Image.Image:
    """Draw a scene given as a sequence of (shape, colour, x, y, dx, dy, size)."""
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for shape, color, x, y, dx, dy, size in objects:
        side = 8 + 2 * int(size)
        x0 = x * CELL + int(dx)
        y0 = y * CELL + int(dy)
        box = (x0, y0, min(x0 + side, IMAGE_SIZE - 1), min(y0 + side, IMAGE_SIZE - 1))
        fill = RGB[color]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([((box[0] + box[2]) / 2, box[1]), (box[0], box[3]), (box[2], box[3])],
                         fill=fill)
    return img
