"""``msi2hist batch``: every section of a cohort as one task on Dask distributed.

The client (this process) reads the cohort, fingerprints every input, skips sections whose folder
already holds a completion record with the same config and fingerprints, and submits one task per
remaining section to a Dask cluster: a LocalCluster of worker processes on this machine by default,
or an existing scheduler (``scheduler="tcp://host:port"``).

What travels to the workers: each section's config (a plain dict) and the checkpoint's bytes
(scattered once; each worker keeps one copy under its temporary folder, keyed by sha256). What does
not: the imzML/.ibd, H&E, landmark and mask files are read by path, and each worker writes its section
folder under the output folder by path. Client and workers must therefore see the inputs and the output
folder under the same paths (a shared filesystem), as on any HPC cluster.

Failures: a section that raises is returned as a failure record (one-line error, verdict ``error``,
traceback kept in ``_failed/NAME.json``); the other sections go on. The cohort report is rewritten
after every section, so an interrupted batch still leaves one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
import traceback
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import CancelToken, Progress
from .cohort import read_cohort, report_row, write_report
from .section import iter_section
from .section_config import SectionConfig
from .section_record import fingerprints, is_complete, read_record

BAD_VERDICTS = frozenset({"error", "fail", "failed", "worse", "reject", "rejected"})


@dataclass(frozen=True)
class BatchConfig:
    """A batch run: the cohort file, the output folder and where to compute."""

    cohort: str
    out_dir: str
    scheduler: str | None = None  # "tcp://host:port" of a running scheduler; None: a LocalCluster
    workers: int | None = None  # LocalCluster worker processes (None: sized to the machine)
    memory_per_worker: str = "auto"  # LocalCluster memory_limit per worker
    device: str | None = None  # overrides every section's device when set


@dataclass
class BatchResult:
    """A cohort run: one row per section, and the report files."""

    rows: list[dict] = field(default_factory=list)
    report_csv: str = ""
    report_html: str = ""

    @property
    def failed(self) -> list[str]:
        """Names of the sections that raised an error."""
        return [r["name"] for r in self.rows if r["status"] == "failed"]

    @property
    def bad_verdicts(self) -> list[str]:
        """Names of the sections whose registration verdict is ``failed``."""
        return [
            r["name"]
            for r in self.rows
            if r["status"] != "failed" and str(r["verdict"]).lower() in BAD_VERDICTS
        ]


def default_workers() -> int:
    """Worker processes for a LocalCluster: one per core, at most one per 2 GiB of memory.

    Returns
    -------
    int
        The number of worker processes (at least 1).
    """
    from .._limits import available_memory

    return max(1, min(os.cpu_count() or 1, available_memory() // 2**31))


def _one_line(e: BaseException) -> str:
    s = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {s}" if s else type(e).__name__


def _model_on_worker(payload: tuple[str, bytes] | None) -> str | None:
    """Write the shipped checkpoint once per worker machine; returns its path there."""
    if payload is None:
        return None
    sha, data = payload
    folder = Path(tempfile.gettempdir()) / "msi2hist-models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha}.pt"
    if not path.is_file() or path.stat().st_size != len(data):
        from .._files import atomic_path

        tmp = atomic_path(path)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path)


def run_section_task(cfg_dict: dict, hashes: dict, model: tuple[str, bytes] | None) -> dict:
    """Run one section on a worker; never raise for the section's own error.

    Parameters
    ----------
    cfg_dict : dict
        The section's :class:`~.section.SectionConfig` as a JSON-able dict (tuples come back as
        lists).
    hashes : dict
        Its input fingerprints, taken by the scheduler.
    model : tuple of (str, bytes) or None
        The checkpoint's file name and bytes, shipped to the worker, or None when the section needs
        no model.

    Returns
    -------
    dict
        The completion record, or ``{"status": "failed", "name", "error", ...}`` for a section that
        failed.
    """
    from ..progress import run_to_end

    cfg_dict = dict(cfg_dict)
    for k in ("mz", "stages", "he_pixel_um", "msi_pixel_um"):
        if cfg_dict.get(k) is not None:
            cfg_dict[k] = tuple(cfg_dict[k])
    cfg = SectionConfig(**cfg_dict)
    t0 = time.monotonic()
    try:
        return run_to_end(iter_section(cfg, hashes=hashes, model_file=_model_on_worker(model)))
    except Exception as e:
        return {
            "status": "failed",
            "name": cfg.name,
            "error": _one_line(e),
            "verdict": "error",
            "traceback": traceback.format_exc(),
            "seconds": time.monotonic() - t0,
            "config": cfg.as_dict(),
            "host": platform.node(),
        }


def _client(cfg: BatchConfig):
    from distributed import Client, LocalCluster

    if cfg.scheduler:
        return Client(cfg.scheduler, timeout="30s")
    cluster = LocalCluster(
        n_workers=cfg.workers or default_workers(),
        threads_per_worker=1,
        processes=True,
        memory_limit=cfg.memory_per_worker,
        dashboard_address=None,
        host="127.0.0.1",
    )
    return Client(cluster)


def _model_payload(sections: list[SectionConfig]) -> dict[str, tuple[str, bytes]]:
    from ..models.checkpoint import resolve_model_path

    out = {}
    for s in sections:
        if s.route == "synthesis" and s.model not in out:
            data = Path(resolve_model_path(s.model)).read_bytes()
            out[s.model] = (hashlib.sha256(data).hexdigest(), data)
    return out


def _remove_stale(final: Path) -> None:
    """Hidden temporary folders a killed run left next to ``final`` (one batch per folder at a time)."""
    for p in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in final.parent.glob(f".{final.name}.old-*"):
        shutil.rmtree(p, ignore_errors=True)


def _remove_stale_reports(out: Path) -> None:
    """Remove the temporary report files a killed run left.

    A kill can land in the middle of an atomic write, which leaves its hidden temp file (one batch
    per folder at a time, so none of these belongs to a live run).
    """
    from .._files import atomic_leftovers

    for final in (out / "cohort_report.csv", out / "cohort_report.html"):
        for p in atomic_leftovers(final):
            p.unlink(missing_ok=True)
    for p in (out / "_failed").glob(".*.json.*.tmp"):  # any section's failure record
        p.unlink(missing_ok=True)


def iter_batch(
    cfg: BatchConfig, cancel: CancelToken | None = None
) -> Generator[Progress, None, BatchResult]:
    """Run a cohort of sections, skipping the ones already finished.

    Run a cohort; yields one :class:`Progress` per finished section (``info``: its report row).

    Finished sections (same config, same input fingerprints) are skipped and reported as
    ``skipped``; every other section is (re)run. Returns a :class:`BatchResult`.

    Parameters
    ----------
    cfg : BatchConfig
        The cohort file, output folder, workers and device.
    cancel : CancelToken, optional
        Stops the batch between sections; finished sections keep their folders.

    Yields
    ------
    Progress
        One per finished section (``done`` counts sections; ``info`` is the section's report row).

    Returns
    -------
    BatchResult
        The report rows and the report files.
    """
    from dataclasses import replace

    from .._files import write_text_atomic

    out = Path(cfg.out_dir)
    sections = read_cohort(cfg.cohort, out)
    if cfg.device:
        sections = [replace(s, device=cfg.device) for s in sections]
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_reports(out)
    failed_dir = out / "_failed"
    title = f"cohort {Path(cfg.cohort).name}"
    rows: dict[str, dict] = {}
    todo: list[tuple[SectionConfig, dict]] = []
    for s in sections:
        try:
            hashes = fingerprints(s)
        except Exception as e:
            rows[s.name] = report_row(s.name, "failed", {"error": _one_line(e), "verdict": "error"})
            continue
        if is_complete(s, hashes):
            rows[s.name] = report_row(s.name, "skipped", read_record(s.out_dir))
        else:
            todo.append((s, hashes))
    total = len(sections)
    res = BatchResult()

    def flush():
        res.rows = [rows[s.name] for s in sections if s.name in rows]
        c, h = write_report(out, res.rows, title)
        res.report_csv, res.report_html = str(c), str(h)

    flush()
    yield Progress(len(rows), total, "sections")
    if not todo:
        return res
    for s, _ in todo:
        _remove_stale(Path(s.out_dir))
    models = _model_payload([s for s, _ in todo])
    from distributed import as_completed

    client = _client(cfg)
    futures = {}
    try:
        shipped = {k: client.scatter([v], broadcast=True)[0] for k, v in models.items()}
        for s, hashes in todo:
            fut = client.submit(
                run_section_task,
                s.as_dict(),
                hashes,
                shipped.get(s.model) if s.route == "synthesis" else None,
                key=f"msi2hist-section-{s.name}-{time.time_ns()}",
                pure=False,
            )
            futures[fut] = s
        for fut in as_completed(list(futures)):
            s = futures[fut]
            try:
                rec = fut.result()
            except Exception as e:  # the worker died (KilledWorker) or the task could not run
                rec = {"status": "failed", "error": _one_line(e), "verdict": "error"}
            if rec.get("status") == "done":
                rows[s.name] = report_row(s.name, "done", rec)
                (failed_dir / f"{s.name}.json").unlink(missing_ok=True)
            else:
                rows[s.name] = report_row(s.name, "failed", rec)
                failed_dir.mkdir(exist_ok=True)
                write_text_atomic(
                    failed_dir / f"{s.name}.json", json.dumps(rec, indent=1, default=str)
                )
            flush()
            yield Progress(len(rows), total, "sections", info=rows[s.name])
            if cancel is not None and cancel.cancelled:
                break
        if cancel is not None:
            cancel.check()
    finally:
        for fut in futures:
            if not fut.done():
                fut.cancel()
        for s, hashes in todo:  # finished on a worker while the client stopped listening
            if s.name not in rows and is_complete(s, hashes):
                rows[s.name] = report_row(s.name, "done", read_record(s.out_dir))
        flush()
        cluster = None if cfg.scheduler else client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    return res


__all__ = ["BatchConfig", "BatchResult", "default_workers", "iter_batch", "run_section_task"]
