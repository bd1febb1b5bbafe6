#!/usr/bin/python3
"""Autoscaled serving (issue 22): a coordinator with the `local` provider, a ResNet-18 whose
nodes run one model instance with one torch thread each, pinned to cores, and open-loop load
from `kennelctl bench --model` (which follows the model's endpoint set).

    bench/autoscale.py [--build build] [--arch resnet18] [--max-nodes 2] [--soak 20]

1. Capacity: one node alone, closed loop: C images/s.
2. Step: 0.5 C for `--before` s, 1.8 C for `--during` s, 0.5 C for `--after` s (settings
   min=1, max=--max-nodes, target=--target, stable=--stable, panic=--panic). From the
   coordinator's log and `kennelctl status` polled every 100 ms: the time from the step to
   the scale-out decision, to the new node's first answered request (its load report), the
   node's start to SERVING; p99 per phase; nodes above what the load needed; reversals (a
   scale-in followed by a scale-out, or the other way, while the load is steady).
3. Soak: a steady 0.5 C while min flips between 2 and 1 --soak times (each flip to 1 is a
   scale-in: out of the endpoint set, retire, drain, exit), counting failed requests.
Ends with one JSON line. On a 2-core machine the load generator and the coordinator share the
cores with the nodes: the figures are this machine's, and a node pinned to a core is not alone on it.
"""
import argparse
import datetime
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1")


def run(cmd, timeout=600):
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout


def glog_time(line):
    """The wall time of a glog line (I20261203 12:13:53.470841 ...), as a Unix time."""
    m = re.match(r"[IWEF](\d{8}) (\d\d:\d\d:\d\d\.\d+)", line)
    if not m:
        return None
    t = datetime.datetime.strptime(m.group(1) + " " + m.group(2), "%Y%m%d %H:%M:%S.%f")
    return t.timestamp()


class Poller(threading.Thread):
    """`kennelctl status -o json` every 250 ms (each is a process: on 2 cores, more often takes the
    nodes' CPU): nodes' loads and the model's autoscaling state."""

    def __init__(self, ctl, model):
        super().__init__(daemon=True)
        self.ctl, self.model = ctl, model
        self.samples = []  # (time, autoscale status dict, {node: load dict})
        self.stop = False

    def run(self):
        while not self.stop:
            t = time.time()
            try:
                status = json.loads(run(self.ctl + ["status", "-o", "json"], timeout=10))
            except Exception:  # noqa: BLE001 - a missed sample is fine
                time.sleep(0.1)
                continue
            auto = next((a for a in status.get("autoscaling", []) if a.get("model") == self.model), {})
            loads = {n["name"]: n.get("load", {}) for n in status.get("nodes", [])
                     if n.get("role") == "INFERENCE" and n.get("state") != "DEAD"}
            self.samples.append((t, auto, loads))
            time.sleep(max(0, 0.25 - (time.time() - t)))


def bench(ctl, model, rate, seconds, images, concurrency=4):
    cmd = ctl + ["bench", "--model", model, "--duration", str(seconds), "--concurrency", str(concurrency),
                 "--images", images, "-o", "json"]
    cmd += ["--rate", str(rate)] if rate > 0 else ["--depth", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=seconds + 120)
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"bench failed: {out.stderr[-2000:]}")


