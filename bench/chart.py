"""Line charts as PNG files, with nothing but the standard library.

matplotlib is not a dependency of this repository (it would bring numpy, Pillow and
fonts into a lock file that ships services), and a benchmark chart needs little: a
few panels sharing a time axis, lines, axes with round ticks, a legend, and text in
a built-in 5x7 bitmap font. ``render`` draws that on an RGB canvas and writes it with
``zlib`` as a plain 8-bit truecolour PNG.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

Colour = tuple[int, int, int]

WHITE: Colour = (255, 255, 255)
BLACK: Colour = (20, 20, 20)
GREY: Colour = (215, 215, 215)
DARK_GREY: Colour = (110, 110, 110)
PALETTE: tuple[Colour, ...] = (
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
    (188, 189, 34),
    (127, 127, 127),
)

# The classic 5x7 font, column by column, bit 0 at the top; lower case is drawn as
# upper case, and a character it lacks as a blank.
_GLYPHS: dict[str, tuple[int, int, int, int, int]] = {
    " ": (0x00, 0x00, 0x00, 0x00, 0x00),
    "!": (0x00, 0x00, 0x5F, 0x00, 0x00),
    "#": (0x14, 0x7F, 0x14, 0x7F, 0x14),
    "%": (0x23, 0x13, 0x08, 0x64, 0x62),
    "'": (0x00, 0x05, 0x03, 0x00, 0x00),
    "(": (0x00, 0x1C, 0x22, 0x41, 0x00),
    ")": (0x00, 0x41, 0x22, 0x1C, 0x00),
    "*": (0x2A, 0x1C, 0x7F, 0x1C, 0x2A),
    "+": (0x08, 0x08, 0x3E, 0x08, 0x08),
    ",": (0x00, 0x50, 0x30, 0x00, 0x00),
    "-": (0x08, 0x08, 0x08, 0x08, 0x08),
    ".": (0x00, 0x60, 0x60, 0x00, 0x00),
    "/": (0x20, 0x10, 0x08, 0x04, 0x02),
    "0": (0x3E, 0x51, 0x49, 0x45, 0x3E),
    "1": (0x00, 0x42, 0x7F, 0x40, 0x00),
    "2": (0x42, 0x61, 0x51, 0x49, 0x46),
    "3": (0x21, 0x41, 0x45, 0x4B, 0x31),
    "4": (0x18, 0x14, 0x12, 0x7F, 0x10),
    "5": (0x27, 0x45, 0x45, 0x45, 0x39),
    "6": (0x3C, 0x4A, 0x49, 0x49, 0x30),
    "7": (0x01, 0x71, 0x09, 0x05, 0x03),
    "8": (0x36, 0x49, 0x49, 0x49, 0x36),
    "9": (0x06, 0x49, 0x49, 0x29, 0x1E),
    ":": (0x00, 0x36, 0x36, 0x00, 0x00),
    ";": (0x00, 0x56, 0x36, 0x00, 0x00),
    "<": (0x08, 0x14, 0x22, 0x41, 0x00),
    "=": (0x14, 0x14, 0x14, 0x14, 0x14),
    ">": (0x00, 0x41, 0x22, 0x14, 0x08),
    "?": (0x02, 0x01, 0x51, 0x09, 0x06),
    "A": (0x7E, 0x11, 0x11, 0x11, 0x7E),
    "B": (0x7F, 0x49, 0x49, 0x49, 0x36),
    "C": (0x3E, 0x41, 0x41, 0x41, 0x22),
    "D": (0x7F, 0x41, 0x41, 0x22, 0x1C),
    "E": (0x7F, 0x49, 0x49, 0x49, 0x41),
    "F": (0x7F, 0x09, 0x09, 0x09, 0x01),
    "G": (0x3E, 0x41, 0x49, 0x49, 0x7A),
    "H": (0x7F, 0x08, 0x08, 0x08, 0x7F),
    "I": (0x00, 0x41, 0x7F, 0x41, 0x00),
    "J": (0x20, 0x40, 0x41, 0x3F, 0x01),
    "K": (0x7F, 0x08, 0x14, 0x22, 0x41),
    "L": (0x7F, 0x40, 0x40, 0x40, 0x40),
    "M": (0x7F, 0x02, 0x0C, 0x02, 0x7F),
    "N": (0x7F, 0x04, 0x08, 0x10, 0x7F),
    "O": (0x3E, 0x41, 0x41, 0x41, 0x3E),
    "P": (0x7F, 0x09, 0x09, 0x09, 0x06),
    "Q": (0x3E, 0x41, 0x51, 0x21, 0x5E),
    "R": (0x7F, 0x09, 0x19, 0x29, 0x46),
    "S": (0x46, 0x49, 0x49, 0x49, 0x31),
    "T": (0x01, 0x01, 0x7F, 0x01, 0x01),
    "U": (0x3F, 0x40, 0x40, 0x40, 0x3F),
    "V": (0x1F, 0x20, 0x40, 0x20, 0x1F),
    "W": (0x3F, 0x40, 0x38, 0x40, 0x3F),
    "X": (0x63, 0x14, 0x08, 0x14, 0x63),
    "Y": (0x07, 0x08, 0x70, 0x08, 0x07),
    "Z": (0x61, 0x51, 0x49, 0x45, 0x43),
    "[": (0x00, 0x7F, 0x41, 0x41, 0x00),
    "]": (0x00, 0x41, 0x41, 0x7F, 0x00),
    "_": (0x40, 0x40, 0x40, 0x40, 0x40),
    "|": (0x00, 0x00, 0x7F, 0x00, 0x00),
}


class Canvas:
    """An RGB raster, origin at the top left."""

    def __init__(self, width: int, height: int, background: Colour = WHITE) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x: int, y: int, colour: Colour) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(colour)

    def rect(self, x0: int, y0: int, x1: int, y1: int, colour: Colour) -> None:
        """Filled, corners included."""
        x0, x1 = max(0, min(x0, x1)), min(self.width - 1, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height - 1, max(y0, y1))
        if x0 > x1 or y0 > y1:
            return
        row = bytes(colour) * (x1 - x0 + 1)
        for y in range(y0, y1 + 1):
            i = (y * self.width + x0) * 3
            self.pixels[i : i + len(row)] = row

    def line(self, x0: int, y0: int, x1: int, y1: int, colour: Colour, width: int = 1) -> None:
        """Bresenham, thickened by a square pen."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        half = width // 2
        while True:
            if width <= 1:
                self.dot(x0, y0, colour)
            else:
                self.rect(
                    x0 - half, y0 - half, x0 + width - 1 - half, y0 + width - 1 - half, colour
                )
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, words: str, colour: Colour = BLACK, scale: int = 1) -> int:
        """Draw ``words`` with its top left at (x, y); returns the x after it."""
        for char in words.upper():
            columns = _GLYPHS.get(char, _GLYPHS[" "])
            for cx, bits in enumerate(columns):
                for cy in range(7):
                    if bits >> cy & 1:
                        self.rect(
                            x + cx * scale,
                            y + cy * scale,
                            x + (cx + 1) * scale - 1,
                            y + (cy + 1) * scale - 1,
                            colour,
                        )
            x += 6 * scale
        return x

    def png(self) -> bytes:
        raw = bytearray()
        stride = self.width * 3
        for y in range(self.height):
            raw.append(0)  # filter: none
            raw += self.pixels[y * stride : (y + 1) * stride]

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
            + chunk(b"IEND", b"")
        )


