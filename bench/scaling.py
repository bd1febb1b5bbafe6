#!/usr/bin/python3
"""Training across real links: Kennel and torchrun DDP with every rank in a network namespace
of its own, the links rate-shaped, one run after the other (BENCHMARKS.md T1's job: the small
CNN on Fashion-MNIST, batch 64 per rank, SGD momentum 0.9, lr 0.05 cosine, seeds fixed).

    sudo bench/scaling.py [--build build] [--ranks 2] [--rates unshaped,600mbit,150mbit]
                          [--compression none,fp16,bf16,powersgd] [--epochs 2] [--no-peer] [--smoke]
                          [--trainer-flag=--flag=value]

Each rank runs in namespace <prefix>-<rank> behind a veth pair on a bridge; a shaped rate puts
`tc tbf` on both ends of every rank's veth (this kernel has no sch_netem: no added delay).
Kennel: the coordinator beside rank 0, one kennel-trainer per namespace (1 torch thread),
driven by kennelctl from the root namespace. Peer: torchrun --nnodes RANKS --nproc_per_node 1
bench/ddp_peer.py in each namespace, rendezvous at rank 0's address, Gloo on the namespace's
interface (GLOO_SOCKET_IFNAME), DDP's fp16 compress hook for fp16 (its bf16 hook needs CUDA
and NCCL, so the peer's bf16 runs are skipped on CPUs) and its PowerSGD hook (rank 4, 100
warm-up steps, as Kennel's defaults) for powersgd. Prints, per side, rate and
compression: images/s per epoch, the ratio to the same side's unshaped run, time to 90 %
test accuracy and the final accuracy, and for Kennel rank 0's step timeline of the last epoch. Namespaces, veths and the bridge are removed whatever
happens. Needs root, iproute2 and tc.

--smoke: 2 ranks, unshaped and 150mbit, 1 epoch on 3,000 samples (CI runs it; its figures are
not the benchmark's). Exits 77 (skipped) without root or ip/tc, 1 when a run failed.
"""
import argparse
import gzip
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = "/usr/share/datasets/fashion-mnist"
SKIP = 77


