"""Sweep gallery: `python experiments/report.py <multirun dir> [--frames 4] [--out <dir>]`.

Writes into the multirun directory (or --out):
- gallery.html: the videos in a grid, the first swept axis as rows and the others as columns, the
  axis values and metric values beneath each video;
- contact_sheet.png: a few frames of every run, labelled, in the same grid;
- runs.csv: one row per run with its swept axes, config hash, metrics and timings.
The swept axes are the command-line overrides whose values differ between runs.
"""
from __future__ import annotations

import argparse
import csv
import html
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np
import yaml

THUMB_H = 96
LABEL_H = 34
PAD = 6
HEADLINE_METRICS = ("temporal_change", "motion_px_per_frame", "sharpness", "brightness")


class ReportError(ValueError):
    pass


def find_runs(sweep_dir: Path) -> list[dict]:
    """Every complete run (a directory with run.json) below ``sweep_dir``, with its overrides."""
    runs = []
    for record_path in sorted(Path(sweep_dir).rglob("run.json")):
        run_dir = record_path.parent
        record = json.loads(record_path.read_text())
        overrides_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        pairs = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith(("hydra.", "+hydra")))
        runs.append({"dir": run_dir, "record": record, "overrides": pairs})
    if not runs:
        raise ReportError(f"{sweep_dir}: holds no runs (no run.json below it); give a multirun directory")
    return runs


def swept_axes(runs: list[dict]) -> list[str]:
    keys = sorted({k for r in runs for k in r["overrides"]})
    return [k for k in keys if len({r["overrides"].get(k) for r in runs}) > 1]


def _sort_key(v):
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def grid(runs: list[dict], axes: list[str]):
    """(row values, column combinations, {(row, col): run}) with the first axis as rows."""
    if not axes:
        return _flat(runs)
    rows = sorted({r["overrides"].get(axes[0]) for r in runs}, key=_sort_key)
    col_values = [sorted({r["overrides"].get(a) for r in runs}, key=_sort_key) for a in axes[1:]]
    cols = list(itertools.product(*col_values))
    cells = {}
    for r in runs:
        key = (r["overrides"].get(axes[0]), tuple(r["overrides"].get(a) for a in axes[1:]))
        cells[key] = r
    return rows, cols, cells


def _flat(runs):
    """No swept axis: the runs side by side in one row."""
    cols = [(str(i),) for i in range(len(runs))]
    return [None], cols, {(None, c): r for c, r in zip(cols, runs)}


def first_metrics(record: dict) -> dict:
    m = record.get("metrics") or {}
    return m if isinstance(m, dict) else (m[0] if m else {})


def write_csv(runs: list[dict], axes: list[str], path: Path) -> None:
    metric_keys = sorted({k for r in runs for k in first_metrics(r["record"])})
    time_keys = sorted({k for r in runs for k in r["record"].get("timings_s", {})})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run_dir", "config_hash", *axes, *metric_keys, *[f"time_{k}" for k in time_keys],
                    "peak_rss_mb"])
        for r in runs:
            m, t = first_metrics(r["record"]), r["record"].get("timings_s", {})
            w.writerow([os.path.relpath(r["dir"], path.parent), r["record"].get("config_hash"),
                        *[r["overrides"].get(a) for a in axes], *[m.get(k) for k in metric_keys],
                        *[t.get(k) for k in time_keys], r["record"].get("peak_rss_mb")])


def _label(r: dict, axes: list[str]) -> str:
    return ", ".join(f"{a}={r['overrides'].get(a)}" for a in axes) or r["dir"].name


