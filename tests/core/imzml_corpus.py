"""A seeded mutation corpus of imzML/ibd pairs and an independent slow reference reader.

Used by tests/core/test_imzml_fuzz.py (a few hundred cases per CI run) and by
benchmarks/bench_fuzz_imzml.py (thousands). Seeds: the real files in ../shared/data/imzml and small
files written with :class:`napari_msi2hist.io.imzml_writer.ImzMLWriter`. Each case applies 1-3
mutations to the XML and/or the .ibd. The reference reader (:func:`reference_images`) walks the XML
with ElementTree (its own code, not the reader's), reads each spectrum's arrays with plain file reads
and sums ``intensity[(mz >= lo) & (mz <= hi)]`` per pixel (first spectrum at a pixel wins).
"""

from __future__ import annotations

import hashlib
import re
import signal
import tracemalloc
import uuid
import warnings
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REAL = ["Example_Continuous", "Example_Processed", "MatrixTests_N2", "Combat_40pixel"]

# ------------------------------------------------------------------------------------- seeds


def write_generated_seeds(d: Path) -> list[Path]:
    """Small imzML files of several layouts and dtypes (continuous, processed, empty spectra)."""
    from napari_msi2hist.io.imzml_writer import ImzMLWriter

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out = []
    axis = np.linspace(100.0, 200.0, 64)
    p = d / "gen_cont.imzML"
    with ImzMLWriter(p, mz_axis=axis, pixel_size_um=(10.0, 10.0)) as w:
        for y in range(1, 4):
            for x in range(1, 5):
                w.add_spectrum(x, y, rng.random(64, dtype=np.float32) * 100)
    out.append(p)
    for name, mzd, itd in (
        ("gen_proc64", np.float64, np.float32),
        ("gen_proc32", np.float32, np.int32),
    ):
        p = d / f"{name}.imzML"
        with ImzMLWriter(p, mode="processed", mz_dtype=mzd, int_dtype=itd) as w:
            for i in range(20):
                n = int(rng.integers(0, 30))
                mz = np.sort(rng.uniform(100.0, 110.0, n))
                w.add_spectrum(i % 5 + 1, i // 5 + 1, rng.integers(1, 1000, n), mz=mz)
        out.append(p)
    return out


# ------------------------------------------------------------------------------------- mutations

_RE_VAL = {
    acc: re.compile(rb'accession="' + acc.encode() + rb'"[^>]*?value="([^"]*)"')
    for acc in (
        "IMS:1000050",
        "IMS:1000051",
        "IMS:1000102",
        "IMS:1000103",
        "IMS:1000042",
        "IMS:1000043",
    )
}


@dataclass
class Case:
    seed_name: str
    xml: bytes
    ibd: bytes | None
    mz_dt: np.dtype = np.dtype("<f4")
    int_dt: np.dtype = np.dtype("<f4")
    ops: list[str] = field(default_factory=list)
    should_open: bool = True  # every mutation applied keeps the file valid imzML


def _values(xml: bytes, acc: str) -> list[tuple[int, int]]:
    return [m.span(1) for m in _RE_VAL[acc].finditer(xml)]


def _set_value(xml: bytes, span: tuple[int, int], text: str) -> bytes:
    return xml[: span[0]] + text.encode() + xml[span[1] :]


def _tag_gaps(xml: bytes) -> list[int]:
    """Positions just after a '>' inside the spectrum list (between tags)."""
    a = xml.find(b"<spectrumList")
    b = xml.rfind(b"</spectrumList>")
    if a < 0 or b < 0:
        return []
    return [a + m.end() for m in re.finditer(rb">", xml[a:b])][1:]


def _arrays(xml: bytes, ibd: bytes) -> list[tuple[int, int, int, int]]:
    """(mz offset, mz length, int offset, int length) per spectrum in document order, when simple."""
    offs = [int(xml[s:e]) for s, e in _values(xml, "IMS:1000102")]
    lens = [int(xml[s:e]) for s, e in _values(xml, "IMS:1000103")]
    if len(offs) != len(lens) or len(offs) % 2:
        return []
    return [(offs[i], lens[i], offs[i + 1], lens[i + 1]) for i in range(0, len(offs), 2)]


def mutate(case: Case, rng: np.random.Generator) -> Case:
    xml, ibd = case.xml, case.ibd
    ops = [
        "truncate_xml",
        "cdata_fake",
        "pi_fake",
        "comment_fake",
        "userparam_fake",
        "swap_coords",
        "dup_coords",
        "length_neg",
        "length_huge",
        "offset_neg",
        "offset_huge",
        "length_mismatch",
        "unsorted_mz",
        "bad_uuid_xml",
        "bad_uuid_ibd",
        "not_wellformed",
        "encoding_junk",
        "huge_raster",
        "truncate_ibd",
        "flip_ibd",
        "coord_huge",
        "value_format",
        "single_quotes",
        "drop_param",
        "entity",
        "whitespace_eq",
        "nan_ibd",
    ]
    op = ops[int(rng.integers(len(ops)))]
    valid = True
    gaps = _tag_gaps(xml)
    xs, ys = _values(xml, "IMS:1000050"), _values(xml, "IMS:1000051")
    fake = (
        b'<cvParam accession="IMS:1000050" value="%d"/><cvParam accession="IMS:1000102" value="%d"/>'
        % (
            int(rng.integers(1, 5)),
            int(rng.integers(0, 10**6)),
        )
    )
    if op == "truncate_xml":
        xml = xml[: int(rng.integers(0, len(xml)))]
        valid = False
    elif op in ("cdata_fake", "pi_fake", "comment_fake", "userparam_fake") and gaps:
        at = gaps[int(rng.integers(len(gaps)))]
        ins = {
            "cdata_fake": b"<![CDATA[" + fake + b"]]>",
            "pi_fake": b"<?fake " + fake.replace(b"?>", b"") + b"?>",
            "comment_fake": b"<!-- " + fake + b" -->",
            "userparam_fake": b'<userParam name="note" value=\''
            + fake.replace(b"<", b"").replace(b">", b"")
            + b"'/>",
        }[op]
        # CDATA / userParam inside a spectrum are text/children that change nothing
        xml = xml[:at] + ins + xml[at:]
    elif op == "swap_coords" and len(xs) > 1:
        i, j = rng.choice(len(xs), 2, replace=False)
        a, b = xml[slice(*xs[i])], xml[slice(*xs[j])]
        if xs[i][0] > xs[j][0]:
            i, j, a, b = j, i, b, a
        xml = xml[: xs[i][0]] + b + xml[xs[i][1] : xs[j][0]] + a + xml[xs[j][1] :]
    elif op == "dup_coords" and len(xs) > 1 and len(ys) == len(xs):
        i, j = sorted(rng.choice(len(xs), 2, replace=False).tolist())
        # give spectrum j the coordinates of spectrum i (later spans first so earlier ones hold)
        xv, yv = xml[slice(*xs[i])].decode(), xml[slice(*ys[i])].decode()
        xml = _set_value(xml, ys[j], yv)
        xml = _set_value(xml, xs[j], xv)
    elif op in ("length_neg", "length_huge", "length_mismatch"):
        sp = _values(xml, "IMS:1000103")
        if sp:
            k = int(rng.integers(len(sp)))
            cur = int(xml[slice(*sp[k])])
            new = {
                "length_neg": str(int(rng.choice([-1, -2, -(2**31)]))),
                "length_huge": str(int(rng.choice([2**31, 2**40, 2**62, 10**30]))),
                "length_mismatch": str(max(0, cur + int(rng.choice([-3, -1, 1, 5])))),
            }[op]
            xml = _set_value(xml, sp[k], new)
            valid = False
    elif op in ("offset_neg", "offset_huge"):
        sp = _values(xml, "IMS:1000102")
        if sp:
            k = int(rng.integers(len(sp)))
            new = (
                str(int(rng.choice([-1, -16, -(2**31)])))
                if op == "offset_neg"
                else str(int(rng.choice([len(ibd or b"") + 1, 2**40, 2**63 - 1, 10**25, 8])))
            )
            xml = _set_value(xml, sp[k], new)
            valid = False
    elif op == "unsorted_mz" and ibd is not None:
        arrs = _arrays(xml, ibd)
        dt = case.mz_dt
        shared = len({a[0] for a in arrs}) == 1
        if arrs:
            k = int(rng.integers(len(arrs)))
            mo, ml, io_, il = arrs[k]
            if ml > 1 and not shared and mo + ml * dt.itemsize <= len(ibd):
                b = bytearray(ibd)
                mz = np.frombuffer(bytes(b[mo : mo + ml * dt.itemsize]), dt)
                perm = rng.permutation(ml)
                b[mo : mo + ml * dt.itemsize] = mz[perm].tobytes()
                # permute intensities the same way: the spectrum stays the same set of peaks
                isz = case.int_dt.itemsize
                if io_ + il * isz <= len(b) and il == ml:
                    it = np.frombuffer(bytes(b[io_ : io_ + il * isz]), case.int_dt)
                    b[io_ : io_ + il * isz] = it[perm].tobytes()
                ibd = bytes(b)
    elif op == "bad_uuid_xml":
        xml = re.sub(
            rb'(accession="IMS:1000080"[^>]*?value=")[^"]*',
            rb"\g<1>" + str(uuid.UUID(int=int(rng.integers(2**62)))).encode(),
            xml,
        )
        valid = False
    elif op == "bad_uuid_ibd" and ibd is not None and len(ibd) >= 16:
        ibd = bytes(rng.integers(0, 256, 16, dtype=np.uint8)) + ibd[16:]
        valid = False
    elif op == "not_wellformed":
        kind = int(rng.integers(4))
        if kind == 0 and b"</spectrum>" in xml:
            i = xml.find(b"</spectrum>", int(rng.integers(len(xml))))
            i = i if i >= 0 else xml.find(b"</spectrum>")
            xml = xml[:i] + xml[i + 11 :]
        elif kind == 1:
            i = int(rng.integers(len(xml)))
            xml = xml[:i] + b"<" + xml[i:]
        elif kind == 2:
            i = xml.find(b'accession="', int(rng.integers(len(xml))))
            if i > 0:
                xml = xml[:i] + b'accession="X" ' + xml[i:]  # duplicate attribute
        else:
            i = xml.rfind(b">", 0, int(rng.integers(1, len(xml))))
            if i > 0:
                xml = xml[:i] + xml[i + 1 :]
        valid = False
    elif op == "encoding_junk":
        kind = int(rng.integers(3))
        if kind == 0:
            i = int(rng.integers(len(xml)))
            xml = xml[:i] + bytes(rng.integers(128, 256, 4, dtype=np.uint8)) + xml[i:]
        elif kind == 1:
            xml = xml.replace(b'encoding="UTF-8"', b'encoding="UTF-16"', 1)
        else:
            xml = xml.replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"', 1)
            valid = None  # latin-1 reading of plain ASCII: still valid
        if valid is not None:
            valid = False
        else:
            valid = True
    elif op == "huge_raster":
        for acc, v in (("IMS:1000042", "30000"), ("IMS:1000043", "30000")):
            sp = _values(xml, acc)
            if sp:
                xml = _set_value(xml, sp[0], v)
    elif op == "truncate_ibd" and ibd is not None:
        ibd = ibd[: int(rng.integers(0, len(ibd)))]
        valid = False
    elif op == "flip_ibd" and ibd is not None and len(ibd) > 16:
        b = bytearray(ibd)
        for _ in range(int(rng.integers(1, 20))):
            b[int(rng.integers(16, len(b)))] = int(rng.integers(256))
        ibd = bytes(b)
        valid = None  # usually still readable; images must still equal the reference
    elif op == "nan_ibd" and ibd is not None and len(ibd) > 24:
        b = bytearray(ibd)
        i = int(rng.integers(16, len(b) - 8)) // 4 * 4
        b[i : i + 4] = np.array([np.nan], "<f4").tobytes()
        ibd = bytes(b)
        valid = None
    elif op == "coord_huge" and xs:
        k = int(rng.integers(len(xs)))
        xml = _set_value(xml, xs[k], str(int(rng.choice([10**6, 2**31, 10**12]))))
        valid = None  # far-away pixel: a valid but huge raster (refused by the memory budget)
    elif op == "value_format" and xs:
        k = int(rng.integers(len(xs)))
        v = int(xml[slice(*xs[k])])
        xml = _set_value(xml, xs[k], str(rng.choice([f"+{v}", f"0{v}", f" {v}", f"{v}.0", "x"])))
        valid = None
    elif op == "single_quotes":
        sp = _values(xml, "IMS:1000051")
        if sp:
            k = int(rng.integers(len(sp)))
            s, e = sp[k]
            xml = xml[: s - 1] + b"'" + xml[s:e] + b"'" + xml[e + 1 :]
    elif op == "drop_param":
        acc = str(rng.choice(["IMS:1000050", "IMS:1000102", "IMS:1000103"]))
        ms = list(re.finditer(rb"<cvParam[^>]*" + acc.encode() + rb"[^>]*/>", xml))
        if ms:
            m = ms[int(rng.integers(len(ms)))]
            xml = xml[: m.start()] + xml[m.end() :]
            valid = False
    elif op == "entity":
        i = xml.find(b"<mzML")
        xml = xml[:i] + b'<!DOCTYPE mzML [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + xml[i:]
        valid = False
    elif op == "whitespace_eq":
        sp = _values(xml, "IMS:1000050")
        if sp:
            s, _e = sp[int(rng.integers(len(sp)))]
            j = xml.rfind(b"value=", 0, s)
            xml = xml[:j] + b"value = " + xml[j + 6 :]
    if valid is False:
        case.should_open = False
    elif valid is None:
        case.should_open = False  # may or may not open; no expectation
    return Case(
        case.seed_name, xml, ibd, case.mz_dt, case.int_dt, case.ops + [op], case.should_open
    )


def build_corpus(seeds: dict[str, tuple], n: int, seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    names = sorted(seeds)
    out = []
    for _ in range(n):
        name = names[int(rng.integers(len(names)))]
        xml, ibd, mz_dt, int_dt = seeds[name]
        c = Case(name, xml, ibd, mz_dt, int_dt)
        for _k in range(int(rng.choice([1, 1, 2, 3]))):
            c = mutate(c, rng)
        out.append(c)
    return out


def load_seeds(shared: Path | None, gen_dir: Path) -> dict[str, tuple]:
    """name -> (xml bytes, ibd bytes, m/z dtype, intensity dtype) of every seed file."""
    from napari_msi2hist.io.imzml import ImzMLFile

    paths = [shared / f"{n}.imzML" for n in REAL] if shared is not None else []
    paths += write_generated_seeds(gen_dir)
    seeds = {}
    for p in paths:
        with ImzMLFile(p) as imz:
            dts = (imz.mz_dtype, imz.int_dtype)
        seeds[p.stem] = (p.read_bytes(), p.with_suffix(".ibd").read_bytes(), *dts)
    return seeds


# ------------------------------------------------------------------------------------- reference

_DT = {
    "MS:1000521": "<f4",
    "MS:1000523": "<f8",
    "MS:1000520": "<f2",
    "MS:1000519": "<i4",
    "MS:1000522": "<i8",
    "IMS:1000141": "<i4",
    "IMS:1000142": "<i8",
}
_DT_NAME = {
    "32-bit float": "<f4",
    "64-bit float": "<f8",
    "16-bit float": "<f2",
    "32-bit integer": "<i4",
    "64-bit integer": "<i8",
}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


class ReferenceError_(Exception):
    pass


def reference_spectra(xml_path: Path) -> list[dict]:
    """Spectra as the imzML says, by ElementTree: x, y, (offset, length, dtype) of both arrays."""
    root = ET.parse(xml_path).getroot()
    groups: dict[str, list[ET.Element]] = {}
    for g in root.iter():
        if _local(g.tag) == "referenceableParamGroup":
            groups[g.get("id", "")] = [c for c in g if _local(c.tag) == "cvParam"]

    def params(el: ET.Element, stop_at_arrays: bool):
        """cvParams below ``el`` in document order, group refs expanded in place."""
        for c in el:
            t = _local(c.tag)
            if t == "cvParam":
                yield c
            elif t == "referenceableParamGroupRef":
                yield from groups.get(c.get("ref", ""), [])
            elif stop_at_arrays and t == "binaryDataArray":
                continue
            else:
                yield from params(c, stop_at_arrays)

    out = []
    for s in root.iter():
        if _local(s.tag) != "spectrum":
            continue
        sp = {"x": None, "y": None, "mz": None, "int": None}
        for p in params(s, True):
            acc, v = p.get("accession", ""), p.get("value", "")
            if acc == "IMS:1000050":
                sp["x"] = int(v)
            elif acc == "IMS:1000051":
                sp["y"] = int(v)
        for a in s.iter():
            if _local(a.tag) != "binaryDataArray":
                continue
            d = {"kind": None, "dtype": None, "off": None, "len": None}
            for p in params(a, False):
                acc, name, v = p.get("accession", ""), p.get("name", ""), p.get("value", "")
                nm = name if not acc else ""
                if acc == "MS:1000514" or nm == "m/z array":
                    d["kind"] = "mz"
                elif acc == "MS:1000515" or nm == "intensity array":
                    d["kind"] = "int"
                elif acc in _DT:
                    d["dtype"] = _DT[acc]
                elif nm in _DT_NAME:
                    d["dtype"] = _DT_NAME[nm]
                elif acc == "IMS:1000102":
                    d["off"] = int(v)
                elif acc == "IMS:1000103":
                    d["len"] = int(v)
            if d["kind"]:
                sp[d["kind"]] = d
        out.append(sp)
    return out


def reference_images(xml_path: Path, ibd_path: Path, lo, hi, shape_yx) -> np.ndarray:
    """(C, Y, X) float64 sums, first spectrum at a pixel wins."""
    specs = reference_spectra(xml_path)
    img = np.zeros((len(lo), *shape_yx))
    seen = set()
    with open(ibd_path, "rb") as fh:
        for sp in specs:
            key = (sp["y"], sp["x"])
            if key in seen:
                continue
            seen.add(key)
            arrs = []
            for k in ("mz", "int"):
                d = sp[k]
                fh.seek(d["off"])
                n = d["len"] * np.dtype(d["dtype"]).itemsize
                b = fh.read(n)
                if len(b) != n:
                    raise ReferenceError_("short read")
                arrs.append(np.frombuffer(b, d["dtype"]).astype(np.float64))
            mz, it = arrs
            for c in range(len(lo)):
                img[c, sp["y"] - 1, sp["x"] - 1] = it[(mz >= lo[c]) & (mz <= hi[c])].sum()
    return img


# ------------------------------------------------------------------------------------- checking


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "-"


PEAK = [0]


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    def on_alarm(*_a):
        raise Hang(f"timed out after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Outcome:
    kind: str  # "opened" | "refused" | "FAIL"
    detail: str = ""
    fast_used: bool | None = None
    peak_bytes: int = 0


def _describe(imz) -> tuple:
    return (
        imz.coords_xyz.tobytes(),
        imz.mz_offsets.tobytes(),
        imz.mz_lengths.tobytes(),
        imz.int_offsets.tobytes(),
        imz.int_lengths.tobytes(),
        imz.mz_dtype,
        imz.int_dtype,
        imz.mode,
        imz.spectrum_type,
        imz.shape_yx,
        imz.pixel_size_um,
        imz.uuid,
    )


def _open(path: Path, fast: bool):
    from napari_msi2hist._limits import ResourceLimitError
    from napari_msi2hist.io.imzml import ImzMLError, ImzMLFile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ImzMLFile(path, fast_parse=fast), None
        except (ImzMLError, ResourceLimitError) as e:
            return None, e


def check_case(case: Case, d: Path, budget: int, timeout: float = 20.0) -> Outcome:
    """Write the case to ``d`` and check every promise. Returns the outcome ("FAIL" with a reason)."""
    from napari_msi2hist._limits import ResourceLimitError, set_memory_budget
    from napari_msi2hist.io.imzml import ImzMLError

    xml_p, ibd_p = d / "case.imzML", d / "case.ibd"
    for p in (xml_p, ibd_p):
        if p.exists():
            p.unlink()
    xml_p.write_bytes(case.xml)
    if case.ibd is not None:
        ibd_p.write_bytes(case.ibd)
    before = (sha(xml_p), sha(ibd_p))
    set_memory_budget(budget)
    PEAK[0] = 0
    tracemalloc.start()
    out = Outcome("FAIL", "not run")
    try:
        with time_limit(timeout):
            out = _check(case, xml_p, ibd_p)
    except Hang as e:
        out = Outcome("FAIL", f"hang: {e}")
    except (ImzMLError, ResourceLimitError) as e:
        out = Outcome("FAIL", f"late error {type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - any other exception breaks the contract
        out = Outcome("FAIL", f"raw {type(e).__name__}: {e}")
    finally:
        if tracemalloc.is_tracing():
            PEAK[0] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        peak = PEAK[0]
        set_memory_budget(None)
    out.peak_bytes = peak
    if peak > budget:
        out = Outcome(
            "FAIL", f"allocated {peak} bytes > budget {budget}; was {out.kind} {out.detail}"
        )
    if (sha(xml_p), sha(ibd_p)) != before:
        out = Outcome("FAIL", "an input file changed")
    return out


def _check(case: Case, xml_p: Path, ibd_p: Path) -> Outcome:
    from napari_msi2hist._limits import ResourceLimitError
    from napari_msi2hist.io.imzml import ImzMLNonFiniteError
    from napari_msi2hist.msi.ion_images import Tolerance, ion_images

    a, ea = _open(xml_p, True)
    b, eb = _open(xml_p, False)
    if (ea is None) != (eb is None):
        return Outcome("FAIL", f"fast and strict disagree: fast {ea!r} strict {eb!r}")
    if ea is not None:
        if (type(ea), str(ea)) != (type(eb), str(eb)):
            return Outcome("FAIL", f"fast and strict give different errors: {ea!r} vs {eb!r}")
        msg = str(ea)
        if "\n" in msg or not ("case.imzML" in msg or "case.ibd" in msg):
            return Outcome("FAIL", f"message does not name the file in one line: {msg!r}")
        if case.should_open:
            return Outcome("FAIL", f"valid file refused: {msg}")
        return Outcome("refused", f"{type(ea).__name__}: {msg}")
    try:
        if _describe(a) != _describe(b):
            return Outcome("FAIL", "fast scan and strict parse read different spectra")
        fast_used = getattr(a, "used_fast_scan", None)
        b.close()
        # m/z values to extract: some stored values of the first spectra and random ones
        rng = np.random.default_rng(len(case.xml))
        lo_r, hi_r = a.mz_range
        if not (np.isfinite(lo_r) and np.isfinite(hi_r)):
            return Outcome("FAIL", f"non-finite m/z range {a.mz_range}")
        picks = []
        for i in range(min(3, a.n_spectra)):
            mz, _ = a.getspectrum(i, check_finite=False)
            mz = mz[np.isfinite(mz)]
            if len(mz):
                picks.append(float(mz[int(rng.integers(len(mz)))]))
        picks += list(rng.uniform(min(lo_r, hi_r), max(lo_r, hi_r) + 1e-9, 2))
        targets = np.array(picks)
        tol = Tolerance(0.05, "da")
        try:
            res = ion_images(a, targets, tolerance=tol)
        except ImzMLNonFiniteError as e:
            res, nonfinite = None, e
        except ResourceLimitError as e:
            if "case.imzML" not in str(e):
                return Outcome("FAIL", f"resource error without the file name: {e}")
            return Outcome("refused", f"ResourceLimitError: {e}")
        PEAK[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()  # the reference's own arrays do not count
        lo, hi = tol.windows(targets)
        ref = reference_images(xml_p, ibd_p, lo, hi, a.shape_yx)
        if res is None:
            if np.isfinite(ref).all() and (np.abs(ref) < 3.4e38).all():
                return Outcome("FAIL", f"non-finite error but the reference is finite: {nonfinite}")
            return Outcome("refused", f"ImzMLNonFiniteError: {nonfinite}")
        if not np.allclose(
            res.stack, ref, rtol=1e-5, atol=1e-3 * max(1.0, float(np.abs(ref).max()) * 1e-6)
        ):
            bad = np.argwhere(~np.isclose(res.stack, ref, rtol=1e-5, atol=1e-3))
            return Outcome("FAIL", f"ion images differ from the reference at {bad[:3].tolist()}")
        info = a.info()
        if not all(np.isfinite(info["mz_range"])):
            return Outcome("FAIL", "info has a non-finite m/z range")
        return Outcome("opened", "", fast_used)
    finally:
        a.close()
