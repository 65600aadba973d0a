"""``msi2hist batch COHORT.yaml``: a cohort of sections on Dask distributed (see docs/cohorts.md)."""

from __future__ import annotations

import sys


def cmd_batch(args) -> int:
    from ..workflows.batch import BatchConfig, iter_batch
    from ._common import CLIError, ProgressBar

    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers {args.workers}: give at least 1")
    if args.scheduler and args.workers is not None:
        raise CLIError("--workers sizes a local cluster; it cannot be combined with --scheduler")
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise CLIError(
            "msi2hist batch needs Dask distributed: pip install 'napari-msi2hist[cluster]'"
        ) from None
    cfg = BatchConfig(
        cohort=args.cohort,
        out_dir=args.out,
        scheduler=args.scheduler,
        workers=args.workers,
        device=args.device,
    )
    bar = ProgressBar(args.quiet)
    job = iter_batch(cfg)
    while True:
        try:
            p = next(job)
        except StopIteration as stop:
            res = stop.value
            break
        bar(p)
        r = p.info
        if r and not args.quiet:
            extra = f" ({r['error']})" if r["error"] else ""
            lead = "\n" if sys.stderr.isatty() else ""
            print(
                f"{lead}{r['name']}: {r['status']}, verdict {r['verdict'] or '-'}{extra}",
                file=sys.stderr,
            )
    skipped = sum(r["status"] == "skipped" for r in res.rows)
    if not args.quiet:
        print(
            f"{len(res.rows)} sections ({skipped} already finished, skipped); report "
            f"{res.report_csv} and {res.report_html}"
        )
    if res.failed:
        print(f"msi2hist batch: failed sections: {', '.join(res.failed)}", file=sys.stderr)
    if res.bad_verdicts:
        print(
            f"msi2hist batch: sections whose registration got worse or failed its check: "
            f"{', '.join(res.bad_verdicts)}",
            file=sys.stderr,
        )
    return 1 if res.failed or res.bad_verdicts else 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "batch",
        help="run peaks, synthesis, registration and export for every section of a cohort",
        description="Every section of COHORT.yaml (see docs/cohorts.md) is a task on Dask "
        "distributed: a local cluster by default, or a running scheduler (--scheduler). A rerun "
        "skips finished sections; OUT/cohort_report.csv and .html list every section. Exits 1 "
        "when any section failed or its registration got worse. Needs the [cluster] extra.",
    )
    p.add_argument("cohort", help="the cohort YAML")
    p.add_argument("--out", required=True, help="output folder: one folder per section + report")
    p.add_argument(
        "--workers", type=int, help="local cluster worker processes (default: sized to the machine)"
    )
    p.add_argument(
        "--scheduler", help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786"
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda", "mps", "auto"],
        help="synthesis device for every section",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_batch)
    from ._policy import declare

    declare(p, ("cohort",), "out", "run")  # a resumable folder: finished sections are kept
