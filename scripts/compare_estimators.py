"""Train estimator variants on the same SBI simulations and score what each learnt.

Issue 27's measurement: for each variant (``npe.estimator`` and ``npe.hyperparameters``
settings as JSON) and each training size (the first N pairs of the training chunks), train
the flow, draw posteriors for held-out pairs and score them
(:func:`bmodesep.core.npe.yardstick.posterior_scores`: correlation of posterior mean and
true r and A_lens, mean posterior sd of r, TARP deviations).  One CSV row per variant and
size, written atomically at the end; a row per run is also printed.  For example::

    python scripts/compare_estimators.py --compression joint --prior widened \\
        --train results/npe/simulations/train/chunk*.h5 \\
        --test results/npe/simulations/coverage/chunk*.h5 --sizes 4000 16000 50000 \\
        --variant default '{}' --variant bounded '{"parameters": "prior_bounded"}' \\
        --base '{"learning_rate": 0.001, "stop_after_epochs": 20}' --output estimators.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bmodesep.core.npe import flows, prior, yardstick
from bmodesep.core.randomness import rng_for
from bmodesep.errors import BmodesepError
from bmodesep.products import io
from bmodesep.products.npe import read_chunks

COLUMNS = (
    "variant",
    "settings",
    "training_simulations",
    "test_simulations",
    "epochs",
    "train_cpu_s",
    *yardstick.POSTERIOR_SCORES,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="+", required=True, help="training chunk files")
    parser.add_argument("--test", nargs="+", required=True, help="held-out chunk files")
    parser.add_argument("--compression", required=True)
    parser.add_argument("--prior", default="table1", help="prior variant of the simulations")
    parser.add_argument("--sizes", nargs="+", type=int, required=True)
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"))
    parser.add_argument("--base", default="{}", help="settings every variant starts from")
    parser.add_argument("--samples", type=int, default=500, help="posterior samples per test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    try:
        theta, x, _ = read_chunks(args.train, args.compression)
        theta_test, x_test, _ = read_chunks(args.test, args.compression)
        base = json.loads(args.base)
        variants = [(name, base | json.loads(text)) for name, text in args.variant or [("", "{}")]]
        hps = [(name, flows.hyperparameters(settings)) for name, settings in variants]
        too_many = [n for n in args.sizes if n > theta.shape[0]]
        if too_many:
            raise BmodesepError(f"--sizes {too_many}: only {theta.shape[0]} training pairs")
        pr = prior.prior(args.prior)
        rows = []
        for n in args.sizes:
            for (name, settings), (_, hp) in zip(variants, hps, strict=True):
                c0 = time.process_time()
                trained = flows.train(theta[:n], x[:n], pr, hp, seed=args.seed, label=name)
                cpu = time.process_time() - c0
                post = flows.Posterior(trained.estimator, pr, hp.parameters)
                samples = post.sample(x_test, args.samples, seed=args.seed)
                scores = yardstick.posterior_scores(samples, theta_test, rng_for(args.seed, "tarp"))
                row = {
                    "variant": name,
                    "settings": json.dumps(settings, sort_keys=True),
                    "training_simulations": n,
                    "test_simulations": x_test.shape[0],
                    "epochs": trained.epochs,
                    "train_cpu_s": f"{cpu:.1f}",
                } | {k: f"{v:.4g}" for k, v in scores.items()}
                print(json.dumps(row), flush=True)
                rows.append(row)
        io.write_csv_atomic(args.output, rows, COLUMNS)
    except (BmodesepError, json.JSONDecodeError) as err:
        print(f"compare_estimators: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
