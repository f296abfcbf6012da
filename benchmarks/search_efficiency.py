"""Does pruning save training without losing the search's best result?

Two searches of the same trials over the same space on the glyphs (ProxyAnchor, the learning rate
and the loss's learning rate over the ranges their config groups declare), with the same sampler
seed: one with the median pruner that ``pml-bench search`` uses, one that trains every trial to its
epoch cap. Each search's best setting is then trained again on the same validation folds with
``--repeats`` new seeds (seed_offset 1, so not the trial's own run), which measures the seed noise of
its validation MAP@R without the winner's bias of the best trial's own value.

It prints, for each search: the best trial's validation MAP@R, the retrained mean with its 95%
Student-t half-width, and the epochs trained over all trials and folds; then the ratio of trained
epochs (pruned / unpruned; the target is <= 0.5) and the difference of the retrained means with its
95% Welch interval (the same best within seed noise when the interval reaches 0 or lies above it).
The figures are also written to ``<out>/search_efficiency.json``.

CPU budget: about 30 minutes on 2 cores at the defaults (16 trials of 2 folds x 6 epochs per search,
10 glyphs a class).

Run:  .venv/bin/python benchmarks/search_efficiency.py [--trials 16] [--epochs 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

from scipy import stats

from pml_regularizers.bench import PRIMARY_METRIC, ExperimentFolder, load_spec, run_experiment
from pml_regularizers.bench.search.budget import SearchBudget
from pml_regularizers.bench.search.search import SearchResult, run_search


def _search(name: str, overrides: list[str], budget: SearchBudget, out: Path, prune: bool) -> SearchResult:
    return run_search(name, overrides, None, budget, folder=out / name, seed=0, prune=prune, search_only=True)


def _retrained(
    result: SearchResult, overrides: list[str], budget: SearchBudget, out: Path, repeats: int
) -> list[float]:
    """Validation MAP@R of ``repeats`` new seeds of ``result``'s best setting, one per seed."""
    spec = load_spec(
        [
            *overrides,
            *result.best_overrides,
            *budget.run_overrides(),
            f"seeds={repeats}",
            "seed_offset=1",
            "test=false",
            f"output_dir={out / 'retrained'}",
            f"experiment={result.name}",
        ]
    )
    records = ExperimentFolder(run_experiment(spec)).records()
    return [r["metrics"][PRIMARY_METRIC] for r in sorted(records, key=lambda r: r["seed"]) if r["split"] == "val"]


def _half_width(values: list[float]) -> float:
    return float(stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


def _welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Difference of the means of ``a`` and ``b`` and the half-width of its 95% Welch interval."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else len(a) + len(b) - 2
    return statistics.mean(a) - statistics.mean(b), float(stats.t.ppf(0.975, dof) * math.sqrt(va + vb))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="new seeds of each best setting (>= 2)")
    parser.add_argument("--per-class", type=int, default=10, help="glyph instances per class")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder of the searches (resumable); a temporary one by default"
    )
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error("--repeats must be >= 2 (the seed noise needs two runs)")
    out = args.out or Path(tempfile.mkdtemp(prefix="search-efficiency-"))
    overrides = [f"output_dir={out}", f"dataset.options.per_class={args.per_class}", "loss=proxy_anchor"]
    budget = SearchBudget(trials=args.trials, epochs=args.epochs, cv_folds=args.folds, patience=None, final_seeds=1)
    figures = {}
    for name, prune in (("pruned", True), ("unpruned", False)):
        result = _search(name, overrides, budget, out, prune)
        counted = [t for t in result.trials if t.counted]
        retrained = _retrained(result, overrides, budget, out, args.repeats)
        figures[name] = {
            "best_trial_value": result.best_value,
            "best_overrides": result.best_overrides,
            "trained_epochs": sum(t.epochs for t in counted),
            "pruned_trials": sum(t.state == "PRUNED" for t in counted),
            "retrained": retrained,
            "search_cpu_seconds": result.search_cpu_seconds,
        }
    pruned, unpruned = figures["pruned"], figures["unpruned"]
    ratio = pruned["trained_epochs"] / unpruned["trained_epochs"]
    diff, half = _welch(pruned["retrained"], unpruned["retrained"])
    figures["epoch_ratio"], figures["difference"], figures["difference_half_width"] = ratio, diff, half
    (out / "search_efficiency.json").write_text(json.dumps(figures, indent=2) + "\n")
    cap = args.trials * args.folds * args.epochs
    print(f"{args.trials} trials of {args.folds} folds x {args.epochs} epochs (at most {cap} epochs per search)")
    for name, f in (("pruned", pruned), ("unpruned", unpruned)):
        print(
            f"{name:>9}: best trial {f['best_trial_value']:.4f} ({' '.join(f['best_overrides'])}); retrained "
            f"{statistics.mean(f['retrained']):.4f} ± {_half_width(f['retrained']):.4f} over {args.repeats} seeds; "
            f"{f['trained_epochs']} epochs trained ({f['pruned_trials']} trials pruned), "
            f"{f['search_cpu_seconds'] / 60:.1f} CPU-minutes"
        )
    verdict = "the same within seed noise" if diff + half >= 0 else "lower than the unpruned search's"
    print(f"trained epochs, pruned / unpruned: {ratio:.2f} (target <= 0.5)")
    print(f"retrained best, pruned - unpruned: {diff:+.4f} ± {half:.4f} (95% Welch): {verdict}")
    print(f"figures: {out / 'search_efficiency.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
