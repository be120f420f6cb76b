"""Run the benchmark suite and write ``benchmarks/RESULTS.md``.

Usage (normally through ``benchmarks/run.sh``, which prepares ``.venv-bench``)::

    python benchmarks/run.py [--full] [--workloads w1,w2,w3,w4,w5,w6] [--no-postgres] [--rounds N]

Exit status: 0 when every engine agreed with its reference, 1 when one disagreed, 2 when a
database could not be set up. A slow machine never fails the run: targets are ratios to report.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import w1_roles
import w2_check
import w3_filter
import w4_tree
import w5_grants
import w6_pages
from _bastion_policy import bastion_status
from _common import (
    BENCH_DIR,
    Dataset,
    Section,
    environment_lines,
    load_dataset,
    make_dataset,
    md_table,
    postgres_version,
    scratch_dir,
    sqlite_url,
    temporary_postgres,
)

#: W3 at 100,000 documents; its rounds (like W2's) are 3 by default and 5 with --full, so that
#: the whole default suite stays under 10 minutes on a busy 2-core machine.
W3_100K = w3_filter.Config(slow_users=6, load_all_users=5, rounds=5)
W3_1M = w3_filter.Config(slow_users=5, load_all_users=0, rounds=3)
ALL_WORKLOADS = "w1,w2,w3,w4,w5,w6"
#: W4: checks on loaded objects (default, --full)
W4_CHECKS = (4_000, 20_000)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full",
        action="store_true",
        help="add W3 at 1,000,000 documents, W5 at 10^6 grant rows and 10,000 cached subjects",
    )
    parser.add_argument(
        "--workloads", default=ALL_WORKLOADS, help=f"comma-separated: {ALL_WORKLOADS}"
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--rounds", type=int, default=None, help="override rounds everywhere")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    return parser.parse_args(argv)


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workloads = {w.strip().lower() for w in args.workloads.split(",")}
        self.sections: list[Section] = []
        self.errors: list[str] = []
        self.timeline: list[str] = []
        self.pg_version: str | None = None
        self.load_at_start = " / ".join(f"{x:.2f}" for x in os.getloadavg())

    def step(self, label: str, fn: Callable[[], Section | None]) -> None:
        t0 = time.perf_counter()
        try:
            section = fn()
        except Exception as exc:  # noqa: BLE001 - record and carry on with the other steps
            traceback.print_exc()
            self.errors.append(f"{label}: `{type(exc).__name__}: {exc}`")
            section = None
        if section is not None:
            self.sections.append(section)
        self.timeline.append(f"{label}: {time.perf_counter() - t0:.0f} s")

    def rounds(self, default: int) -> int:
        return self.args.rounds or default

    def w2_w3_rounds(self, full: int) -> int:
        """W2/W3 rounds: ``full`` with --full, at most 3 by default (time budget)."""
        return self.rounds(full if self.args.full else min(full, 3))

    def w3_config(self, n_docs: int) -> w3_filter.Config:
        cfg = W3_100K if n_docs <= 100_000 else W3_1M
        return w3_filter.Config(cfg.slow_users, cfg.load_all_users, self.w2_w3_rounds(cfg.rounds))

    def on_database(self, engine: sa.Engine, ds: Dataset, label: str, w2: bool) -> None:
        seconds = load_dataset(engine, ds)
        print(f"{label}: loaded and analyzed in {seconds:.1f} s", flush=True)
        self.timeline.append(f"{label}: load + ANALYZE {seconds:.0f} s")
        if w2 and "w2" in self.workloads:
            self.step("W2", lambda: w2_check.run(engine, ds, rounds=self.w2_w3_rounds(5)))
        if "w3" in self.workloads:
            cfg = self.w3_config(ds.n_docs)
            self.step(f"W3 {label}", lambda: w3_filter.run(engine, ds, cfg, label))
        if "w6" in self.workloads and ds.n_docs == 100_000:
            # a round takes ~0.1 s: 15 of them steady the medians (3 moved ratios by 1.3x)
            w6_rounds = self.rounds(15)
            self.step(f"W6 {label}", lambda: w6_pages.run(engine, ds, label, rounds=w6_rounds))

    def w4(self, engine: sa.Engine, tree: w4_tree.Tree, label: str, check: bool) -> None:
        seconds = w4_tree.load(engine, tree)
        print(f"W4 {label}: loaded and analyzed in {seconds:.1f} s", flush=True)
        self.timeline.append(f"W4 {label}: load + ANALYZE {seconds:.0f} s")
        if check:
            n = W4_CHECKS[1] if self.args.full else W4_CHECKS[0]
            self.step("W4 check", lambda: w4_tree.run_check(engine, tree, n, self.rounds(3)))
        self.step(f"W4 list {label}", lambda: w4_tree.run_list(engine, tree, label, self.rounds(3)))

    def w5(self, tmp: Path) -> Section:
        cfg = w5_grants.Config(rounds=self.rounds(3))
        if self.args.full:
            cfg.flat_sizes = (1_000, 100_000, 1_000_000)
            cfg.memory_users = 10_000
            # the database checks are a few ms per round: more of them steady the medians
            cfg.db_checks = 200
            cfg.flat_checks = 100
            cfg.rounds = self.rounds(5)
        return w5_grants.run(tmp, cfg)

    def run(self) -> None:
        if "w1" in self.workloads:
            self.step("W1", lambda: w1_roles.run(rounds=self.rounds(3)))
        sizes = [100_000, 1_000_000] if self.args.full else [100_000]
        if not {"w2", "w3", "w6"} & self.workloads:
            sizes = []
        datasets = {n: make_dataset(n) for n in sizes}
        with scratch_dir() as tmp:
            for n, ds in datasets.items():
                engine = sa.create_engine(sqlite_url(tmp / f"bench_{n}.sqlite"))
                self.step(
                    f"SQLite {n:,} in all",
                    lambda engine=engine, ds=ds, n=n: self.on_database(
                        engine, ds, f"SQLite, {n:,} documents", w2=n == 100_000
                    ),
                )
                engine.dispose()
            tree = w4_tree.make_tree() if "w4" in self.workloads else None
            if tree is not None:
                engine = sa.create_engine(sqlite_url(tmp / "w4.sqlite"))
                self.step("W4 SQLite in all", lambda: self.w4(engine, tree, "SQLite", check=True))
                engine.dispose()
            if "w5" in self.workloads:
                self.step("W5", lambda: self.w5(tmp))
        if self.args.no_postgres or not {"w3", "w4", "w6"} & self.workloads:
            return
        try:
            with temporary_postgres() as pg:
                if {"w3", "w6"} & self.workloads:
                    for n, ds in datasets.items():
                        self.step(
                            f"PostgreSQL {n:,} in all",
                            lambda pg=pg, ds=ds, n=n: self.on_pg(pg, ds, n),
                        )
                if tree is not None:
                    self.step("W4 PostgreSQL in all", lambda: self.on_pg_w4(pg, tree))
        except Exception as exc:  # noqa: BLE001 - PostgreSQL missing is reported, exit 2
            traceback.print_exc()
            self.errors.append(f"PostgreSQL: `{type(exc).__name__}: {exc}`")

    def on_pg(self, pg: Any, ds: Dataset, n: int) -> None:
        name = f"bastion_bench_{n}"
        url = pg.create_database(name)
        engine = sa.create_engine(url)
        try:
            self.pg_version = postgres_version(engine)
            self.on_database(engine, ds, f"PostgreSQL, {n:,} documents", w2=False)
        finally:
            engine.dispose()
            pg.drop_database(name)

    def on_pg_w4(self, pg: Any, tree: w4_tree.Tree) -> None:
        name = "bastion_bench_w4"
        url = pg.create_database(name)
        engine = sa.create_engine(url)
        try:
            self.pg_version = postgres_version(engine)
            self.w4(engine, tree, "PostgreSQL", check=False)
        finally:
            engine.dispose()
            pg.drop_database(name)

    def render(self, total: float) -> str:
        problems = [p for s in self.sections for p in s.problems]
        summary = [list(row) for s in self.sections for row in s.summary]
        status = bastion_status()
        out = [
            "# bastion benchmark results",
            "",
            "Generated by `benchmarks/run.sh"
            + (" --full" if self.args.full else "")
            + "` (workloads defined in shared/BENCHMARKS.md). Absolute times on shared 2-core "
            "machines move by up to ~1.7× between runs; compare ratios measured in one run.",
            "",
            *environment_lines(self.pg_version),
            f"- Load average at start: {self.load_at_start}",
            f"- Total runtime: {total:.0f} s ({'; '.join(self.timeline)})",
            "",
            "## Targets",
            "",
        ]
        if summary:
            out.append(md_table(["measure", "this run", "target"], summary))
        else:
            out.append(f"bastion was not measured (`{status}`).")
        out += ["", "## Disagreements with the references", ""]
        out += [f"- {p}" for p in problems] or ["None: every engine gave the reference's answers."]
        if self.errors:
            out += ["", "## Errors", "", *[f"- {e}" for e in self.errors]]
        for s in self.sections:
            out += ["", s.markdown]
        return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    t0 = time.perf_counter()
    suite = Suite(args)
    suite.run()
    text = suite.render(time.perf_counter() - t0)
    args.output.write_text(text)
    print(f"\nwrote {args.output} in {time.perf_counter() - t0:.0f} s", flush=True)
    if any(s.problems for s in suite.sections):
        print("FAILED: an engine disagreed with its reference (see RESULTS.md)", file=sys.stderr)
        return 1
    if suite.errors:
        print("FAILED: " + "; ".join(suite.errors), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