def sh(*argv, check=True):
    out = subprocess.run(list(argv), capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")
    return out


class Network:
    """A bridge and one namespace per rank; rank i at 10.<n>.<m>.<i + 2>, the bridge at .1."""

    def __init__(self, ranks):
        tag = os.getpid() % 10000
        self.prefix = f"ksc{tag}"
        self.subnet = f"10.{200 + tag % 50}.{tag % 250}"
        self.ranks = ranks
        self.made = []

    def ns(self, rank):
        return f"{self.prefix}-{rank}"

    def address(self, rank):
        return f"{self.subnet}.{rank + 2}"

    def host_side(self, rank):
        return f"{self.prefix}h{rank}"

    def ns_side(self, rank):
        return f"{self.prefix}n{rank}"

    def up(self):
        bridge = f"{self.prefix}br"
        sh("ip", "link", "add", "name", bridge, "type", "bridge")
        self.made.append(("link", bridge))
        sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", bridge)
        sh("ip", "link", "set", bridge, "up")
        for r in range(self.ranks):
            sh("ip", "netns", "add", self.ns(r))
            self.made.append(("netns", self.ns(r)))
            sh("ip", "link", "add", self.host_side(r), "type", "veth", "peer", "name", self.ns_side(r))
            self.made.append(("link", self.host_side(r)))
            sh("ip", "link", "set", self.ns_side(r), "netns", self.ns(r))
            sh("ip", "link", "set", self.host_side(r), "master", bridge, "up")
            ns = ["ip", "netns", "exec", self.ns(r)]
            sh(*ns, "ip", "addr", "add", f"{self.address(r)}/24", "dev", self.ns_side(r))
            sh(*ns, "ip", "link", "set", self.ns_side(r), "up")
            sh(*ns, "ip", "link", "set", "lo", "up")

    def shape(self, rate):
        """`rate` (tc syntax, e.g. 600mbit) on both directions of every rank's link; None: off."""
        for r in range(self.ranks):
            ns = ["ip", "netns", "exec", self.ns(r)]
            sh("tc", "qdisc", "del", "dev", self.host_side(r), "root", check=False)
            sh(*ns, "tc", "qdisc", "del", "dev", self.ns_side(r), "root", check=False)
            if rate:
                tbf = ["root", "tbf", "rate", rate, "burst", "64kb", "latency", "50ms"]
                sh("tc", "qdisc", "add", "dev", self.host_side(r), *tbf)
                sh(*ns, "tc", "qdisc", "add", "dev", self.ns_side(r), *tbf)

    def down(self):
        for kind, name in reversed(self.made):
            if kind == "netns":
                sh("ip", "netns", "del", name, check=False)
            else:
                sh("ip", "link", "del", name, check=False)
        self.made = []


class Processes:
    def __init__(self):
        self.procs = []

    def start(self, argv, log, env=None, stdout=subprocess.DEVNULL):
        p = subprocess.Popen(argv, stdout=stdout, stderr=open(log, "w"), env=env, text=True,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []


def run_kennel(args, net, work, compression):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    procs = Processes()
    coordinator = f"{net.address(0)}:7070"
    try:
        c = procs.start(["ip", "netns", "exec", net.ns(0), f"{args.build}/coordinator/kennel-coordinator",
                         "--listen", coordinator, "--insecure", "--data_dir", os.path.join(work, "coord")],
                        os.path.join(work, "coordinator.log"), stdout=subprocess.PIPE)
        for line in c.stdout:
            if "listening on port" in line:
                break
        for r in range(args.ranks):
            procs.start(["ip", "netns", "exec", net.ns(r), f"{args.build}/trainer_node/kennel-trainer",
                         "--coordinator", coordinator, "--name", f"rank{r}", "--advertise_host", net.address(r),
                         "--work_dir", os.path.join(work, f"rank{r}")] + args.trainer_flags,
                        os.path.join(work, f"trainer{r}.log"), env=env)
        ctl = [f"{args.build}/cli/kennelctl", "-c", coordinator, "-o", "json"]
        deadline = time.time() + 60
        while time.time() < deadline:
            out = sh(*ctl, "status", check=False)
            nodes = json.loads(out.stdout or "{}").get("nodes", [])
            if sum(n.get("state") == "IDLE" for n in nodes) == args.ranks:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the trainers did not join (logs in {work})")
        cmd = ctl + ["train", "--name", "scaling", "--world-size", str(args.ranks), "--epochs", str(args.epochs),
                     "--lr", str(args.lr), "--schedule", "cosine", "--batch-size", "64", "--torch-threads", "1",
                     "--seed", "1", "--grad-compression", compression, "--wait"]
        if args.max_train_samples:
            cmd += ["--max-train-samples", str(args.max_train_samples), "--max-eval-samples", "1000"]
        out = sh(*cmd, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"kennelctl train failed ({out.returncode}): {out.stderr.strip()[-1500:]}")
        return [{"images_per_second": e["images_per_second"], "elapsed_seconds": e["elapsed_seconds"],
                 "eval_accuracy": e.get("eval_accuracy", 0.0), "timeline": e.get("timeline")}
                for e in json.loads(out.stdout)["epochs"]]
    finally:
        procs.stop()


def run_peer(args, net, work, compression, python):
    data = os.path.join(work, "data")
    raw = os.path.join(data, "FashionMNIST", "raw")
    if not os.path.isdir(raw):
        os.makedirs(raw)
        for name in os.listdir(FASHION):
            with gzip.open(os.path.join(FASHION, name)) as src, open(os.path.join(raw, name[:-3]), "wb") as dst:
                shutil.copyfileobj(src, dst)
    procs = Processes()
    try:
        rank0 = None
        for r in range(args.ranks):
            env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=net.ns_side(r))
            argv = ["ip", "netns", "exec", net.ns(r), python, "-m", "torch.distributed.run",
                    "--nnodes", str(args.ranks), "--node_rank", str(r), "--nproc_per_node", "1",
                    "--master_addr", net.address(0), "--master_port", "29555",
                    # Debian's torch 1.13 on Python 3.11 needs --redirects/--tee (BENCHMARKS.md).
                    "--redirects", "9:1", "--tee", "9:1", "--log_dir", os.path.join(work, f"torchrun{r}"),
                    os.path.join(REPO, "bench", "ddp_peer.py"), "--data", data, "--epochs", str(args.epochs),
                    "--lr", str(args.lr), "--schedule", "cosine", "--seed", "1", "--compression", compression]
            if args.max_train_samples:
                argv += ["--max-train-samples", str(args.max_train_samples), "--max-eval-samples", "1000"]
            p = procs.start(argv, os.path.join(work, f"peer{r}.log"), env=env,
                            stdout=subprocess.PIPE if r == 0 else subprocess.DEVNULL)
            rank0 = rank0 or p
        # A peer that hangs (torch 2.11's rendezvous was seen to, in these namespaces) is
        # stopped rather than waited for forever.
        limit = 300 + 600 * args.epochs
        watchdog = threading.Timer(limit, procs.stop)
        watchdog.start()
        try:
            epochs = []
            for line in rank0.stdout:
                if "{" in line:
                    epochs.append(json.loads(line[line.index("{"):]))
            if rank0.wait() != 0 or len(epochs) != args.epochs:
                raise RuntimeError(f"torchrun failed or passed {limit} s (logs in {work})")
        finally:
            watchdog.cancel()
        return epochs
    finally:
        procs.stop()


def timeline_summary(t):
    """One line from rank 0's mean step (v1.StepTimeline, as kennelctl's JSON gives it)."""
    ms = lambda k: float(t.get(k, 0.0))
    line = (f"step {ms('step_ms'):.1f} ms = data {ms('data_ms'):.1f} + forward {ms('forward_ms'):.1f} + "
            f"backward {ms('backward_ms'):.1f} + all-reduce wait {ms('sync_wait_ms'):.1f} + "
            f"optimizer {ms('optimizer_ms'):.1f}")
    for i, b in enumerate(t.get("buckets", [])):
        line += (f"; bucket {i} {int(b.get('bytes', 0)) / 1e3:.0f} kB ready {float(b.get('ready_ms', 0)):.1f} "
                 f"reduced {float(b.get('reduce_start_ms', 0)):.1f}-{float(b.get('reduce_end_ms', 0)):.1f}")
    return line + " (ms from backward's start)"


def time_to(epochs, accuracy):
    return next((e["elapsed_seconds"] for e in epochs if e["eval_accuracy"] >= accuracy), None)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(REPO, "build"))
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--rates", default="unshaped,600mbit,150mbit", help="comma-separated tc rates; 'unshaped'")
    p.add_argument("--compression", default="none", help="comma-separated: none, fp16, bf16, powersgd")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--trainer-flag", dest="trainer_flags", action="append", default=[],
                   help="a flag for every kennel-trainer, e.g. --trainer-flag=--compute_nice=0 (repeatable)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--max-train-samples", type=int, default=0)
    p.add_argument("--no-peer", action="store_true", help="Kennel only")
    p.add_argument("--peer-python", default="/usr/bin/python3")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.ranks, args.rates, args.epochs, args.max_train_samples = 2, "unshaped,150mbit", 1, 3000
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        print("scaling: needs root, ip and tc (network namespaces); skipped", file=sys.stderr)
        return SKIP
    if args.ranks < 2:
        p.error("--ranks must be at least 2")
    rates = [r.strip() for r in args.rates.split(",") if r.strip()]
    compressions = [c.strip() for c in args.compression.split(",") if c.strip()]
    for c in compressions:
        if c not in ("none", "fp16", "bf16", "powersgd"):
            p.error(f"--compression: {c} is not none, fp16, bf16 or powersgd")

    # Removed whatever happens: a signal becomes an exception, and `finally` tears down.
    def interrupted(signum, _):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupted)
    net = Network(args.ranks)
    work = tempfile.mkdtemp(prefix="kennel-scaling-")
    results = {}  # (side, rate, compression) -> epochs
    failed = False
    try:
        net.up()
        for rate in rates:
            net.shape(None if rate == "unshaped" else rate)
            for compression in compressions:
                sides = [("kennel", lambda d: run_kennel(args, net, d, compression))]
                if args.no_peer:
                    pass
                elif compression == "bf16":
                    # torch's bf16_compress_hook refuses to run without CUDA and NCCL 2.10+.
                    print("scaling: torchrun-ddp has no bf16 compression on CPUs (DDP's hook needs CUDA "
                          "and NCCL); skipped", file=sys.stderr)
                else:
                    sides.append(("torchrun-ddp", lambda d: run_peer(args, net, d, compression, args.peer_python)))
                for side, run in sides:
                    d = os.path.join(work, f"{side}-{rate}-{compression}")
                    os.makedirs(d)
                    print(f"scaling: {side}, {args.ranks} ranks, link {rate}, gradients {compression} ...",
                          file=sys.stderr, flush=True)
                    try:
                        results[(side, rate, compression)] = run(d)
                    except RuntimeError as e:
                        print(f"scaling: {side} {rate} {compression} failed: {e}", file=sys.stderr)
                        failed = True
    finally:
        net.down()
    print(f"scaling: {args.ranks} ranks, small CNN, batch 64/rank, SGD momentum 0.9, lr {args.lr} cosine, "
          f"{args.epochs} epochs{f', {args.max_train_samples} samples' if args.max_train_samples else ''}; "
          f"{os.cpu_count()} cores")
    for (side, rate, compression), epochs in results.items():
        ips = statistics.median(e["images_per_second"] for e in epochs)
        base = results.get((side, "unshaped", compression))
        ratio = f"{ips / statistics.median(e['images_per_second'] for e in base):.2f}" if base else "-"
        t90 = time_to(epochs, 0.90)
        print(f"scaling {side:13s} link {rate:9s} grads {compression:4s}: images/s "
              + " / ".join(f"{e['images_per_second']:.0f}" for e in epochs)
              + f" (x{ratio} of unshaped), time to 90% {f'{t90:.0f} s' if t90 else 'not reached'}, "
              f"final accuracy {epochs[-1]['eval_accuracy']:.4f}")
        if epochs[-1].get("timeline"):
            print(f"  timeline (rank 0, last epoch): {timeline_summary(epochs[-1]['timeline'])}")
    if failed:
        print(f"scaling: logs kept in {work}", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
