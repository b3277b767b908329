"""The README's first picture: float vs int8 silhouettes of held-out testbed people and where they differ.

    python benchmarks/readme_figure.py out/demo/alisnet_mnasnet-int8.ptl docs/images/float_vs_int8.png

Runs ``alisnet-export predict --artifact INT8 --compare-float`` on the first three held-out testbed people
(never trained or calibrated on) at 1024 px, and puts the three comparison panels (float | int8 | difference:
green both, red float only, blue int8 only) side by side, with the measured IoU and contour distance.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw


def main(artifact: str, out: str, count: int = 3, height: int = 1024) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "alisnet_export", "predict", "--artifact", artifact, "--compare-float",
                               "--image", f"testbed:heldout:{count}", "--height", str(height), "-o", tmp, "--json"],
                              capture_output=True, text=True, check=True)
        rows = json.loads(proc.stdout)["results"]
        panels = []
        for row in rows:
            panel = Image.open(row["vs_float"]["compare"]).convert("RGB")
            scale = 420 / panel.height
            panel = panel.resize((round(panel.width * scale), 420), Image.LANCZOS)
            canvas = Image.new("RGB", (panel.width, panel.height + 26), "white")
            canvas.paste(panel, (0, 26))
            v = row["vs_float"]
            ImageDraw.Draw(canvas).text((4, 6), f"{Path(row['image']).name}: IoU {v['mask_iou']:.4f}, contour "
                                                f"{v['boundary_mean_px']:.2f} px, {v['pixels_differ']} px differ", fill="black")
            panels.append(canvas)
    width = sum(p.width for p in panels) + 8 * (len(panels) - 1)
    figure = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for p in panels:
        figure.paste(p, (x, 0))
        x += p.width + 8
    figure.save(out)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
