"""Command line: ``matscale run CONFIG --out DIR``, ``matscale run --quick --out DIR``,
``matscale validate CONFIG``.

Errors (bad configuration, missing files, invalid arguments) print one line to stderr and exit
with status 2, never a traceback (set ``MATSCALE_DEBUG=1`` to see the traceback instead).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from matscale import __version__
from matscale.config import ConfigError, check_resources, load_config, quick_config
from matscale.pipeline import STAGE_NAMES
from matscale.pipeline.studies import get_study

EXIT_USAGE = 2


class _OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _fail(f"{self.prog}: {message}")


def _fail(message: str) -> None:
    sys.stderr.write(f"matscale: error: {message}\n")
    raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="matscale",
        description="Learn macroscopic SDEs of large systems from small simulations "
                    "(small sim -> upsample -> partial evolution -> closure -> SDE -> evaluation).",
    )
    parser.add_argument("--version", action="version", version=f"matscale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    run = sub.add_parser("run", help="run (or resume) a workflow into an output folder",
                         description="Run all stages of CONFIG into --out; finished stages are skipped.")
    run.add_argument("config", nargs="?", help="TOML configuration (omit with --quick)")
    run.add_argument("--out", required=True, help="output folder (created; reruns resume)")
    run.add_argument("--quick", action="store_true",
                     help="run CONFIG's [quick] preset (smaller values), or the embedded small "
                          "default when no CONFIG is given")
    run.add_argument("--force-stage", action="append", default=[], metavar="STAGE",
                     help="recompute STAGE (and everything after it) even if its output exists; "
                          f"repeatable (pipeline stages: {', '.join(STAGE_NAMES)}; fit: fit_pairs; "
                          "a study names its own)")
    run.add_argument("--stop-after", metavar="STAGE", help="stop once STAGE is finished")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N",
                       help="run the simulation tasks of the data stages (the critical study: its points) in N "
                            "local processes")
    where.add_argument("--dask-local", type=int, metavar="N",
                       help="run them on a Dask LocalCluster of N single-threaded workers")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run them on an existing Dask cluster (e.g. tcp://host:8786); results "
                            "are identical for any of these choices")
    run.add_argument("--yes", action="store_true",
                     help="run even when the estimated memory or disk use exceeds this machine's")
    val = sub.add_parser("validate", help="check configuration files and print a summary of each")
    val.add_argument("config", nargs="+", help="TOML configuration(s)")
    val.add_argument("--quick", action="store_true", help="check the files' [quick] presets")
    return parser


def _cmd_validate(args: argparse.Namespace) -> int:
    """Check every file; one line per file, the first error ends the command (status 2)."""
    for path in args.config:
        try:
            cfg = load_config(path, quick=args.quick)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        try:
            est = check_resources(cfg)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if cfg.workflow == "fit":
            print(f"OK {path}: workflow=fit, pairs={cfg.fit.pairs}, loss={cfg.fit.loss}, lam={cfg.fit.lam}")
        elif cfg.study is not None:
            print(f"OK {path}: workflow={cfg.workflow}, {get_study(cfg.workflow).describe(cfg.study)}")
        else:
            ks = ", ".join(f"p={p} (K={cfg.n_patches(p)})" for p in cfg.patch_sides)
            print(f"OK {path}: {cfg.system.describe()}; {ks}; closure dim={cfg.closure.dim}; "
                  f"train.method={cfg.train.method}; {est.describe()}")
    return 0


def _executor_spec(args: argparse.Namespace) -> str | None:
    """The :func:`matscale.parallel.open_executor` spec of the run's --workers / --dask-local /
    --scheduler option (None: in this process)."""
    for flag, count in (("--workers", args.workers), ("--dask-local", args.dask_local)):
        if count is not None and count < 1:
            _fail(f"run: {flag} must be >= 1, got {count}")
    if args.workers:
        return f"processes:{args.workers}"
    if args.dask_local:
        return f"dask-local:{args.dask_local}"
    if args.scheduler:
        return f"dask:{args.scheduler}"
    return None


def _cmd_run(args: argparse.Namespace) -> int:
    from matscale.pipeline import run_pipeline

    if args.config is None:
        if not args.quick:
            _fail("run: give CONFIG, or --quick for the embedded default")
        cfg = quick_config()
    else:
        cfg = load_config(args.config, quick=args.quick)
    summary = run_pipeline(cfg, args.out, force_stages=args.force_stage,
                           stop_after=args.stop_after, progress=not args.quiet,
                           check_size=not args.yes, executor=_executor_spec(args))
    if not args.quiet:
        if args.stop_after:
            print(f"stopped after stage '{args.stop_after}'; outputs in {args.out}")
        elif cfg.workflow == "fit":
            print(f"fitted SDE written to {args.out}/fit_pairs/sde")
        elif cfg.study is not None:
            print(f"done: {args.out}/report.md")
        else:
            print(f"done: {args.out}/metrics.json, {args.out}/report.md")
            for key, res in summary.get("results", {}).items():
                for method in ("ours", "naive"):
                    if method in res:
                        r = res[method]
                        print(f"  {key} {method}: test error {r['test_error_paper']:.3g} "
                              f"({r['test_error_paper_paths']} paths), {r['test_error_all']:.3g} "
                              f"({r['n_paths_pred']} paths)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``matscale`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "validate":
            return _cmd_validate(args)
        return _cmd_run(args)
    except (ConfigError, ValueError, TypeError, FileNotFoundError, FloatingPointError, OSError) as exc:
        if os.environ.get("MATSCALE_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"matscale: error: {msg}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("matscale: interrupted; rerun the same command to resume\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
