"""Pictures of simulated scans: points coloured by what each ray hit (matplotlib, no display)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from arspine.datasets.scene import is_bone, label_name
from arspine.navigation.geometry import PointCloud

__all__ = ["LABEL_COLORS", "label_color", "plot_scan", "save_scan_figure"]

#: RGB colours of the non-bone labels; bone levels cycle through a qualitative palette.
LABEL_COLORS: dict[str, tuple[float, float, float]] = {
    "outlier": (0.1, 0.1, 0.1), "flying_pixel": (0.8, 0.1, 0.8), "skin": (0.87, 0.72, 0.53),
    "soft_tissue": (0.65, 0.16, 0.16), "drape": (0.27, 0.51, 0.71),
    "retractor": (0.75, 0.75, 0.75), "tool": (0.95, 0.85, 0.1), "hand": (0.98, 0.6, 0.2),
    "clutter": (0.45, 0.3, 0.15),
}
_BONE = [(0.95, 0.95, 0.85), (0.3, 0.8, 0.3), (0.2, 0.9, 0.9), (1.0, 0.45, 0.75),
         (0.55, 0.45, 0.95), (0.9, 0.9, 0.2)]


def label_color(code: int) -> tuple[float, float, float]:
    """RGB of a label code."""
    name = label_name(code)
    if name in LABEL_COLORS:
        return LABEL_COLORS[name]
    return _BONE[int(code) % len(_BONE)]


def plot_scan(cloud: PointCloud, K: np.ndarray, ax=None, zoom_px: float | None = None,
              point_size: float = 1.0):
    """Scatter the scan as the sensor sees it (pixel coordinates), coloured by label.

    Parameters
    ----------
    cloud : PointCloud
        Sensor-frame points (mm) with ``labels``.
    K : (3, 3)
        Intrinsics used to project (``SensorModel.K``).
    ax : matplotlib Axes, optional
    zoom_px : float, optional
        Limit the view to the bone points' pixel box grown by this margin.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    p = cloud.points
    lab = cloud.labels if cloud.labels is not None else np.zeros(len(p), int)
    keep = p[:, 2] > 1.0
    p, lab = p[keep], lab[keep]
    uv = (p / p[:, 2:3]) @ np.asarray(K).T
    # far first so that what is in front is drawn on top
    order = np.argsort(-p[:, 2])
    uv, lab = uv[order], lab[order]
    for code in np.unique(lab):
        m = lab == code
        ax.scatter(uv[m, 0], uv[m, 1], s=point_size * (2.5 if code >= 100 else 1.0),
                   color=label_color(code), label=f"{label_name(code)} ({m.sum()})",
                   linewidths=0, rasterized=True)
    ax.set_aspect("equal")
    if zoom_px is not None and is_bone(lab).any():
        b = uv[is_bone(lab), :2]
        lo, hi = b.min(0) - zoom_px, b.max(0) + zoom_px
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
    ax.invert_yaxis()
    ax.set_facecolor("white")
    return ax


def save_scan_figure(scan, path: str | os.PathLike, title: str | None = None,
                     zoom_px: float = 25.0, dpi: int = 110) -> Path:
    """Two panels (whole view and wound close-up) of a :class:`SimulatedScan`, written
    atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
    K = scan.sensor.K
    plot_scan(scan.cloud, K, axes[0], point_size=0.6)
    axes[0].set_title(f"{scan.sensor.name}: {len(scan.cloud)} points")
    plot_scan(scan.cloud, K, axes[1], zoom_px=zoom_px, point_size=9.0)
    axes[1].set_title(f"wound close-up (exposed {', '.join(scan.exposed_levels)})")
    handles, labels = axes[1].get_legend_handles_labels()
    h0, l0 = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    for h, lbl in zip(h0, l0):
        key = lbl.split(" (")[0]
        if not any(k.startswith(key + " ") for k in seen):
            seen[lbl] = h
    axes[1].legend(list(seen.values()), list(seen.keys()), loc="center left",
                   bbox_to_anchor=(1.01, 0.5), markerscale=4, fontsize=8)
    for a in axes:
        a.set_xlabel("u (px)")
        a.set_ylabel("v (px)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path


