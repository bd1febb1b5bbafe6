#!/usr/bin/python3
"""Hyperparameter search: ASHA against random search at the same number of trials, on
Fashion-MNIST with the small CNN and the first user's ranges (learning rate 1e-3..1e-1
log-uniform, batch size {32, 64, 128, 256}, momentum 0.5..0.99), on this machine, in one run.

    bench/tuning.py [--build build] [--trials 16] [--epochs 9] [--trainers 2]
                    [--train-samples 12000] [--eval-samples 0] [--seeds 1,2,3]
                    [--strategies random,asha]

A coordinator and --trainers trainer processes (1 torch thread each) on loopback; for each
seed, each strategy runs as `kennelctl tune` with that seed (so both draw the same trials:
trial N's values depend only on the seed and N), one trial per trainer at a time. ASHA judges at 1 and 3
epochs of 9 (eta 3). Prints, per strategy: trials, trial-epochs, trainer time, wall time and
the best accuracy with its values; then, per seed, whether ASHA came within 0.3 points of
random search's best using at most half its trial-epochs (the issue's bar). Exits non-zero only when
a search could not run.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = ["learning_rate=log:1e-3:1e-1", "batch_size=choice:32,64,128,256", "momentum=uniform:0.5:0.99"]


def start_cluster(build, work, trainers):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    coord = subprocess.Popen([f"{build}/coordinator/kennel-coordinator", "--listen", "127.0.0.1:0",
                              "--data_dir", os.path.join(work, "coordinator")],
                             stdout=subprocess.PIPE, stderr=open(os.path.join(work, "coordinator.log"), "w"),
                             text=True)
    procs = [coord]
    port = None
    for line in coord.stdout:
        m = re.search(r"listening on port (\d+)", line)
        if m:
            port = m.group(1)
            break
    if port is None:
        raise RuntimeError("the coordinator did not start (see coordinator.log)")
    address = f"127.0.0.1:{port}"
    for i in range(trainers):
        name = f"tune-{i}"
        procs.append(subprocess.Popen(
            [f"{build}/trainer_node/kennel-trainer", "--coordinator", address, "--name", name,
             "--work_dir", os.path.join(work, name)],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, name + ".log"), "w"), env=env))
    ctl = [f"{build}/cli/kennelctl", "-c", address, "-o", "json"]
    for _ in range(300):
        out = subprocess.run(ctl + ["status"], capture_output=True, text=True).stdout or "{}"
        if sum(n.get("state") == "IDLE" for n in json.loads(out).get("nodes", [])) == trainers:
            return procs, ctl
        time.sleep(0.1)
    raise RuntimeError("the trainers did not register")


def stop(procs):
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def run_search(ctl, args, strategy, seed):
    cmd = ctl + ["tune", "--name", f"bench-{strategy}-{seed}", "--strategy", strategy, "--seed", str(seed),
                 "--max-trials", str(args.trials), "--parallelism", str(args.trainers),
                 "--epochs", str(args.epochs), "--torch-threads", "1", "--world-size", "1", "--wait"]
    for s in SPACE:
        cmd += ["--space", s]
    if args.train_samples > 0:
        cmd += ["--max-train-samples", str(args.train_samples)]
    if args.eval_samples > 0:
        cmd += ["--max-eval-samples", str(args.eval_samples)]
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - start
    if out.returncode != 0:
        raise RuntimeError(f"kennelctl tune --strategy {strategy} failed ({out.returncode}): {out.stderr[-2000:]}")
    t = json.loads(out.stdout)
    best = next((x for x in t["trials"] if x["number"] == t["best_trial"]), None)
    stopped = sum(x["state"] == "TRIAL_STOPPED" for x in t["trials"])
    return {"strategy": strategy, "seed": seed, "id": t["id"], "trials": len(t["trials"]), "stopped": stopped,
            "trial_epochs": int(t["trial_epochs"]), "trial_seconds": t["trial_seconds"], "wall_seconds": wall,
            "best_accuracy": t["best_objective"], "best_trial": t["best_trial"],
            "best_params": best["params"] if best else {},
            "model": f'{t["model_name"]}:{t["model_version"]}',
            "finals": {x["number"]: (x["objective"][-1] if x["objective"] else None) for x in t["trials"]}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(REPO, "build"))
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--trainers", type=int, default=2)
    p.add_argument("--train-samples", type=int, default=12000, help="0: all 60,000")
    p.add_argument("--eval-samples", type=int, default=0, help="0: all 10,000")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated; each runs every strategy")
    p.add_argument("--strategies", default="random,asha")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="kennel-tuning-")
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    results = []
    procs = []
    try:
        procs, ctl = start_cluster(args.build, work, args.trainers)
        for seed in seeds:
            for strategy in args.strategies.split(","):
                r = run_search(ctl, args, strategy, seed)
                results.append(r)
                params = " ".join(f"{k}={v}" for k, v in sorted(r["best_params"].items()))
                print(f"seed {seed} {strategy:6s}: {r['trials']} trials ({r['stopped']} stopped early), "
                      f"{r['trial_epochs']} trial-epochs, trainer time {r['trial_seconds']:.0f} s, wall "
                      f"{r['wall_seconds']:.0f} s, best accuracy {r['best_accuracy']:.4f} (trial {r['best_trial']}: "
                      f"{params})", flush=True)
    except Exception as e:  # noqa: BLE001 - any failure means the benchmark could not run.
        print(f"tuning benchmark could not run: {e} (logs in {work})", file=sys.stderr)
        return 1
    finally:
        stop(procs)
    met = 0
    for seed in seeds:
        by = {r["strategy"]: r for r in results if r["seed"] == seed}
        if "random" not in by or "asha" not in by:
            continue
        rnd, asha = by["random"], by["asha"]
        gap = (rnd["best_accuracy"] - asha["best_accuracy"]) * 100
        share = asha["trial_epochs"] / rnd["trial_epochs"]
        ok = gap <= 0.3 and share <= 0.5
        met += ok
        print(f"seed {seed}: asha {gap:+.2f} points below random, {share:.0%} of its trial-epochs, "
              f"{asha['wall_seconds'] / rnd['wall_seconds']:.0%} of its wall time -> "
              f"{'meets' if ok else 'misses'} the bar (within 0.3 points, at most 50%)")
        print(f"seed {seed}: final accuracy per trial (random):",
              " ".join(f"{n}:{v:.4f}" for n, v in sorted(rnd["finals"].items(), key=lambda kv: int(kv[0]))))
    if len(seeds) > 1 and "asha" in args.strategies and "random" in args.strategies:
        print(f"{met} of {len(seeds)} seeds meet the bar")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
