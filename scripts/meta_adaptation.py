"""In-context adaptation: train PPO with several memory cores on a meta environment, compare.

    python scripts/meta_adaptation.py                         # projected CartPole, s5 gru mlp
    python scripts/meta_adaptation.py --config configs/meta/control.yaml --cores s5 gru
    python scripts/meta_adaptation.py --greedy                # evaluate with the mode
    python scripts/meta_adaptation.py --solved 0.99           # also success transitions
    python scripts/meta_adaptation.py --set gamma=0.995 --set core.input_decay=false

Each core trains with the preset's settings (seeds vmapped) in ``OUT/runs/ENV-CORE``
(rerunning with the same settings continues or reuses those runs). Then every core
plays ``--trials`` trials per seed of ``--eval-episodes`` episodes, on the training
tasks and on the held-out set when the environment has one, and the return of each
episode index within a trial is written to ``OUT/adaptation.{md,json,png}`` (and the
return of every episode of every trial to ``OUT/adaptation_returns.npz``).
``OUT/summary.json`` holds the settings, the curves, the checks and the transitions:
small enough to keep (under ``docs/results/``), and what ``--report`` turns back into
the markdown tables of ``docs/meta-rl.md``. ``--set KEY=VALUE`` overrides a setting of
the preset with the keys and checks of a YAML file.

The checks printed at the end (`checks`): the first core adapts within a trial (mean
of episodes 2-16 minus episode 1 at least 0.05 and 3 standard errors), holds what it
learned past the training trial length (episodes 17-32 minus 9-16 at least -0.02), and
its trial mean is at least 0.15 above the memoryless MLP's. Each is printed as a
difference with its standard error; the windows of one core are compared within each
trial, which removes the large spread between easy and hard trials. With 256 trials
per seed the standard error of these differences is about 0.01 on the projected
CartPole.

With ``--solved R`` an episode returning at least R counts as solved, and each core's
success transitions are printed per window: how often an episode is solved after a
solved one and after a failed one (`evaluation.transitions`). A curve can keep rising
late in a trial only if their difference, the share of the gap to the stationary
success rate left after each episode, is close to 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ssmrl import configfile, envs, evaluation, experiment
from ssmrl.configfile import ConfigError


def train_core(settings, core: str, out: Path) -> experiment.Trained:
    """Train (or continue) one core in ``OUT/runs/ENV-CORE``."""
    resolved = experiment.with_core(settings, core)
    cfg = resolved.hparams
    print(f"\n{cfg.env} / {core}: {cfg.num_updates} updates x {settings.run.seeds} seeds")
    try:
        run_dir = out / "runs" / f"{cfg.env}-{core}"
        trained, _ = experiment.train(resolved, run_dir, resume=True, same_settings=True)
    except ConfigError as e:
        sys.exit(str(e))
    return trained


def evaluate(trained: experiment.Trained, env_name: str | None, args: argparse.Namespace):
    """``args.trials`` trials per seed of ``args.eval_episodes`` episodes on ``env_name``."""
    return experiment.adaptation(
        trained, env_name, args.trials, args.eval_episodes, greedy=args.greedy
    )


def _trial_means(result: evaluation.Adaptation) -> np.ndarray:
    r = result.returns.reshape(-1, result.returns.shape[-1])
    f = result.finished.reshape(r.shape)
    return r[f.all(1)].mean(1)


ADAPTS = 0.05  # episodes 2-16 above episode 1 by this much, and by 3 standard errors
HOLDS = -0.02  # episodes 17-32 minus 9-16 at least this (nothing much forgotten)
ABOVE_MLP = 0.15  # trial mean above the memoryless MLP's by this much


def checks(results: dict, first: str, k_train: int) -> list[tuple[str, bool]]:
    """The proof conditions for the first core, each ``(text, met)``.

    - adapts: mean of episodes 2-``k_train`` minus episode 1 of the same trial at least
      `ADAPTS` and more than 3 standard errors above 0;
    - holds past the training length: episodes ``k_train+1``-K minus the second half of
      the training trial at least `HOLDS`;
    - above the MLP on the same task set: trial means differ by at least `ABOVE_MLP`.

    Windows of one trial are compared trial by trial (`evaluation.window_difference`),
    which removes the spread between easy and hard trials.
    """
    res, k = results[first], results[first].returns.shape[-1]
    out = []

    def paired(a: slice, b: slice, text: str, met):
        d = evaluation.window_difference(res.returns, res.finished, a, b)
        out.append((f"{text}: {d.mean:+.3f} ± {d.stderr:.3f} over {d.trials} trials", bool(met(d))))

    if k >= 2:
        last = min(k, k_train)
        text = f"{first}: episodes 2-{last} minus episode 1 >= {ADAPTS} (3 s.e.)"
        paired(
            slice(0, 1), slice(1, last), text, lambda d: d.mean >= ADAPTS and d.mean > 3 * d.stderr
        )
    if k > k_train:
        text = f"{first}: episodes {k_train + 1}-{k} minus {k_train // 2 + 1}-{k_train} >= {HOLDS}"
        paired(slice(k_train // 2, k_train), slice(k_train, k), text, lambda d: d.mean >= HOLDS)
    label = first.split(" ", 1)[1]
    mlp = [n for n in results if n != first and n.startswith("mlp") and n.endswith(label)]
    if mlp:
        a, b = _trial_means(res), _trial_means(results[mlp[0]])
        diff = a.mean() - b.mean()
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        text = f"{first} minus {mlp[0]} (trial mean) >= {ABOVE_MLP}: {diff:+.3f} ± {se:.3f}"
        out.append((text, bool(diff >= ABOVE_MLP)))
    return out


def transition_table(results: dict, threshold: float, k_train: int) -> str:
    """Markdown: per core and window, P(solved | solved before), P(solved | failed before)."""
    lines = [
        "| core, tasks | episodes | after solved | after failed | difference | solved |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        k = res.returns.shape[-1]
        bounds = [(2, k_train), (k_train + 1, k)] if k > k_train else [(2, k)]
        for lo, hi in bounds:
            t = evaluation.transitions(res.returns, res.finished, threshold, slice(lo - 1, hi))
            lines.append(
                f"| {name} | {lo}-{hi} | {t.after_solved:.3f} | {t.after_failed:.3f} "
                f"| {t.mixing:.3f} | {t.solved:.3f} |"
            )
    return "\n".join(lines)


def curve_table(curves: dict[str, list], k_train: int) -> str:
    """Markdown: the mean return of chosen episode indices, and windows, per core and set."""
    k = len(next(iter(curves.values())))
    show = sorted({1, 2, 4, 8, k_train, k} & set(range(1, k + 1)))
    windows = [(2, min(k, k_train))] + ([(k_train + 1, k)] if k > k_train else [])
    head = [f"ep {i}" for i in show] + [f"eps {a}-{b}" for a, b in windows] + ["mean"]
    lines = ["| core, tasks | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, mean in curves.items():
        m = np.asarray(mean, np.float64)
        cells = [f"{m[i - 1]:.3f}" for i in show]
        cells += [f"{np.nanmean(m[a - 1 : b]):.3f}" for a, b in windows]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {np.nanmean(m):.3f} |")
    return "\n".join(lines)


def report(summary: dict) -> str:
    """The markdown `main` prints, from a summary.json (``--report``)."""
    s = summary
    out = [
        f"{s['trials']} trials x {s['seeds']} seeds, {s['actions']} actions, trained on "
        f"{s['k_train']}-episode trials for {s['total_timesteps']:,} steps"
        + (f"; overrides: {', '.join(s['overrides'])}" if s.get("overrides") else ""),
        "",
        curve_table(s["curves"], s["k_train"]),
        "",
    ]
    out += [f"- {'met' if met else 'NOT MET'}: {text}" for text, met in s["checks"]]
    if s.get("transitions"):
        out += ["", f"Success transitions (solved: return >= {s['solved']})", ""]
        out.append(s["transitions"])
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument(
        "--config", type=Path, default=root / "configs/meta/projected_cartpole.yaml"
    )
    parser.add_argument("--cores", nargs="+", default=["s5", "gru", "mlp"])
    parser.add_argument("--seeds", type=int, help="seeds per core (default: the preset's)")
    parser.add_argument("--total-timesteps", type=int, help="env steps per seed")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset setting (YAML keys, e.g. gamma=0.995 or core.input_decay=false)",
    )
    parser.add_argument("--eval-episodes", type=int, default=32, help="episodes per trial")
    parser.add_argument("--trials", type=int, default=256, help="evaluation trials per seed")
    parser.add_argument("--out", type=Path, default=Path("results/meta"))
    parser.add_argument(
        "--greedy", action="store_true", help="evaluate with the policy's mode, not samples"
    )
    parser.add_argument(
        "--solved", type=float, help="print success transitions; solved = return >= this"
    )
    parser.add_argument(
        "--report", type=Path, nargs="+", help="print the tables of saved summary.json files"
    )
    args = parser.parse_args()
    if args.report:
        for path in args.report:
            print(f"## {path}\n\n{report(json.loads(path.read_text(encoding='utf-8')))}\n")
        return
    try:
        overrides = configfile.parse_overrides(args.set)
        overrides |= {"total_timesteps": args.total_timesteps, "seeds": args.seeds}
        settings = experiment.load_settings("ppo", args.config, overrides)
        _, env_params = envs.make(settings.hparams.env)
        if not envs.is_meta(env_params):
            raise ConfigError(f"env {settings.hparams.env} is not a meta environment")
    except ConfigError as e:
        parser.error(str(e))
    k_train = env_params.episodes_per_trial
    env_name = settings.hparams.env
    sets = {"training": None} | (
        {"held out": envs.held_out(env_name)} if envs.held_out(env_name) else {}
    )

    results = {}
    for core in args.cores:
        trained = train_core(settings, core, args.out)
        for label, name in sets.items():
            results[f"{core} {label}"] = evaluate(trained, name, args)
    curves = {name: result.curve for name, result in results.items()}

    names = list(curves)
    args.out.mkdir(parents=True, exist_ok=True)
    evaluation.save_curves(curves, args.out / "adaptation.png", f"{env_name}: return by episode")
    np.savez_compressed(
        args.out / "adaptation_returns.npz",
        **{f"{n}/{x}": getattr(r, x) for n, r in results.items() for x in ("returns", "finished")},
    )
    summary = {
        "env": env_name,
        "config": str(args.config.resolve().relative_to(root))
        if args.config.resolve().is_relative_to(root)
        else str(args.config),
        "overrides": args.set,
        "cores": args.cores,
        "seeds": settings.run.seeds,
        "trials": args.trials,
        "actions": "greedy" if args.greedy else "sampled",
        "k_train": k_train,
        "total_timesteps": settings.hparams.total_timesteps,
        "settings": configfile.to_dict(settings),
        "curves": {
            n: [None if np.isnan(v) else float(v) for v in c.mean] for n, c in curves.items()
        },
        "checks": checks(results, names[0], k_train),
        "solved": args.solved,
        "transitions": None
        if args.solved is None
        else transition_table(results, args.solved, k_train),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    text = report(summary)
    (args.out / "adaptation.md").write_text(text + "\n", encoding="utf-8")
    print(f"\nReturn by episode within a trial on {env_name}: {text}")
    print(f"\nwritten: {args.out / 'summary.json'}, adaptation.md, adaptation.png")


if __name__ == "__main__":
    main()