def write_html(runs, axes, rows, cols, cells, path: Path) -> None:
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>sweep gallery</title>",
           "<style>body{font-family:sans-serif}td{vertical-align:top;padding:6px;border:1px solid #ccc}"
           "video{max-width:320px;display:block}.m{font-size:12px;color:#333}</style></head><body>",
           f"<h1>{html.escape(path.parent.name)}</h1>",
           f"<p>{len(runs)} runs; rows: {html.escape(axes[0]) if axes else '-'}; columns: "
           f"{html.escape(', '.join(axes[1:])) or '-'}</p>", "<table>", "<tr><th></th>"]
    for c in cols:
        out.append(f"<th>{html.escape(', '.join(f'{a}={v}' for a, v in zip(axes[1:], c)))}</th>")
    out.append("</tr>")
    for row in rows:
        out.append(f"<tr><th>{html.escape(f'{axes[0]}={row}' if axes else '')}</th>")
        for c in cols:
            r = cells.get((row, c))
            if r is None:
                out.append("<td>(missing)</td>")
                continue
            videos = [f for f in r["record"].get("files", []) if f.endswith(".mp4")]
            src = os.path.relpath(r["dir"] / videos[0], path.parent) if videos else ""
            m = first_metrics(r["record"])
            metric_text = "<br>".join(f"{k}: {m[k]:.4g}" for k in HEADLINE_METRICS if k in m)
            total = r["record"].get("timings_s", {}).get("total")
            out.append(f"<td><video src='{html.escape(src)}' controls loop muted autoplay></video>"
                       f"<div class='m'>{html.escape(_label(r, axes))}<br>{metric_text}"
                       f"{f'<br>time: {total:.1f} s' if total else ''}</div></td>")
        out.append("</tr>")
    out += ["</table>", "</body></html>"]
    path.write_text("\n".join(out))


def frame_strip(run_dir: Path, record: dict, n: int) -> np.ndarray:
    files = [f for f in record.get("files", []) if f.endswith(".npy")]
    frames = np.load(run_dir / files[0], mmap_mode="r")
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return np.asarray(frames[idx])


def contact_sheet_size(n_rows: int, n_cols: int, n_frames: int, aspect: float) -> tuple[int, int]:
    """(width, height) in pixels of a contact sheet: each cell is ``n_frames`` thumbnails side by side
    (THUMB_H high) under a label; cells are separated by PAD."""
    thumb_w = max(1, int(round(THUMB_H * aspect)))
    cell_w, cell_h = n_frames * thumb_w, THUMB_H + LABEL_H
    return n_cols * cell_w + (n_cols + 1) * PAD, n_rows * cell_h + (n_rows + 1) * PAD


def write_contact_sheet(runs, axes, rows, cols, cells, path: Path, n_frames: int) -> tuple[int, int]:
    from PIL import Image, ImageDraw

    sample = next(iter(cells.values()))
    first = frame_strip(sample["dir"], sample["record"], 1)[0]
    aspect = first.shape[1] / first.shape[0]
    width, height = contact_sheet_size(len(rows), len(cols), n_frames, aspect)
    thumb_w = max(1, int(round(THUMB_H * aspect)))
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        for j, c in enumerate(cols):
            r = cells.get((row, c))
            x0 = PAD + j * (n_frames * thumb_w + PAD)
            y0 = PAD + i * (THUMB_H + LABEL_H + PAD)
            if r is None:
                draw.text((x0, y0), "(missing)", fill="black")
                continue
            label = _label(r, axes)
            draw.text((x0, y0 + 2), label[:60], fill="black")
            draw.text((x0, y0 + 16), label[60:120], fill="black")
            for k, frame in enumerate(frame_strip(r["dir"], r["record"], n_frames)):
                img = Image.fromarray((np.clip(frame, 0, 1) * 255).round().astype(np.uint8))
                sheet.paste(img.resize((thumb_w, THUMB_H)), (x0 + k * thumb_w, y0 + LABEL_H))
    sheet.save(path)
    return width, height


def report(sweep_dir: str | Path, out_dir: str | Path | None = None, n_frames: int = 4) -> dict:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir}: no such directory")
    out = Path(out_dir) if out_dir else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    runs = find_runs(sweep_dir)
    axes = swept_axes(runs)
    rows, cols, cells = grid(runs, axes)
    write_csv(runs, axes, out / "runs.csv")
    write_html(runs, axes, rows, cols, cells, out / "gallery.html")
    size = write_contact_sheet(runs, axes, rows, cols, cells, out / "contact_sheet.png", n_frames)
    return {"runs": len(runs), "axes": axes, "rows": len(rows), "cols": len(cols), "sheet_size": size,
            "files": [str(out / n) for n in ("gallery.html", "contact_sheet.png", "runs.csv")]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep_dir")
    p.add_argument("--out", default=None, help="where to write (default: the sweep directory)")
    p.add_argument("--frames", type=int, default=4, help="frames per run in the contact sheet")
    a = p.parse_args(argv)
    try:
        info = report(a.sweep_dir, a.out, a.frames)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{info['runs']} runs, axes {info['axes']}: " + ", ".join(info["files"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
