"""Small pieces every dock widget uses: layer choosers, error display, progress display."""

from __future__ import annotations


def refill_combo(box, names: list[str]) -> None:
    """Replace a combo box's items, keeping the current choice when it still exists."""
    current = box.currentText()
    box.clear()
    box.addItems(names)
    if current in names:
        box.setCurrentText(current)


def layer_names(viewer, pred) -> list[str]:
    return [ly.name for ly in viewer.layers if pred(ly)]


def msi2hist_kind(layer) -> str | None:
    """A layer's role, as this plugin records it in its metadata (layers are found by metadata)."""
    return layer.metadata.get("msi2hist", {}).get("kind")


def source_file(layer) -> str:
    """The file a layer of this plugin was read from (``file`` or ``source`` in its metadata), or ""."""
    md = layer.metadata.get("msi2hist", {})
    return md.get("file") or md.get("source") or ""


def show_user_error(status_label, exc: BaseException) -> None:
    """A readable notification plus the same text in the widget's status line (no traceback)."""
    from napari.utils.notifications import show_error

    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    show_error(msg)
    status_label.setText(msg)


def show_progress(bar, status_label, p) -> None:
    bar.setMaximum(max(1, p.total))
    bar.setValue(p.done)
    status_label.setText(f"{p.stage}: {p.done}/{p.total}" if p.stage else f"{p.done}/{p.total}")


def upsert_image(viewer, name: str, data, **kwargs):
    """Add an image layer, or update the existing one of that name (data and the given properties)."""
    if name in viewer.layers:
        ly = viewer.layers[name]
        ly.data = data
        for k, v in kwargs.items():
            if k not in ("rgb", "colormap", "blending"):  # creation-only or user-owned
                setattr(ly, k, v)
        return ly
    return viewer.add_image(data, name=name, **kwargs)


def layer_pixel_size(layer) -> tuple[float, float] | None:
    """A layer's pixel size (um): from its file (our metadata), else its ``scale`` once a user (or
    the Register widget's pixel field) has set one; None when neither is known. Never assumed."""
    md = layer.metadata.get("msi2hist", {})
    px = md.get("pixel_size_um")
    if px is not None:
        return tuple(float(v) for v in px[-2:])
    scale = tuple(float(v) for v in layer.scale[-2:])
    return None if scale == (1.0, 1.0) else scale


def require_pixel_size(layer, what: str) -> tuple[float, float]:
    """:func:`layer_pixel_size`, or a message that says where to set it."""
    px = layer_pixel_size(layer)
    if px is None:
        raise ValueError(
            f"{layer.name}: no pixel size; set the {what} pixel size (um) in the Register "
            "widget's pixel field (the layer's scale follows)"
        )
    return px
