"""A labelled picture grid: the sheet people look at to judge a direction (rows = directions,
columns = strengths). Pillow only; images in ComfyUI's IMAGE layout [N, H, W, 3] in 0…1."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def labelled_grid(images: torch.Tensor, row_labels: list[str], column_labels: list[str],
                  cell_size: int = 0) -> torch.Tensor:
    """Images row after row (len(row_labels) × len(column_labels) of them) as one IMAGE [1, H, W, 3]
    with the row labels on the left and the column labels on top. Cells are enlarged by a whole
    factor (nearest neighbour, so pixels stay sharp) to ``cell_size`` or, with 0, to ≥ 128 px."""
    rows, cols = len(row_labels), len(column_labels)
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected an IMAGE batch [N, H, W, 3], got shape {list(images.shape)}")
    if images.shape[0] != rows * cols:
        raise ValueError(f"images: {images.shape[0]} images do not fill {rows} rows × {cols} columns")
    h, w = images.shape[1:3]
    factor = max(1, (cell_size or 128) // max(h, w))
    ch, cw = h * factor, w * factor
    font = ImageFont.load_default(max(12, min(ch, cw) // 8))
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max(draw.textbbox((0, 0), t, font=font)[2] for t in row_labels) + 12 if any(row_labels) else 0
    top = max(draw.textbbox((0, 0), t, font=font)[3] for t in column_labels) + 12 if any(column_labels) else 0
    gap = 2
    sheet = Image.new("RGB", (left + cols * (cw + gap) - gap, top + rows * (ch + gap) - gap), "white")
    pen = ImageDraw.Draw(sheet)
    pixels = (images.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        tile = Image.fromarray(pixels[i]).resize((cw, ch), Image.NEAREST)
        sheet.paste(tile, (left + c * (cw + gap), top + r * (ch + gap)))
    for c, text in enumerate(column_labels):
        x = left + c * (cw + gap) + cw // 2
        pen.text((x, top // 2), text, fill="black", font=font, anchor="mm")
    for r, text in enumerate(row_labels):
        pen.text((left - 6, top + r * (ch + gap) + ch // 2), text, fill="black", font=font, anchor="rm")
    return torch.from_numpy(np.asarray(sheet).astype(np.float32) / 255.0)[None]