def text_width(words: str, scale: int = 1) -> int:
    return len(words) * 6 * scale


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 5 times a power of ten apart)."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low, low + 1]
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}K"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}K".replace(".0K", "K")
    if value == int(value):
        return str(int(value))
    return f"{value:.2g}" if abs(value) < 1 else f"{value:.1f}"


@dataclass
class Series:
    label: str
    points: Sequence[tuple[float, float]]
    colour: Colour | None = None
    # Points further apart than this on x are not joined (no data between them).
    max_gap: float = math.inf


@dataclass
class Panel:
    title: str
    y_label: str
    series: list[Series]
    # Vertical marks at x (a phase starting, a fault injected), labelled.
    marks: list[tuple[float, str]] = field(default_factory=list)


def render(
    path: Path,
    title: str,
    panels: Sequence[Panel],
    *,
    x_label: str = "seconds",
    width: int = 1100,
    panel_height: int = 300,
) -> None:
    """Write the panels, one under the other on a shared x axis, as a PNG."""
    top, gap, left, right, bottom = 44, 56, 84, 24, 40
    height = top + len(panels) * panel_height + (len(panels) - 1) * gap + bottom
    canvas = Canvas(width, height)
    canvas.text(left, 14, title, BLACK, scale=2)
    xs = [x for p in panels for s in p.series for x, _ in s.points] + [
        x for p in panels for x, _ in p.marks
    ]
    x_low, x_high = (min(xs), max(xs)) if xs else (0.0, 1.0)
    x_ticks = nice_ticks(x_low, x_high, 10)
    x_low, x_high = x_ticks[0], x_ticks[-1]
    plot_w = width - left - right
    for n, panel in enumerate(panels):
        y0 = top + n * (panel_height + gap) + 18
        plot_h = panel_height - 18 - 22
        ys = [y for s in panel.series for _, y in s.points if math.isfinite(y)]
        y_ticks = nice_ticks(0.0, max(ys) if ys and max(ys) > 0 else 1.0, 5)
        y_high = y_ticks[-1]

        def px(x: float, x_high: float = x_high, x_low: float = x_low) -> int:
            return left + round((x - x_low) / ((x_high - x_low) or 1) * plot_w)

        def py(y: float, y_high: float = y_high, y0: int = y0, plot_h: int = plot_h) -> int:
            return y0 + plot_h - round(y / (y_high or 1) * plot_h)

        canvas.text(left, y0 - 16, f"{panel.title}  ({panel.y_label})", BLACK)
        for tick in y_ticks:
            canvas.line(left, py(tick), left + plot_w, py(tick), GREY)
            words = label(tick)
            canvas.text(left - 6 - text_width(words), py(tick) - 3, words, DARK_GREY)
        for tick in x_ticks:
            canvas.line(px(tick), y0, px(tick), y0 + plot_h, GREY)
            words = label(tick)
            canvas.text(px(tick) - text_width(words) // 2, y0 + plot_h + 6, words, DARK_GREY)
        canvas.line(left, y0 + plot_h, left + plot_w, y0 + plot_h, BLACK)
        canvas.line(left, y0, left, y0 + plot_h, BLACK)
        for i, (x, words) in enumerate(panel.marks):
            for y in range(y0, y0 + plot_h, 6):
                canvas.line(px(x), y, px(x), min(y + 2, y0 + plot_h), DARK_GREY)
            canvas.text(px(x) + 3, y0 + 2 + (i % 4) * 10, words, DARK_GREY)
        legend_x = left + plot_w
        for i, series in enumerate(panel.series):
            colour = series.colour or PALETTE[i % len(PALETTE)]
            points = sorted((x, y) for x, y in series.points if math.isfinite(y))
            for (xa, ya), (xb, yb) in itertools.pairwise(points):
                if xb - xa <= series.max_gap:
                    canvas.line(px(xa), py(ya), px(xb), py(yb), colour, width=2)
                else:
                    canvas.rect(px(xa) - 1, py(ya) - 1, px(xa) + 1, py(ya) + 1, colour)
            if len(points) == 1:
                canvas.rect(
                    px(points[0][0]) - 2,
                    py(points[0][1]) - 2,
                    px(points[0][0]) + 2,
                    py(points[0][1]) + 2,
                    colour,
                )
            legend_x -= text_width(series.label) + 26
            canvas.rect(legend_x, y0 - 13, legend_x + 12, y0 - 8, colour)
            canvas.text(legend_x + 16, y0 - 16, series.label, BLACK)
    canvas.text(left + plot_w // 2 - text_width(x_label) // 2, height - 16, x_label, DARK_GREY)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canvas.png())
