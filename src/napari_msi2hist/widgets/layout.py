"""The viewer as the user first sees it: docked widgets that fit a 1920x1080 screen, the H&E visible
under the MSI, and the m/z of the ion image shown by the channel slider.

* Every dock widget sits in a scroll area, tabified on the right, so the window never grows taller
  than the screen however many widgets are docked (a widget taller than its dock scrolls).
* Qt reads ``&`` in tab titles as a mnemonic ("Synthesise H&E" showed "H_E"): tab titles are escaped.
* The window opens maximised on its screen (at most 1920x1080 when the screen is unknown) and
  fitted to the data; MSI layers are drawn translucent over the H&E.
* While an ion-image stack is the selected layer, the text overlay shows the m/z of the channel
  under the slider.
"""

from __future__ import annotations

from qtpy.QtWidgets import QScrollArea

MAX_SIZE = (1920, 1080)


def scrollable(widget) -> QScrollArea:
    """``widget`` in a resizable scroll area (its height then never forces the window's)."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setWidget(widget)
    area.setMinimumWidth(min(widget.sizeHint().width() + 24, 480))
    return area


def escape_tab_mnemonics(dock) -> None:
    """Show ``&`` in a dock's tab title literally: Qt builds dock tabs from the window title and reads
    ``&`` there as a shortcut marker; napari's own title bar shows ``dock.name``, unaffected."""
    t = dock.windowTitle()
    if "&" in t and "&&" not in t:
        dock.setWindowTitle(t.replace("&", "&&"))


def dock_widgets(viewer, items) -> list:
    """Dock ``(widget, name)`` pairs on the right, each in a scroll area, tabified; returns the docks."""
    docks = []
    for w, name in items:
        docks.append(
            viewer.window.add_dock_widget(scrollable(w), name=name, area="right", tabify=True)
        )
        escape_tab_mnemonics(docks[-1])
    if docks:
        docks[0].raise_()
    return docks


def show_he_under_msi(viewer, opacity: float = 0.5) -> None:
    """MSI layers translucent over the H&E, everything in view."""
    for ly in viewer.layers:
        kind = ly.metadata.get("msi2hist", {}).get("kind") if hasattr(ly, "metadata") else None
        if kind in ("msi", "ion_stack"):
            ly.opacity = opacity
            ly.blending = "translucent"
    viewer.reset_view()


def fit_window(viewer, size: tuple[int, int] | None = None) -> None:
    """Resize the window to ``size`` (default: the screen's available area, at most 1920x1080)."""
    win = viewer.window._qt_window
    if size is None:
        screen = win.screen() if hasattr(win, "screen") else None
        geo = screen.availableGeometry() if screen is not None else None
        size = (geo.width(), geo.height()) if geo is not None else MAX_SIZE
        size = (min(size[0], MAX_SIZE[0]), min(size[1], MAX_SIZE[1]))
    win.resize(*size)


def _stack_mz_text(viewer) -> str:
    ly = viewer.layers.selection.active
    md = getattr(ly, "metadata", {}).get("msi2hist", {}) if ly is not None else {}
    mz = md.get("mz")
    if md.get("kind") != "ion_stack" or not mz or ly.ndim < 3:
        return ""
    axis = ly.ndim - 3  # the channel axis is the one before y, x
    c = int(viewer.dims.current_step[viewer.dims.ndim - ly.ndim + axis])
    c = min(max(c, 0), len(mz) - 1)
    return f"{ly.name}: m/z {float(mz[c]):.4f} (channel {c + 1}/{len(mz)})"


def show_stack_mz(viewer) -> None:
    """Keep the text overlay showing the m/z under the channel slider (connected once per viewer)."""
    win = viewer.window._qt_window
    if not win.property("msi2hist_mz_overlay"):

        def update(*_):
            _update_mz(viewer)

        viewer.dims.events.current_step.connect(update)
        viewer.layers.selection.events.active.connect(update)
        win.setProperty("msi2hist_mz_overlay", True)
    _update_mz(viewer)


def _update_mz(viewer) -> None:
    text = _stack_mz_text(viewer)
    canvas = getattr(viewer, "canvas", None)  # napari >= 0.6; text_overlay before
    overlay = canvas.overlays.text if canvas is not None else viewer.text_overlay
    overlay.text = text
    overlay.visible = bool(text)
