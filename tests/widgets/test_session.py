"""The per-viewer session (widgets/session.py) that replaced the module globals the Train widget
changed in the Synthesise widget's module."""

import gc

from napari_msi2hist.widgets.session import Session, session_for


class _Viewer:  # anything weakly referenceable stands for a viewer
    pass


class _Sub:
    def __init__(self):
        self.seen = []

    def on_checkpoint(self, path):
        self.seen.append(path)


def test_session_records_once_and_tells_live_subscribers():
    s = Session()
    a, b = _Sub(), _Sub()
    s.subscribe(a.on_checkpoint)
    s.subscribe(b.on_checkpoint)
    s.add_checkpoint("one.pt")
    s.add_checkpoint("one.pt")
    assert s.checkpoints == ("one.pt",)
    assert a.seen == b.seen == ["one.pt", "one.pt"]
    del b
    gc.collect()
    s.add_checkpoint("two.pt")  # a collected subscriber is not kept alive, and is dropped
    assert a.seen[-1] == "two.pt" and len(s._subscribers) == 1

    def deleted(path):
        raise RuntimeError("wrapped C/C++ object has been deleted")

    s.subscribe(deleted)
    s.add_checkpoint("three.pt")
    assert len(s._subscribers) == 1 and s.checkpoints == ("one.pt", "two.pt", "three.pt")


def test_one_session_per_viewer_forgotten_with_it():
    from napari_msi2hist.widgets import session as mod

    v1, v2 = _Viewer(), _Viewer()
    assert session_for(v1) is session_for(v1)
    assert session_for(v1) is not session_for(v2)
    session_for(v1).add_checkpoint("a.pt")
    assert session_for(v2).checkpoints == ()
    n = len(mod._SESSIONS)
    del v1
    gc.collect()
    assert len(mod._SESSIONS) == n - 1


def test_synthesis_widget_selects_a_checkpoint_added_in_its_viewer_only(make_napari_viewer):
    from napari_msi2hist.widgets.synthesis import SynthesisWidget
    from napari_msi2hist.widgets.training import TrainWidget

    v1, v2 = make_napari_viewer(), make_napari_viewer()
    w1, w2 = SynthesisWidget(v1), SynthesisWidget(v2)
    session_for(v1).add_checkpoint("/runs/a/model.pt")
    assert w1.ckpt_box.currentText() == "/runs/a/model.pt"
    assert [w1.ckpt_box.itemText(i) for i in range(w1.ckpt_box.count())] == [
        "/runs/a/model.pt",
        "demo",
    ]
    assert w2.ckpt_box.currentText() == "demo" and w2.ckpt_box.count() == 1
    # a widget opened later offers it too, as does the Train widget's base chooser
    assert SynthesisWidget(v1).ckpt_box.findText("/runs/a/model.pt") == 0
    t = TrainWidget(v1)
    assert t.base.findText("/runs/a/model.pt") >= 0