def failed(report):
    return sum(report.get("errors", {}).values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    # A model one core cannot keep up with at the step's rate (the small CNN would leave the load
    # generator as the bottleneck).
    ap.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet50"])
    ap.add_argument("--max-nodes", type=int, default=2)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--stable", type=float, default=10)
    ap.add_argument("--panic", type=float, default=3)
    ap.add_argument("--before", type=float, default=15)
    ap.add_argument("--during", type=float, default=30)
    ap.add_argument("--after", type=float, default=30)
    ap.add_argument("--soak", type=int, default=20, help="scale-in events in the soak")
    args = ap.parse_args()
    b = args.build
    work = tempfile.mkdtemp(prefix="kennel-autoscale-")
    artifact, images = os.path.join(work, "model"), os.path.join(work, "images")
    run([f"{b}/bench/kennel-bench-limits", "make-artifact", "--arch", args.arch, "--out", artifact])
    run([f"{b}/bench/kennel-bench-limits", "make-jpegs", "--out", images, "--count", "32"])
    log = open(os.path.join(work, "coordinator.log"), "w")
    coord = subprocess.Popen([f"{b}/coordinator/kennel-coordinator", "--listen", "127.0.0.1:0", "--data_dir",
                              os.path.join(work, "coord"), "--autoscale_provider", "local",
                              "--autoscale_pin_cores", "0", "--autoscale_node_args",
                              "--instances 1 --torch_threads 1 --metrics_port -1"],
                             stdout=subprocess.PIPE, stderr=log, text=True, env=ENV)
    address = None
    for line in coord.stdout:
        m = re.search(r"listening on port (\d+)", line)
        if m:
            address = f"127.0.0.1:{m.group(1)}"
            break
    ctl = [f"{b}/cli/kennelctl", "-c", address]
    model = "dogs18-bench" if args.arch == "resnet18" else "dogs-bench"
    try:
        run([f"{b}/bench/kennel-bench-limits", "register", "--artifact", artifact, "--coordinator", address])

        def settle(min_nodes, max_nodes, serving):
            run(ctl + ["autoscale", model, f"min={min_nodes},max={max_nodes},target={args.target},"
                       f"stable={args.stable},panic={args.panic}"])
            deadline = time.time() + 300
            while time.time() < deadline:
                a = json.loads(run(ctl + ["autoscale", model, "-o", "json"]))["models"][0]
                if a.get("serving_nodes", 0) == serving and not a.get("draining_nodes") and not a.get("starting_nodes"):
                    return
                time.sleep(0.2)
            raise RuntimeError(f"the model did not reach {serving} serving nodes")

        run(ctl + ["deploy", model, "--autoscale", f"min=1,max=1,target={args.target}"])
        settle(1, 1, 1)
        capacity = bench(ctl, model, 0, 10, images, concurrency=2)["throughput"]
        print(f"capacity of one node: {capacity:.1f} images/s", file=sys.stderr)

        # The step.
        settle(1, args.max_nodes, 1)
        time.sleep(args.stable + 1)  # A full stable window at rest.
        poller = Poller(ctl, model)
        poller.start()
        low, high = 0.5 * capacity, 1.8 * capacity
        before = bench(ctl, model, low, args.before, images)
        step_at = time.time()
        during = bench(ctl, model, high, args.during, images)
        after_start = time.time()
        poller.stop = True  # Only the step needs it.
        poller.join()
        after = bench(ctl, model, low, args.after, images)
        coord_log = open(log.name).read().splitlines()
        decisions = [(glog_time(l), l) for l in coord_log if "autoscaling " + model + ": scale " in l]
        outs = [t for t, l in decisions if ": scale out" in l and t >= step_at]
        step_to_decision = (outs[0] - step_at) if outs else None
        serving_times = [float(m.group(1)) for l in coord_log
                         for m in [re.search(r"SERVING ([\d.]+) s after its start", l)] if m]
        first_nodes = set(poller.samples[0][2]) if poller.samples else set()
        first_request = None
        for t, auto, loads in poller.samples:
            if t < step_at:
                continue
            if any(n not in first_nodes and l.get("completions_per_s", 0) > 0
                   for n, l in loads.items()):
                first_request = t - step_at
                break
        needed_during = math.ceil(1.8 / args.target - 1e-9)
        needed_during = min(needed_during, args.max_nodes)
        provisioned = [a.get("serving_nodes", 0) + a.get("starting_nodes", 0) for t, a, _ in poller.samples
                       if step_at <= t < after_start]
        overshoot = max(0, max(provisioned, default=0) - needed_during)
        # Reversals under steady load: direction changes among the decisions inside one phase.
        reversals = 0
        for lo, hi in ((step_at, after_start), (after_start, time.time())):
            dirs = ["out" if ": scale out" in l else "in" for t, l in decisions if lo + args.panic < t < hi]
            reversals += sum(1 for x, y in zip(dirs, dirs[1:]) if x != y)

        # The soak: steady load, min flipping 2 -> 1.
        soak_rate = 0.5 * capacity
        soak_seconds = args.soak * 2 * (args.stable / 2 + 6)
        soak_report = {}
        soak_thread = threading.Thread(target=lambda: soak_report.update(
            bench(ctl, model, soak_rate, soak_seconds, images)))
        soak_thread.start()
        scale_ins = 0
        soak_end = time.time() + soak_seconds - 5
        while scale_ins < args.soak and time.time() < soak_end:
            settle(2, args.max_nodes, 2)
            settle(1, args.max_nodes, 1)
            scale_ins += 1
        soak_thread.join()
        all_failed = failed(before) + failed(during) + failed(after) + failed(soak_report)
        result = {
            "arch": args.arch,
            "capacity_images_per_s": round(capacity, 1),
            "step_to_decision_s": None if step_to_decision is None else round(step_to_decision, 2),
            "step_to_first_request_s": None if first_request is None else round(first_request, 2),
            "node_start_to_serving_s": round(sorted(serving_times)[len(serving_times) // 2], 2) if serving_times else None,
            "p99_ms_before": round(before["p99_ms"], 1),
            "p99_ms_during": round(during["p99_ms"], 1),
            "p99_ms_after": round(after["p99_ms"], 1),
            "overshoot_nodes": overshoot,
            "reversals": reversals,
            "scale_ins": scale_ins,
            "soak_requests": soak_report.get("ok", 0),
            "soak_stream_restarts": soak_report.get("stream_restarts", 0),
            "failed_requests": all_failed,
        }
        print(json.dumps(result))
    finally:
        coord.send_signal(signal.SIGTERM)
        try:
            coord.wait(timeout=60)
        except subprocess.TimeoutExpired:
            coord.kill()


if __name__ == "__main__":
    main()
