"""`report.html`: one self-contained page per eval run, readable offline and shareable.

It holds an RD plot per metric (file bpp on x, as SVG), the per-image table, and for every
image a side-by-side of the original and the decoded crop with a slider over the operating
points. Every plot and picture is embedded (SVG inline, PNG as data URIs), so the file opens
anywhere with no server and no network.

A small script marks the page when every picture has decoded (`#status` reads
`N/N pictures loaded`): a headless browser can check that the page works, not only that the
file exists.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from gicl.evaluation.metric_names import LOWER_IS_BETTER

CROP = 256  # side of the original/decoded crops shown per image

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots svg{width:420px;height:auto}
.pair{display:inline-block;margin:0 1.5em 1.5em 0;vertical-align:top}
.pair img{width:256px;height:256px;image-rendering:pixelated;border:1px solid #aaa}
.pair figure{display:inline-block;margin:0 .5em 0 0}figcaption{font-size:.8em}
"""

SCRIPT = """
for (const pair of document.querySelectorAll('.pair')) {
  const slider = pair.querySelector('input'), img = pair.querySelector('img.decoded');
  const cap = pair.querySelector('figcaption.decoded'), views = JSON.parse(pair.dataset.views);
  const show = () => { const v = views[slider.value]; img.src = v.src; cap.textContent = v.label; };
  slider.addEventListener('input', show); show();
}
window.addEventListener('load', () => {
  const pictures = [...document.images], ok = pictures.filter(i => i.complete && i.naturalWidth > 0);
  const plots = document.querySelectorAll('.plots svg').length;
  document.getElementById('status').textContent =
    `${ok.length}/${pictures.length} pictures loaded, ${plots} plots`;
});
"""


def _png_uri(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.asarray(image))).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def center_crop_uint8(image: np.ndarray, size: int = CROP) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top:top + size, left:left + size]


def _rd_svg(summary: dict[str, Any], metric: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(summary["points"], key=lambda p: p["bpp"])
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.plot([p["bpp"] for p in points], [p[metric] for p in points], "o-",
            label=summary["model"]["codec"])
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    unit = " (dB)" if metric == "psnr" else ""
    ax.set(xlabel="bpp (whole file)", ylabel=f"{metric}{unit}, {better} is better", title=metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _table(rows: list[dict[str, Any]], metrics: list[str]) -> str:
    keys = ["image", "tag", "bytes", "bpp", *[m for m in metrics if m in rows[0]], "encode_ms",
            "decode_ms"]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)

    def cell(value: Any) -> str:
        return f"<td>{value:.4f}</td>" if isinstance(value, float) else f"<td>{html.escape(str(value))}</td>"

    body = "".join("<tr>" + "".join(cell(r[k]) for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any],
                 originals: dict[str, np.ndarray]) -> Path:
    """Write `out/report.html` from the eval rows, summary, the originals' 8-bit center crops
    (`center_crop_uint8`) and the reconstructions already saved under `out/recon/<tag>/`."""
    from PIL import Image

    from gicl.images import write_file

    metrics = [m for m in summary["metrics"] if m in summary["points"][0]]
    plots = "".join(_rd_svg(summary, m) for m in metrics)
    pairs = []
    for name, original in originals.items():
        views = []
        for r in (r for r in rows if r["image"] == name):
            decoded = np.asarray(Image.open(out / "recon" / r["tag"] / f"{Path(name).stem}.png"))
            quality = f", PSNR {r['psnr']:.2f} dB" if "psnr" in r else ""
            views.append({"src": _png_uri(center_crop_uint8(decoded)),
                          "label": f"{r['tag']} {r['point']}: {r['bpp']:.4f} bpp{quality}"})
        pairs.append(
            f"<div class='pair' data-views='{html.escape(json.dumps(views))}'>"
            f"<figure><img alt='original {html.escape(name)}' src='{_png_uri(original)}'>"
            f"<figcaption>{html.escape(name)} (original)</figcaption></figure>"
            f"<figure><img class='decoded' alt='decoded {html.escape(name)}'>"
            f"<figcaption class='decoded'></figcaption></figure><br>"
            f"<label>operating point <input type='range' min='0' max='{len(views) - 1}' value='0'>"
            f"</label></div>")
    model, machine = summary["model"], summary["machine"]
    where = (f"{machine.get('cpu')}, {machine.get('torch_threads')} threads, device "
             f"{machine.get('device')}, torch {machine.get('torch')}")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>gicl eval: {html.escape(model['codec'])}</title><style>{STYLE}</style></head><body>"
        f"<h1>gicl eval: {html.escape(model['codec'])}</h1>"
        f"<p>{html.escape(str(model['path']))} on {summary['images']} image(s) from "
        f"{html.escape(summary['data'])}; {html.escape(where)}</p>"
        "<p id='status'>loading…</p>"
        f"<h2>Rate–distortion</h2><div class='plots'>{plots}</div>"
        f"<h2>Original and decoded (center {CROP}×{CROP} crops)</h2>{''.join(pairs)}"
        f"<h2>Per image</h2>{_table(rows, metrics)}"
        f"<script>{SCRIPT}</script></body></html>")
    path = out / "report.html"
    write_file(path, page.encode())
    return path
