"""Contact sheets for grids: tiles in rows and columns, labels in light bands outside the pictures."""

from __future__ import annotations

from typing import Any

# Labels sit in a light band outside the pictures, dark on light (contrast ~17:1), so they read on any image.
SHEET_BAND = (246, 246, 243)
SHEET_TEXT = (20, 20, 20)
SHEET_PENDING = (222, 222, 218)
SHEET_FAILED = (252, 228, 228)
SHEET_FAILED_TEXT = (150, 0, 0)
SHEET_GAP = 4
SHEET_PAD = 8
SHEET_MAX_WIDTH = 1000  # the tiles' width in all; the row labels' band comes on top
SHEET_TILE = 176  # a saved sheet of 3 × 3 tiles stays near 50 KB


def sheet_tile_size(columns: int) -> int:
    """A tile's side on the sheet: 176 px, smaller beyond five columns so the sheet stays light (~1000 px)."""
    return max(128, min(SHEET_TILE, SHEET_MAX_WIDTH // max(1, columns)))


def _font(size: int):
    """A scalable font when Pillow has one built in (10.1+), else its bitmap font (drawn scaled up)."""
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError):  # older Pillow, or no FreeType
        return None


def _text_size(draw, text: str, font, size: int) -> tuple[int, int]:
    if font is None:
        scale = max(1, size // 10)
        box = draw.textbbox((0, 0), text)
        return (box[2] - box[0]) * scale, (box[3] - box[1] + 3) * scale
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0], int(size * 1.25)


def _draw_text(image, xy: tuple[int, int], text: str, font, size: int, fill) -> None:
    from PIL import Image, ImageDraw
    if font is not None:
        ImageDraw.Draw(image).text(xy, text, font=font, fill=fill)
        return
    scale = max(1, size // 10)  # the bitmap font, drawn once and scaled up without blurring
    probe = ImageDraw.Draw(image)
    box = probe.textbbox((0, 0), text)
    stamp = Image.new("L", (int(box[2]) + 1, int(box[3]) + 3), 0)
    ImageDraw.Draw(stamp).text((0, 0), text, fill=255)
    stamp = stamp.resize((stamp.width * scale, stamp.height * scale), Image.Resampling.NEAREST)
    image.paste(Image.new("RGB", stamp.size, fill), xy, stamp)


def _wrap(draw, text: str, font, size: int, width: int, max_lines: int) -> list[str]:
    """Words on as many lines as fit `width` (at most `max_lines`; the last cut with an ellipsis)."""
    lines: list[str] = []
    for word in text.split() or [""]:
        if lines and _text_size(draw, f"{lines[-1]} {word}", font, size)[0] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += "…"
    out = []
    for line in lines:
        while line and _text_size(draw, line, font, size)[0] > width:
            line = line[:-2] + "…"
        out.append(line)
    return out


def render_sheet(cells: list, *, rows: list[str], columns: list[str], pages: list[str], corner: tuple[str, str],
                 tile: int = 256) -> tuple[Any, dict]:
    """A contact sheet: `cells` (image or None, status line, failed) page after page, row-major; column labels
    in a band above, row labels in a band on the left, page titles above each page; unfinished tiles drawn
    as placeholders with their status. Returns (PIL image, layout: every rectangle as [x, y, w, h])."""
    from PIL import Image, ImageDraw
    size = 20 if tile >= 192 else 16
    font, small = _font(size), _font(size - 4)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_size(probe, "Hg", font, size)[1]
    left_texts = list(rows) + list(corner)
    left = min(max(_text_size(probe, t, font, size)[0] for t in left_texts) + 2 * SHEET_PAD, 240)
    left = max(left, 60)
    col_lines = [_wrap(probe, c, font, size, tile - 2 * SHEET_PAD, 4) for c in columns]  # prompts need room
    top = max(len(lines) for lines in col_lines) * line_h + 2 * SHEET_PAD
    top = max(top, 2 * line_h + 2 * SHEET_PAD)  # the corner's two lines
    title = line_h + 2 * SHEET_PAD if any(pages) else 0
    page_h = title + top + len(rows) * (tile + SHEET_GAP)
    width = left + len(columns) * (tile + SHEET_GAP)
    sheet = Image.new("RGB", (width, page_h * len(pages)), SHEET_BAND)
    draw = ImageDraw.Draw(sheet)
    layout: dict = {"tiles": [], "row_labels": [], "column_labels": [], "page_titles": [], "bands": []}
    index = 0
    for p, page_title in enumerate(pages):
        y0 = p * page_h
        if title:
            _draw_text(sheet, (SHEET_PAD, y0 + SHEET_PAD), page_title, font, size, SHEET_TEXT)
            layout["page_titles"].append([0, y0, width, title])
        band_y = y0 + title
        layout["bands"] += [[0, band_y, width, top], [0, band_y + top, left, page_h - title - top]]
        for i, text in enumerate(corner):
            if text:
                cut = _wrap(probe, text, small, size - 4, left - 2 * SHEET_PAD, 1)[0]
                _draw_text(sheet, (SHEET_PAD, band_y + SHEET_PAD + i * line_h), cut, small, size - 4, SHEET_TEXT)
        for c, lines in enumerate(col_lines):
            x = left + c * (tile + SHEET_GAP)
            for n, line in enumerate(lines):
                _draw_text(sheet, (x + SHEET_PAD, band_y + SHEET_PAD + n * line_h), line, font, size, SHEET_TEXT)
            layout["column_labels"].append([x, band_y, tile, top])
        for r, text in enumerate(rows):
            y = band_y + top + r * (tile + SHEET_GAP)
            for n, line in enumerate(_wrap(probe, text, font, size, left - 2 * SHEET_PAD,
                                           max(1, (tile - 2 * SHEET_PAD) // line_h))):
                _draw_text(sheet, (SHEET_PAD, y + SHEET_PAD + n * line_h), line, font, size, SHEET_TEXT)
            layout["row_labels"].append([0, y, left, tile])
            for c in range(len(columns)):
                x = left + c * (tile + SHEET_GAP)
                image, status, failed = cells[index]
                index += 1
                layout["tiles"].append([x, y, tile, tile])
                if image is not None:
                    sheet.paste(image, (x + (tile - image.width) // 2, y + (tile - image.height) // 2))
                    continue
                draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=SHEET_FAILED if failed else SHEET_PENDING)
                ink = SHEET_FAILED_TEXT if failed else SHEET_TEXT
                for n, line in enumerate(_wrap(probe, status, small, size - 4, tile - 2 * SHEET_PAD, 6)):
                    _draw_text(sheet, (x + SHEET_PAD, y + SHEET_PAD + n * line_h), line, small, size - 4, ink)
    return sheet, layout
