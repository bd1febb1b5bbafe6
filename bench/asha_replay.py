#!/usr/bin/python3
"""Replays a finished random search's recorded learning curves through ASHA stopping rules, to
compare rules without training again (a simulation: say so wherever its figures go).

    kennelctl -o json tune status tune-1 > random.json     # a RANDOM_SEARCH that finished
    bench/asha_replay.py random.json [more.json ...] [--parallelism 2] [--eta 3] [--orders 0]

Every trial of a random search trained all its epochs, so its objective after each epoch is
known; each trial's epochs are taken to last its measured wall time divided by its epochs.
Trials start in number order, --parallelism at a time, as the tuner starts them. Rules:
  ray          the tuner's: a trial at a rung goes on if it reaches the (1 - 1/eta) quantile of
               the values recorded there before it (Ray Tune's ASHAScheduler)
  ray-rejudge  the same, and every running trial is judged again at its last rung whenever a
               value is recorded there (the first trials no longer pass on almost no evidence)
  top-k        a trial goes on if it is among the top max(1, n // eta) of the n values at the
               rung, itself included (Optuna's SuccessiveHalvingPruner)
Prints, per file and rule: trial-epochs (and their share of the random search's) and how far
the best finished trial is below the random search's best. --orders N also replays N shuffled
start orders of the same trials and prints how often each rule is within 0.3 points using at
most half the trial-epochs.
"""
import argparse
import heapq
import json
import math
import random
import sys


def quantile_rule(recorded, value, eta):
    if not recorded:
        return True
    a = sorted(recorded)
    q = (1 - 1 / eta) * (len(a) - 1)
    lo = math.floor(q)
    hi = min(lo + 1, len(a) - 1)
    return value >= a[lo] + (q - lo) * (a[hi] - a[lo])


def top_k_rule(recorded, value, eta):
    a = sorted(recorded + [value], reverse=True)
    return value >= a[max(1, len(a) // eta) - 1]


def replay(curves, seconds, order, rule, eta, rungs, parallelism, rejudge):
    """Returns (trial-epochs, best final value among trials that finished)."""
    epochs = len(curves[order[0]])
    recorded = {r: [] for r in rungs}
    events, active, finished = [], {}, []
    queue = list(order)
    used = 0

    def start(trial, now):
        heapq.heappush(events, (now + seconds[trial], trial, 1))
        active[trial] = 0  # The last rung it passed.

    while queue and len(active) < parallelism:
        start(queue.pop(0), 0.0)
    while events:
        now, trial, epoch = heapq.heappop(events)
        if trial not in active:
            continue  # Stopped while this epoch ran.
        used += 1
        stop = False
        if epoch in recorded:
            value = curves[trial][epoch - 1]
            stop = not rule(list(recorded[epoch]), value, eta)
            recorded[epoch].append(value)
            if not stop:
                active[trial] = epoch
            if rejudge:
                for other, rung in list(active.items()):
                    if other == trial or rung != epoch:
                        continue
                    others = list(recorded[rung])
                    others.remove(curves[other][rung - 1])
                    if not rule(others, curves[other][rung - 1], eta):
                        del active[other]
        if stop or epoch == epochs:
            if not stop:
                finished.append(curves[trial][-1])
            active.pop(trial, None)
        else:
            heapq.heappush(events, (now + seconds[trial], trial, epoch + 1))
        while queue and len(active) < parallelism:
            start(queue.pop(0), now)
    return used, max(finished) if finished else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="`kennelctl -o json tune status ID` of finished random searches")
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--min-epochs", type=int, default=1)
    p.add_argument("--orders", type=int, default=0, help="also replay this many shuffled start orders")
    args = p.parse_args()
    rules = [("ray", quantile_rule, False), ("ray-rejudge", quantile_rule, True), ("top-k", top_k_rule, False)]
    for path in args.files:
        t = json.load(open(path))
        if t["spec"]["strategy"] != "RANDOM_SEARCH" or t["state"] != "SUCCEEDED":
            print(f"{path}: not a finished random search", file=sys.stderr)
            return 2
        curves, seconds = {}, {}
        for trial in t["trials"]:
            n = trial["number"]
            curves[n] = trial["objective"]
            seconds[n] = (int(trial["ended_unix_ms"]) - int(trial["started_unix_ms"])) / 1000 / len(trial["objective"])
        epochs = len(next(iter(curves.values())))
        rungs, r = [], args.min_epochs
        while r < epochs:
            rungs.append(r)
            r *= args.eta
        total = epochs * len(curves)
        best = max(c[-1] for c in curves.values())
        order = sorted(curves)
        parts = []
        for name, rule, rejudge in rules:
            used, found = replay(curves, seconds, order, rule, args.eta, rungs, args.parallelism, rejudge)
            parts.append(f"{name} {used} ({used / total:.0%}), {(best - found) * 100:.2f} points below")
        print(f"{t['id']} (seed {t['spec'].get('seed', '0')}, {len(curves)} trials, rungs {rungs}): " + "; ".join(parts))
        if args.orders > 0:
            parts = []
            for name, rule, rejudge in rules:
                met = 0
                for s in range(args.orders):
                    shuffled = list(order)
                    random.Random(s).shuffle(shuffled)
                    used, found = replay(curves, seconds, shuffled, rule, args.eta, rungs, args.parallelism, rejudge)
                    met += used / total <= 0.5 and (best - found) * 100 <= 0.3
                parts.append(f"{name} {met / args.orders:.0%}")
            print(f"  over {args.orders} shuffled start orders, within 0.3 points on at most half: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
