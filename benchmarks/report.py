"""The run report against its goals: demo time, report generation time, HTML size, load time.

Runs ``fedge demo`` once (every stage, device targets included) into a temporary directory,
timing it; then, from that run directory:

- report generation (``fedge.visualization.report.write_report``): median of ``--repeats``;
- the page's size and how many copies of plotly.js it holds (must be one);
- loading it from the file in headless Chromium (the system browser, through Playwright) until
  every figure container holds a drawn plot: median of ``--repeats`` fresh browser launches;
  figures counted against rendered plots, console and page errors collected.

Goals (issue 12): the whole demo under 5 minutes on this machine class, report generation under
5 s, the HTML under 10 MB with plotly.js included once, the page loaded with every figure
rendered in under 5 s. Times are medians on a shared, noisy machine: read them as such.

    .venv/bin/python benchmarks/report.py [--repeats 3] [--run-dir DIR] [--output PATH]

``--run-dir`` reuses an existing demo output instead of running the demo (its time is then
not measured). Results: benchmarks/results/report.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from provenance import ROOT, provenance, write_json

RESULTS = ROOT / "benchmarks" / "results" / "report.json"
GOALS = {"demo_s": 300.0, "generation_s": 5.0, "html_mb": 10.0, "load_s": 5.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    from fedge.demo import run_demo
    from fedge.visualization.browser import open_page
    from fedge.visualization.report import write_report

    tmp = tempfile.TemporaryDirectory(prefix="fedge-report-bench-")
    run_dir = args.run_dir
    demo_s = None
    if run_dir is None:
        run_dir = Path(tmp.name) / "run"
        start = time.perf_counter()
        run_demo(run_dir, report=False, progress=lambda s: print(f"  demo: {s}", flush=True))
        demo_s = time.perf_counter() - start

    page = Path(tmp.name) / "report.html"
    gen = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        write_report(run_dir, page)
        gen.append(time.perf_counter() - start)
    text = page.read_text(encoding="utf-8")
    html_mb = page.stat().st_size / 1e6
    # plotly.js announces itself once per inlined copy in its licence banner
    plotly_copies = text.count("plotly.js v")

    loads, checks = [], []
    for _ in range(args.repeats):
        check = open_page(page, timeout_s=60)
        loads.append(check.load_seconds)
        checks.append(check)
    last = checks[-1]

    measured = {
        "demo_s": demo_s,
        "generation_s": statistics.median(gen),
        "html_mb": html_mb,
        "load_s": statistics.median(loads),
    }
    print(f"\nreport of {run_dir}")
    print(f"{'measure':<22}{'value':>10}{'goal':>10}  verdict")
    for key, goal in GOALS.items():
        value = measured[key]
        if value is None:
            print(f"{key:<22}{'-':>10}{goal:>10.1f}  not measured (--run-dir)")
            continue
        print(f"{key:<22}{value:>10.2f}{goal:>10.1f}  {'MET' if value < goal else 'MISSED'}"
              f"  ({value / goal:.2f}x of the goal)")
    print(f"plotly.js copies: {plotly_copies} (goal 1); figures {last.figures}, rendered "
          f"{last.rendered}; console errors {len(last.console_errors)}, page errors "
          f"{len(last.page_errors)}")

    write_json(args.output, {
        "measured": measured,
        "goals": GOALS,
        "generation_runs_s": gen,
        "load_runs_s": loads,
        "plotly_js_copies": plotly_copies,
        "figures": last.figures,
        "rendered": last.rendered,
        "console_errors": last.console_errors,
        "page_errors": last.page_errors,
        "provenance": provenance(
            sorted((ROOT / "src" / "fedge" / "visualization").glob("*.py")),
            packages=("plotly", "matplotlib", "kaleido", "playwright"),
        ),
    })
    print(f"results: {args.output}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
