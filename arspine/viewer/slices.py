"""Axial / coronal / sagittal CT slices in a bone window, with a crosshair."""

from __future__ import annotations

import numpy as np
from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QColor, QImage, QPainter, QPen, QPixmap
from PyQt5.QtWidgets import QLabel, QSizePolicy, QSlider, QVBoxLayout, QWidget

__all__ = ["SliceView", "slice_image", "PLANES", "bone_window_uint8", "lps_orientation"]

#: plane -> voxel axis held fixed
PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}


def bone_window_uint8(hu: np.ndarray) -> np.ndarray:
    """HU -> uint8 grey in the bone window (:func:`arspine.imaging.window_level`)."""
    from arspine.imaging import window_level

    return np.asarray(window_level(hu, preset="bone", dtype="uint8"), dtype=np.uint8)


def lps_orientation(T_ct_from_ijk) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Voxel axis permutation and flips that bring ``hu[i, j, k]`` to LPS order.

    Returns ``perm`` (voxel axis nearest to L, P, S) and ``flip`` (that axis points the
    other way), so ``np.flip(hu.transpose(perm), axes)`` has axis 0 = +L, 1 = +P, 2 = +S.
    """
    d = np.asarray(T_ct_from_ijk, float)[:3, :3]
    d = d / np.linalg.norm(d, axis=0)
    perm, flip, used = [], [], set()
    for world in range(3):
        order = np.argsort(-np.abs(d[world]))
        a = int(next(o for o in order if o not in used))
        used.add(a)
        perm.append(a)
        flip.append(bool(d[world, a] < 0))
    return tuple(perm), tuple(flip)


def slice_image(hu: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2D display array (rows, cols) of one slice of an LPS-ordered volume.

    ``hu`` axis 0 = +L, 1 = +P, 2 = +S (see :func:`lps_orientation`). Radiological views:
    axial rows = P (anterior at top), cols = L (patient's left on the screen's right);
    coronal and sagittal have superior at the top.
    """
    axis = PLANES[plane]
    index = int(np.clip(index, 0, hu.shape[axis] - 1))
    if plane == "axial":
        return hu[:, :, index].T
    if plane == "coronal":
        return hu[:, index, :].T[::-1]
    return hu[index, :, :].T[::-1]


class SliceView(QWidget):
    """One plane: the image (scaled to mm aspect), a slider over slices, a crosshair."""

    index_changed = pyqtSignal(str, int)

    def __init__(self, plane: str, parent: QWidget | None = None):
        super().__init__(parent)
        if plane not in PLANES:
            raise ValueError(f"plane must be one of {list(PLANES)}, got {plane!r}")
        self.plane = plane
        self.title = QLabel(plane)
        self.title.setStyleSheet("color: #ddd; font-weight: bold;")
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignCenter)
        self.image.setMinimumSize(160, 140)
        self.image.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.image.setStyleSheet("background: black;")
        self.slider = QSlider(Qt.Horizontal)
        self.slider.valueChanged.connect(self._on_slider)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.title)
        lay.addWidget(self.image, 1)
        lay.addWidget(self.slider)
        self._grey: np.ndarray | None = None  # uint8 volume, bone window
        self._spacing = np.ones(3)
        self._perm, self._flip = (0, 1, 2), (False, False, False)
        self._shape_ijk = np.ones(3)
        self._cross_ijk: np.ndarray | None = None
        self.pixmap_array: np.ndarray | None = None  # last displayed slice, for tests

    def set_volume(self, grey_ijk: np.ndarray, T_ct_from_ijk) -> None:
        """Show a uint8 windowed volume ``(I, J, K)`` on the grid of ``T_ct_from_ijk``."""
        perm, flip = lps_orientation(T_ct_from_ijk)
        self._perm, self._flip = perm, flip
        self._shape_ijk = np.array(grey_ijk.shape)
        g = np.transpose(grey_ijk, perm)
        axes = tuple(a for a in range(3) if flip[a])
        self._grey = np.flip(g, axes) if axes else g
        spacing = np.linalg.norm(np.asarray(T_ct_from_ijk, float)[:3, :3], axis=0)
        self._spacing = spacing[list(perm)]
        n = self._grey.shape[PLANES[self.plane]]
        self.slider.blockSignals(True)
        self.slider.setRange(0, n - 1)
        self.slider.setValue(n // 2)
        self.slider.blockSignals(False)
        self._render()

    def to_display_index(self, ijk) -> np.ndarray:
        """Voxel ``ijk`` (3,) -> index in the LPS-ordered display volume."""
        ijk = np.asarray(ijk, float)
        out = ijk[list(self._perm)].copy()
        n = self._shape_ijk[list(self._perm)]
        for a in range(3):
            if self._flip[a]:
                out[a] = n[a] - 1 - out[a]
        return out

    @property
    def index(self) -> int:
        return int(self.slider.value())

    def set_index(self, index: int) -> None:
        self.slider.setValue(int(index))  # emits index_changed via _on_slider

    def set_crosshair(self, ijk) -> None:
        """Crosshair at voxel ``ijk`` (float, 3) and move this plane's slice through it."""
        self._cross_ijk = self.to_display_index(ijk)
        self.slider.blockSignals(True)
        self.slider.setValue(int(round(self._cross_ijk[PLANES[self.plane]])))
        self.slider.blockSignals(False)
        self._render()

    def _on_slider(self, value: int) -> None:
        self._render()
        self.index_changed.emit(self.plane, int(value))

    def resizeEvent(self, event):  # noqa: N802 - Qt name
        super().resizeEvent(event)
        self._render()

    def _render(self) -> None:
        if self._grey is None:
            return
        arr = np.ascontiguousarray(slice_image(self._grey, self.plane, self.index))
        self.pixmap_array = arr
        h, w = arr.shape
        qimg = QImage(arr.data, w, h, w, QImage.Format_Grayscale8).copy()
        sx, sy = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[self.plane]
        w_mm, h_mm = w * self._spacing[sx], h * self._spacing[sy]
        box = self.image.size()
        scale = min(box.width() / max(w_mm, 1e-6), box.height() / max(h_mm, 1e-6))
        pw, ph = max(1, int(w_mm * scale)), max(1, int(h_mm * scale))
        pix = QPixmap.fromImage(qimg).scaled(pw, ph, Qt.IgnoreAspectRatio,
                                             Qt.SmoothTransformation)
        if self._cross_ijk is not None:
            c = self._cross_ijk
            ax = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[self.plane]
            u = (c[ax[0]] + 0.5) / w * pw
            if self.plane == "axial":
                v = (c[ax[1]] + 0.5) / h * ph
            else:
                v = (h - 1 - c[ax[1]] + 0.5) / h * ph
            painter = QPainter(pix)
            painter.setPen(QPen(QColor(255, 200, 0, 180), 1))
            painter.drawLine(int(u), 0, int(u), ph)
            painter.drawLine(0, int(v), pw, int(v))
            painter.end()
        self.image.setPixmap(pix)
