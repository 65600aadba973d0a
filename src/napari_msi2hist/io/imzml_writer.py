"""Streaming imzML writer (continuous and processed), used by the phantom generator and benchmarks.

Spectra go straight to a temporary ``.ibd`` as they are added (memory stays flat for files of any
size); ``close()`` writes the XML, then renames both files into place, ``.ibd`` first, so a reader
never sees a half-written pair and an interrupted write leaves no file under the final names.
"""

from __future__ import annotations

import hashlib
import os
import uuid as uuid_mod
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

_ACC = {
    np.dtype("<f4"): ("MS:1000521", "32-bit float"),
    np.dtype("<f8"): ("MS:1000523", "64-bit float"),
    np.dtype("<i4"): ("IMS:1000141", "32-bit integer"),
    np.dtype("<i8"): ("IMS:1000142", "64-bit integer"),
}


class ImzMLWriter:
    """Write an imzML/ibd pair.

    Both files are written under temporary names and renamed into place on :meth:`close` (or removed
    by :meth:`abort`); used as a context manager, an exception aborts.

    Parameters
    ----------
    path : output ``.imzML`` path (the ``.ibd`` goes next to it). Existing files are never
        overwritten unless ``overwrite=True``.
    mode : "continuous" (one shared m/z axis, given as ``mz_axis``) or "processed".
    pixel_size_um : (y, x) micrometres, written as IMS:1000047 / IMS:1000046.
    path : path-like
        The output ``.imzML``; the ``.ibd`` goes next to it.
    mode : {"continuous", "processed"}
        One shared m/z axis (``mz_axis``), or an m/z array per spectrum.
    mz_axis : ndarray, optional
        The shared axis (continuous mode only, required there).
    mz_dtype, int_dtype : numpy dtype
        Stored types of m/z and intensities (float32, float64, int32 or int64).
    pixel_size_um : tuple of float, optional
        (y, x) micrometres, written as IMS:1000047 / IMS:1000046.
    spectrum_type : {"profile", "centroid"}
        Written as MS:1000128 / MS:1000127.
    shape_yx : tuple of int, optional
        The raster size; default: the largest pixel position written.
    file_uuid : uuid.UUID, optional
        The file's UUID (default: a random one).
    overwrite : bool
        Replace existing files; refused otherwise.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        mode: str = "continuous",
        mz_axis: np.ndarray | None = None,
        mz_dtype=np.float32,
        int_dtype=np.float32,
        pixel_size_um: tuple[float, float] | None = None,
        spectrum_type: str = "profile",
        shape_yx: tuple[int, int] | None = None,
        file_uuid: uuid_mod.UUID | None = None,
        overwrite: bool = False,
    ):
        if mode not in ("continuous", "processed"):
            raise ValueError(f"mode must be 'continuous' or 'processed', not {mode!r}")
        self.path = Path(path)
        self.ibd_path = self.path.with_suffix(".ibd")
        for p in (self.path, self.ibd_path):
            if p.exists() and not overwrite:
                raise FileExistsError(f"{p}: exists; refusing to overwrite")
        self.mode = mode
        self.mz_dtype = np.dtype(mz_dtype).newbyteorder("<")
        self.int_dtype = np.dtype(int_dtype).newbyteorder("<")
        for dt in (self.mz_dtype, self.int_dtype):
            if dt not in _ACC:
                raise ValueError(f"unsupported dtype {dt}")
        self.pixel_size_um = pixel_size_um
        self.spectrum_type = spectrum_type
        self.shape_yx = shape_yx
        self.uuid = file_uuid or uuid_mod.uuid4()
        tag = f".tmp-{os.getpid()}-{self.uuid.hex[:8]}"
        self._tmp_ibd = self.ibd_path.with_name(self.ibd_path.name + tag)
        self._tmp_xml = self.path.with_name(self.path.name + tag)
        self._fh = open(self._tmp_ibd, "wb")
        self._sha1 = hashlib.sha1()
        self._pos = 0
        self._write(self.uuid.bytes)
        self._records: list[
            tuple[int, int, int, int, int, int]
        ] = []  # x, y, mzoff, mzlen, intoff, intlen
        self._mz_axis_off = None
        self._mz_axis_len = 0
        if mode == "continuous":
            if mz_axis is None:
                raise ValueError("continuous mode needs mz_axis")
            ax = np.ascontiguousarray(mz_axis, dtype=self.mz_dtype)
            self._mz_axis_off = self._pos
            self._mz_axis_len = len(ax)
            self._write(ax.tobytes())

    def _write(self, b: bytes | memoryview):
        self._fh.write(b)
        self._sha1.update(b)
        self._pos += len(b)

    def add_spectrum(self, x: int, y: int, intensities, mz=None) -> None:
        """Add one spectrum at a pixel.

        Parameters
        ----------
        x, y : int
            1-based pixel position (imzML's convention: x is the column).
        intensities : array_like
            The intensities, stored as the writer's intensity type; in continuous mode as many as the
            m/z axis.
        mz : array_like, optional
            The spectrum's own m/z array, same length (processed mode only).

        Raises
        ------
        ValueError
            An m/z array in continuous mode, or lengths that do not match.
        """
        it = np.ascontiguousarray(intensities, dtype=self.int_dtype)
        if self.mode == "continuous":
            if mz is not None:
                raise ValueError("continuous mode: give the m/z axis once, in the constructor")
            if len(it) != self._mz_axis_len:
                raise ValueError(f"spectrum has {len(it)} values, axis has {self._mz_axis_len}")
            mzoff, mzlen = self._mz_axis_off, self._mz_axis_len
        else:
            m = np.ascontiguousarray(mz, dtype=self.mz_dtype)
            if len(m) != len(it):
                raise ValueError("m/z and intensity arrays differ in length")
            mzoff, mzlen = self._pos, len(m)
            self._write(m.tobytes())
        intoff = self._pos
        self._write(it.tobytes())
        self._records.append((int(x), int(y), mzoff, mzlen, intoff, len(it)))

    def add_block(self, xs, ys, intensities: np.ndarray) -> None:
        """Add many spectra in one write (continuous mode).

        Parameters
        ----------
        xs, ys : array_like of int
            1-based pixel positions, one per row of ``intensities``.
        intensities : ndarray
            ``(n, k)`` one spectrum a row, ``k`` the length of the m/z axis.

        Raises
        ------
        ValueError
            Processed mode, or rows of another length than the m/z axis.
        """
        if self.mode != "continuous":
            raise ValueError("add_block is for continuous mode")
        block = np.ascontiguousarray(intensities, dtype=self.int_dtype)
        n, k = block.shape
        if k != self._mz_axis_len:
            raise ValueError(f"block has {k} values per spectrum, axis has {self._mz_axis_len}")
        start = self._pos
        self._write(memoryview(block).cast("B"))
        step = k * self.int_dtype.itemsize
        for j, (x, y) in enumerate(
            zip(np.asarray(xs).tolist(), np.asarray(ys).tolist(), strict=True)
        ):
            self._records.append((x, y, self._mz_axis_off, k, start + j * step, k))

    def abort(self) -> None:
        """Stop writing and remove the temporary files; nothing is left behind."""
        self._fh.close()
        for p in (self._tmp_ibd, self._tmp_xml):
            p.unlink(missing_ok=True)

    def close(self) -> None:
        """Finish: flush the ``.ibd``, write the XML, and move both into place atomically."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        try:
            self._write_xml()
            os.replace(self._tmp_ibd, self.ibd_path)
            os.replace(self._tmp_xml, self.path)
        except BaseException:
            self.abort()
            raise

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _write_xml(self) -> None:
        recs = self._records
        if self.shape_yx is not None:
            ny, nx = self.shape_yx
        else:
            nx = max((r[0] for r in recs), default=1)
            ny = max((r[1] for r in recs), default=1)
        mz_acc, mz_name = _ACC[self.mz_dtype]
        it_acc, it_name = _ACC[self.int_dtype]
        st_acc, st_name = (
            ("MS:1000127", "centroid spectrum")
            if self.spectrum_type == "centroid"
            else ("MS:1000128", "profile spectrum")
        )
        mode_acc = "IMS:1000030" if self.mode == "continuous" else "IMS:1000031"
        from napari_msi2hist import __version__

        head = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<mzML xmlns="http://psi.hupo.org/ms/mzml" version="1.1">',
            '  <cvList count="3">',
            '    <cv id="MS" fullName="Proteomics Standards Initiative Mass Spectrometry Ontology" version="4.1.0" URI="https://raw.githubusercontent.com/HUPO-PSI/psi-ms-CV/master/psi-ms.obo"/>',
            '    <cv id="UO" fullName="Unit Ontology" version="releases/2020-03-10" URI="http://ontologies.berkeleybop.org/uo.obo"/>',
            '    <cv id="IMS" fullName="Mass Spectrometry Imaging Ontology" version="1.1.0" URI="https://raw.githubusercontent.com/imzML/imzML/master/imagingMS.obo"/>',
            "  </cvList>",
            "  <fileDescription>",
            "    <fileContent>",
            '      <cvParam cvRef="MS" accession="MS:1000579" name="MS1 spectrum" value=""/>',
            f'      <cvParam cvRef="MS" accession="{st_acc}" name="{st_name}" value=""/>',
            f'      <cvParam cvRef="IMS" accession="{mode_acc}" name="{self.mode}" value=""/>',
            f'      <cvParam cvRef="IMS" accession="IMS:1000080" name="universally unique identifier" value="{{{str(self.uuid).upper()}}}"/>',
            f'      <cvParam cvRef="IMS" accession="IMS:1000091" name="ibd SHA-1" value="{self._sha1.hexdigest()}"/>',
            "    </fileContent>",
            "  </fileDescription>",
            '  <referenceableParamGroupList count="3">',
            '    <referenceableParamGroup id="mzArray">',
            '      <cvParam cvRef="MS" accession="MS:1000576" name="no compression" value=""/>',
            '      <cvParam cvRef="MS" accession="MS:1000514" name="m/z array" value="" unitCvRef="MS" unitAccession="MS:1000040" unitName="m/z"/>',
            f'      <cvParam cvRef="{mz_acc.split(":")[0]}" accession="{mz_acc}" name="{mz_name}" value=""/>',
            '      <cvParam cvRef="IMS" accession="IMS:1000101" name="external data" value="true"/>',
            "    </referenceableParamGroup>",
            '    <referenceableParamGroup id="intensityArray">',
            '      <cvParam cvRef="MS" accession="MS:1000576" name="no compression" value=""/>',
            '      <cvParam cvRef="MS" accession="MS:1000515" name="intensity array" value="" unitCvRef="MS" unitAccession="MS:1000131" unitName="number of detector counts"/>',
            f'      <cvParam cvRef="{it_acc.split(":")[0]}" accession="{it_acc}" name="{it_name}" value=""/>',
            '      <cvParam cvRef="IMS" accession="IMS:1000101" name="external data" value="true"/>',
            "    </referenceableParamGroup>",
            '    <referenceableParamGroup id="spectrum1">',
            '      <cvParam cvRef="MS" accession="MS:1000579" name="MS1 spectrum" value=""/>',
            '      <cvParam cvRef="MS" accession="MS:1000511" name="ms level" value="1"/>',
            f'      <cvParam cvRef="MS" accession="{st_acc}" name="{st_name}" value=""/>',
            "    </referenceableParamGroup>",
            "  </referenceableParamGroupList>",
            '  <softwareList count="1">',
            f'    <software id="napari_msi2hist" version={quoteattr(__version__)}>',
            '      <cvParam cvRef="MS" accession="MS:1000799" name="custom unreleased software tool" value="napari-msi2hist"/>',
            "    </software>",
            "  </softwareList>",
            '  <scanSettingsList count="1">',
            '    <scanSettings id="scansettings1">',
            f'      <cvParam cvRef="IMS" accession="IMS:1000042" name="max count of pixels x" value="{nx}"/>',
            f'      <cvParam cvRef="IMS" accession="IMS:1000043" name="max count of pixels y" value="{ny}"/>',
        ]
        if self.pixel_size_um is not None:
            py, px = self.pixel_size_um
            head += [
                f'      <cvParam cvRef="IMS" accession="IMS:1000046" name="pixel size (x)" value="{px!r}" unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"/>',
                f'      <cvParam cvRef="IMS" accession="IMS:1000047" name="pixel size y" value="{py!r}" unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"/>',
            ]
        head += [
            "    </scanSettings>",
            "  </scanSettingsList>",
            '  <instrumentConfigurationList count="1">',
            '    <instrumentConfiguration id="IC1"/>',
            "  </instrumentConfigurationList>",
            '  <dataProcessingList count="1">',
            '    <dataProcessing id="export">',
            '      <processingMethod order="1" softwareRef="napari_msi2hist">',
            '        <cvParam cvRef="MS" accession="MS:1000544" name="Conversion to mzML" value=""/>',
            "      </processingMethod>",
            "    </dataProcessing>",
            "  </dataProcessingList>",
            '  <run defaultInstrumentConfigurationRef="IC1" id="run1">',
            f'    <spectrumList count="{len(recs)}" defaultDataProcessingRef="export">',
        ]
        mzsz, itsz = self.mz_dtype.itemsize, self.int_dtype.itemsize
        with open(self._tmp_xml, "w", encoding="utf-8") as out:
            out.write("\n".join(head) + "\n")
            for i, (x, y, mzoff, mzlen, intoff, intlen) in enumerate(recs):
                out.write(
                    f'      <spectrum defaultArrayLength="0" id="Scan={i + 1}" index="{i}">\n'
                    '        <referenceableParamGroupRef ref="spectrum1"/>\n'
                    '        <scanList count="1">\n'
                    '          <cvParam cvRef="MS" accession="MS:1000795" name="no combination" value=""/>\n'
                    '          <scan instrumentConfigurationRef="IC1">\n'
                    f'            <cvParam cvRef="IMS" accession="IMS:1000050" name="position x" value="{x}"/>\n'
                    f'            <cvParam cvRef="IMS" accession="IMS:1000051" name="position y" value="{y}"/>\n'
                    "          </scan>\n"
                    "        </scanList>\n"
                    '        <binaryDataArrayList count="2">\n'
                    '          <binaryDataArray encodedLength="0">\n'
                    '            <referenceableParamGroupRef ref="mzArray"/>\n'
                    f'            <cvParam cvRef="IMS" accession="IMS:1000103" name="external array length" value="{mzlen}"/>\n'
                    f'            <cvParam cvRef="IMS" accession="IMS:1000104" name="external encoded length" value="{mzlen * mzsz}"/>\n'
                    f'            <cvParam cvRef="IMS" accession="IMS:1000102" name="external offset" value="{mzoff}"/>\n'
                    "            <binary/>\n"
                    "          </binaryDataArray>\n"
                    '          <binaryDataArray encodedLength="0">\n'
                    '            <referenceableParamGroupRef ref="intensityArray"/>\n'
                    f'            <cvParam cvRef="IMS" accession="IMS:1000103" name="external array length" value="{intlen}"/>\n'
                    f'            <cvParam cvRef="IMS" accession="IMS:1000104" name="external encoded length" value="{intlen * itsz}"/>\n'
                    f'            <cvParam cvRef="IMS" accession="IMS:1000102" name="external offset" value="{intoff}"/>\n'
                    "            <binary/>\n"
                    "          </binaryDataArray>\n"
                    "        </binaryDataArrayList>\n"
                    "      </spectrum>\n"
                )
            out.write("    </spectrumList>\n  </run>\n</mzML>\n")
            out.flush()
            os.fsync(out.fileno())
