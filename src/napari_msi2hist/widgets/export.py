"""Export / import dock widget: SpatialData stores, QuPath GeoJSON and elastix files.

Thin: it snapshots the file fields into a frozen config from ``workflows/export.py``, runs the job in
a worker, and turns results into layers (H&E, ion images, landmarks, annotations as Shapes on the H&E
and as Labels on the MSI grid). Paths are typed or picked; nothing is read inside the worker but
files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)

from ..workflows import export as jobs
from ._common import refill_combo, show_user_error
from ._job import JobWidget


def annotation_layers(features, he_px, name: str) -> list:
    """napari layer data tuples for QuPath features on the H&E.

    Parameters
    ----------
    features : list of Feature
        In H&E QuPath pixels.
    he_px : tuple of float
    name : str
        Layer name (points get ``name + " points"``).

    Returns
    -------
    list of tuple
        ``(data, kwargs, "shapes" | "points")`` in H&E world um; holes are their own polygons with the
        feature ``hole`` True (napari shapes have no holes).
    """
    from ..interop.geojson import qupath_xy_to_world_yx_um

    polys, cls, hole = [], [], []
    pts, pcls = [], []
    for f in features:
        for poly in f.polygons:
            for k, ring in enumerate(poly):
                polys.append(qupath_xy_to_world_yx_um(ring, he_px))
                cls.append(f.classification or "Unclassified")
                hole.append(k > 0)
        for p in f.points:
            pts.append(qupath_xy_to_world_yx_um(p[None], he_px)[0])
            pcls.append(f.classification or "Unclassified")
    out = []
    if polys:
        kw = {"name": name, "shape_type": "polygon", "features": {"class": cls, "hole": hole}}
        kw.update(edge_width=2.0, face_color="transparent", edge_color="yellow")
        out.append((polys, kw, "shapes"))
    if pts:
        kw = {"name": f"{name} points", "features": {"class": pcls}, "size": 10.0}
        out.append((np.asarray(pts), kw, "points"))
    return out


class ExportWidget(JobWidget):
    FIELDS = (
        ("he", "H&&E image", "the H&E (fixed) file"),
        ("msi", "imzML", "the MSI (moving) file"),
        ("transform", "transform.json", "from msi2hist register (moving = MSI)"),
        ("annotations", "QuPath GeoJSON", "annotations drawn on the H&E (optional)"),
        ("landmarks_he", "Landmarks H&&E", "napari points CSV on the H&E, world um (optional)"),
        ("landmarks_msi", "Landmarks MSI", "napari points CSV on the MSI, same order (optional)"),
        ("store", "SpatialData store", "a .zarr folder to import"),
        ("out", "Output folder", "where exports go"),
    )

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.last = None
        self.edits: dict[str, QLineEdit] = {}
        form = QFormLayout()
        for key, label, tip in self.FIELDS:
            e = QLineEdit()
            e.setToolTip(tip)
            b = QPushButton("...")
            b.setMaximumWidth(30)
            b.clicked.connect(lambda _=False, k=key: self._browse(k))
            row = QHBoxLayout()
            row.addWidget(e)
            row.addWidget(b)
            form.addRow(label, row)
            self.edits[key] = e
        self.mz = QLineEdit()
        self.mz.setPlaceholderText("m/z list (blank: top 20 peaks)")
        form.addRow("m/z", self.mz)
        self.he_px, self.msi_px = QDoubleSpinBox(), QDoubleSpinBox()
        for box, what in ((self.he_px, "H&E"), (self.msi_px, "MSI")):
            box.setRange(0.0, 10000.0)
            box.setDecimals(3)
            box.setSuffix(" um")
            box.setSpecialValueText("from the file")
            box.setToolTip(f"{what} pixel size, for a file that has none (never assumed)")
        form.addRow("H&&E pixel", self.he_px)
        form.addRow("MSI pixel", self.msi_px)
        self.regions_box = QComboBox()
        self.regions_box.setToolTip("a Labels layer on the MSI grid to export as GeoJSON")
        form.addRow("MSI regions", self.regions_box)
        self.overwrite = QCheckBox("overwrite existing outputs")
        form.addRow("", self.overwrite)
        self.sd_export_btn = QPushButton("Export SpatialData")
        self.sd_import_btn = QPushButton("Import SpatialData")
        self.gj_import_btn = QPushButton("GeoJSON -> MSI")
        self.gj_export_btn = QPushButton("MSI regions -> GeoJSON")
        self.elx_export_btn = QPushButton("Export elastix")
        grid = QGridLayout()
        grid.addWidget(self.sd_export_btn, 0, 0)
        grid.addWidget(self.sd_import_btn, 0, 1)
        grid.addWidget(self.gj_import_btn, 1, 0)
        grid.addWidget(self.gj_export_btn, 1, 1)
        grid.addWidget(self.elx_export_btn, 2, 0)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(grid)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addStretch(1)
        self.sd_export_btn.clicked.connect(self.export_spatialdata)
        self.sd_import_btn.clicked.connect(self.import_spatialdata)
        self.gj_import_btn.clicked.connect(self.annotations_to_msi)
        self.gj_export_btn.clicked.connect(self.regions_to_geojson)
        self.elx_export_btn.clicked.connect(self.export_elastix)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    # ------------------------------------------------------------------ helpers
    def _refresh(self, *_):
        names = [ly.name for ly in self.viewer.layers if ly.__class__.__name__ == "Labels"]
        refill_combo(self.regions_box, names)

    def _browse(self, key):
        if key in ("store", "out"):
            path = QFileDialog.getExistingDirectory(self, key)
        else:
            path, _ = QFileDialog.getOpenFileName(self, key)
        if path:
            self.edits[key].setText(path)

    def _get(self, key, required=True) -> str | None:
        v = self.edits[key].text().strip()
        if required and not v:
            raise ValueError(
                f"give the {dict((k, t) for k, t, _ in self.FIELDS)[key].replace('&&', '&')}"
            )
        return v or None

    def _px(self) -> dict:
        """The pixel sizes typed in the widget (0: the file's own)."""
        return {
            "he_pixel_um": self.he_px.value() or None,
            "msi_pixel_um": self.msi_px.value() or None,
        }

    def _out(self, name: str) -> str:
        return str(Path(self._get("out")) / name)

    def _start(self, job, done):
        """One job at a time; these jobs write files and are short, so they have no Cancel."""
        if self.worker is not None:
            self.status.setText("a job is running")
            return
        self.status.setText("running...")
        self.run_job(job, done)

    def _guard(fn):  # noqa: N805 - a decorator inside the class body
        def wrapped(self, *a):
            try:
                return fn(self)
            except (ValueError, OSError) as e:
                show_user_error(self.status, e)

        wrapped.__name__ = fn.__name__
        return wrapped

    # ------------------------------------------------------------------ exports
    @_guard
    def export_spatialdata(self):
        from ..msi.peaks import parse_mz_list

        mz = tuple(parse_mz_list(self.mz.text())) if self.mz.text().strip() else None
        cfg = jobs.SpatialDataExportConfig(
            he=self._get("he"),
            msi=self._get("msi"),
            out=self._out("section.zarr"),
            transform=self._get("transform", False),
            mz=mz,
            n_peaks=20,
            annotations=self._get("annotations", False),
            landmarks_he=self._get("landmarks_he", False),
            landmarks_msi=self._get("landmarks_msi", False),
            overwrite=self.overwrite.isChecked(),
            **self._px(),
        )

        def done(path):
            self.last = path
            self.edits["store"].setText(str(path))
            self.status.setText(f"wrote {path}")

        self._start(lambda tok: jobs.iter_export_spatialdata(cfg, tok), done)

    @_guard
    def export_elastix(self):
        cfg = jobs.ElastixExportConfig(
            self._get("transform"), self._out("elastix"), self._get("he"),
            self._px()["he_pixel_um"], self.overwrite.isChecked(),
        )  # fmt: skip

        def done(paths):
            self.last = paths
            self.status.setText(f"wrote {len(paths)} elastix file(s); transformix -tp {paths[-1]}")

        self._start(lambda tok: jobs.iter_export_elastix(cfg, tok), done)

    @_guard
    def regions_to_geojson(self):
        name = self.regions_box.currentText()
        if not name:
            raise ValueError("choose a Labels layer on the MSI grid")
        labels = np.asarray(self.viewer.layers[name].data)
        cfg = jobs.MsiRegionsToGeojsonConfig(
            regions="",
            labels=labels.copy(),
            transform=self._get("transform"),
            he=self._get("he"),
            msi=self._get("msi"),
            out=self._out(f"{name}_he.geojson"),
            overwrite=self.overwrite.isChecked(),
            **self._px(),
        )

        def done(path):
            self.last = path
            self.status.setText(f"wrote {path} (H&E pixels; QuPath: File > Import objects)")

        self._start(lambda tok: jobs.iter_msi_regions_to_geojson(cfg, tok), done)

    # ------------------------------------------------------------------ imports
    @_guard
    def annotations_to_msi(self):
        cfg = jobs.AnnotationsToMsiConfig(
            geojson=self._get("annotations"),
            transform=self._get("transform"),
            he=self._get("he"),
            msi=self._get("msi"),
            out_dir=self._out("annotations_msi"),
            overwrite=self.overwrite.isChecked(),
            **self._px(),
        )

        def done(res):
            import tifffile

            from ..interop.geojson import read_geojson
            from ..registration.transforms import Transform

            self.last = res
            _, he_px = jobs.he_geometry(cfg.he)
            _, msi_px, _ = jobs.msi_geometry(cfg.msi)
            for data, kw, kind in annotation_layers(
                read_geojson(cfg.geojson), he_px, "annotations"
            ):
                getattr(self.viewer, f"add_{kind}")(data, **kw)
            lab = tifffile.imread(Path(cfg.out_dir) / "labels_msi.tif").astype(np.int32)
            tr = Transform.load(cfg.transform)
            kw = {"name": "annotation classes (MSI)", "scale": msi_px}
            if tr.is_linear:
                kw["affine"] = tr.napari_affine()
            kw["metadata"] = {"msi2hist": {"kind": "msi_classes", "classes": res["names"]}}
            self.viewer.add_labels(lab, **kw)
            counts = ", ".join(f"{k} {v}" for k, v in res["counts"].items())
            self.status.setText(f"MSI pixels per class: {counts}")

        self._start(lambda tok: jobs.iter_annotations_to_msi(cfg, tok), done)

    @_guard
    def import_spatialdata(self):
        store = self._get("store")
        self._start(
            lambda tok: jobs.iter_read_spatialdata(store, tok),
            lambda sec: self._add_section(sec, Path(store).stem),
        )

    def _add_section(self, sec, name):
        v = self.viewer
        meta = {"msi2hist": {"kind": "he", "file": sec.meta.get("he", ""), "store": name}}
        v.add_image(sec.he_rgb, name=f"{name} H&E", rgb=True, scale=sec.he_px, metadata=meta)
        aff = None
        if sec.transform is not None:
            from ..interop.spatialdata_store import registration_parts

            # napari shows affines only: a B-spline result is drawn with its least-squares affine
            aff = registration_parts(sec.transform, sec.ion_stack.shape[-2:], sec.msi_px)[0]
        a4 = None
        if aff is not None:
            a4 = np.eye(4)
            a4[1:, 1:] = aff
        src = sec.meta.get("imzml", "")
        v.add_image(
            sec.ion_stack,
            name=f"{name} ion images",
            scale=(1.0, *sec.msi_px),
            affine=a4,
            colormap="viridis",
            metadata={"msi2hist": {"kind": "ion_stack", "file": src, "mz": list(sec.mz)}},
        )
        if sec.landmarks_he_um is not None:
            v.add_points(sec.landmarks_he_um, name=f"{name} landmarks H&E", size=15.0)
        if sec.landmarks_msi_um is not None:
            v.add_points(sec.landmarks_msi_um, name=f"{name} landmarks MSI", size=15.0, affine=aff)
        for data, kw, kind in annotation_layers(sec.annotations, sec.he_px, f"{name} annotations"):
            getattr(v, f"add_{kind}")(data, **kw)
        self.last = sec
        self.status.setText(f"imported {name}: H&E, {len(sec.mz)} ion images, annotations")
