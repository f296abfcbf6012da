"""The benchmark runner from Python: ProxyAnchor with and without SkewedMeanRegularizer on the
offline glyph data set, through the functions behind `pml-bench`, then their paired report.

`load_spec` composes and checks a config from the YAML groups in pml_regularizers/bench/conf/ and
command-line style `key=value` overrides; `run_experiment` trains and tests one experiment per
config, seed by seed, into its own folder (a second run resumes or skips finished work);
`write_report` pairs the method with its base loss by seed and writes report.md with the table and
plots. `full` is the default comparison of `make main`; `small` and `tiny` shrink the data set, the
trunk and the number of epochs.

Run:  python examples/04_benchmark_runner.py --size small
Options: --size tiny|small|full (default small), --output-dir DIR (default runs/examples/04_<size>).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pml_regularizers.bench import load_spec, run_experiment, write_report

# The base loss first: the report pairs every other experiment with it, seed by seed.
COMPARISON = {
    "ProxyAnchor": ["loss=proxy_anchor", "regularizer=none"],
    "ProxyAnchor + SkewedMean": [
        "loss=proxy_anchor",
        "regularizer=skewed_mean",
        "regularizer.lam=4.0",
        "regularizer.weight=0.5",
    ],
}

SIZES = {
    "tiny": [
        "dataset.options.num_classes=16",
        "dataset.options.per_class=8",
        "dataset.size=16",
        "+trunk.hidden=16",
        "embedding_size=16",
        "batch_size=32",
        "epochs=1",
        "seeds=2",
    ],
    "small": [
        "dataset.options.num_classes=100",
        "dataset.options.per_class=20",
        "+trunk.hidden=32",
        "epochs=3",
        "seeds=3",
    ],
    "full": [],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--output-dir", type=Path, help="default: runs/examples/04_<size>")
    args = parser.parse_args()

    output_dir = args.output_dir or Path("runs") / "examples" / f"04_{args.size}"
    overrides = [f"output_dir={output_dir}", *SIZES[args.size]]
    if args.size == "tiny":  # keep the small generated data set beside the outputs
        overrides.append(f"dataset.cache_dir={output_dir / 'cache'}")

    experiment_dirs, baseline = [], None
    for label, choices in COMPARISON.items():
        spec = load_spec([*choices, *overrides])
        baseline = baseline or spec.experiment
        print(f"{label}: experiment {spec.experiment} ({spec.protocol.seeds} seeds, {spec.protocol.epochs} epochs)")
        experiment_dirs.append(run_experiment(spec))

    report_dir = output_dir / "comparison"
    print(write_report(experiment_dirs, report_dir, baseline=baseline))
    print(f"\nreport, plots and per-experiment folders: {output_dir}")


if __name__ == "__main__":
    main()
