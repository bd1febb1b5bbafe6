#!/usr/bin/python3
"""BENCHMARKS.md T1: data-parallel training of the small CNN on Fashion-MNIST, Kennel against
PyTorch DDP under torchrun, on this machine, in one run.

    bench/t1_training.py [--build build] [--epochs 5] [--lr 0.05] [--schedule cosine]
                         [--peer-python PYTHON ...] [--grad-compression none,fp16,bf16,powersgd]
                         [--no-peer] [--model mobilenet_v3_small --image-size 32]

Kennel: a coordinator and 2 trainer processes (1 torch thread each) on loopback, driven by
kennelctl. Peer: torchrun --nproc_per_node 2 bench/ddp_peer.py with the same model, batch 64
per rank, SGD momentum 0.9, learning rate and schedule. Each side runs alone (the other is
stopped). The peer runs under every Python given with --peer-python (default: Debian's
/usr/bin/python3 with torch 1.13, and .venv-torch2/bin/python with PyTorch 2.x when
`deploy/bootstrap.sh torch2 peers` has set it up); the faster peer is the ratio's anchor.
--grad-compression runs Kennel once per listed compression (the peer once, uncompressed) and
prints each one's final accuracy against Kennel's uncompressed run: the accuracy cost of
compressed gradients. --model mobilenet_v3_small trains the user's own model instead: torchvision's
MobileNetV3-Small (10 classes, seeded) scripted by Debian's torch and torchvision into one
file that both sides train (Kennel with `kennelctl train --model-file`, the peer loads it with
torch.jit.load), on Fashion-MNIST resized to --image-size with its gray channel repeated 3 times. Prints one line per figure; exits non-zero only when a side could not
run.
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
import time

from peers import default_peer_pythons, torch_version

FASHION = "/usr/share/datasets/fashion-mnist"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_scripted_model(name, work):
    """torchvision's `name` (10 classes, seed 0) scripted by Debian's torch 1.13, for both sides."""
    path = os.path.join(work, f"{name}.pt")
    code = ("import sys, torch, torchvision; torch.manual_seed(0); "
            f"m = torchvision.models.{name}(num_classes=10); torch.jit.save(torch.jit.script(m), sys.argv[1])")
    subprocess.run(["/usr/bin/python3", "-c", code, path], check=True)
    return path


def user_model_flags(args):
    """What a user-model run adds to each side's command line: the same file, size and inputs."""
    if not args.model_file:
        return [], []
    fashion = ["--mean"] + ["0.2860"] * 3 + ["--std"] + ["0.3530"] * 3
    kennel = ["--model-file", args.model_file, "--in-channels", "3", "--image-size", str(args.image_size),
              "--resize-shorter", "0"] + fashion
    peer = ["--model-file", args.model_file, "--image-size", str(args.image_size)]
    return kennel, peer


def run_kennel(build, args, work, compression="none"):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    coord_log = open(os.path.join(work, "coordinator.log"), "w")
    coord = subprocess.Popen([f"{build}/coordinator/kennel-coordinator", "--listen", "127.0.0.1:0",
                              "--data_dir", os.path.join(work, f"coord-{compression}")],
                             stdout=subprocess.PIPE, stderr=coord_log, text=True)
    procs = [coord]
    try:
        port = None
        for line in coord.stdout:
            m = re.search(r"listening on port (\d+)", line)
            if m:
                port = m.group(1)
                break
        address = f"127.0.0.1:{port}"
        for name in ("bench-a", "bench-b"):
            procs.append(subprocess.Popen(
                [f"{build}/trainer_node/kennel-trainer", "--coordinator", address, "--name", name,
                 "--work_dir", os.path.join(work, f"{name}-{compression}")],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, name + ".log"), "w"), env=env))
        ctl = [f"{build}/cli/kennelctl", "-c", address, "-o", "json"]
        for _ in range(200):
            status = json.loads(subprocess.run(ctl + ["status"], capture_output=True, text=True).stdout or "{}")
            if sum(n.get("state") == "IDLE" for n in status.get("nodes", [])) == 2:
                break
            time.sleep(0.1)
        out = subprocess.run(ctl + ["train", "--name", "t1", "--epochs", str(args.epochs), "--lr", str(args.lr),
                                    "--schedule", args.schedule, "--batch-size", "64", "--torch-threads", "1",
                                    "--grad-compression", compression, "--wait"] + user_model_flags(args)[0],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"kennelctl train failed: {out.stderr}")
        job = json.loads(out.stdout)
        return [{"epoch": int(e.get("epoch", 0)), "images_per_second": e["images_per_second"],
                 "seconds": e["seconds"], "elapsed_seconds": e["elapsed_seconds"],
                 "eval_accuracy": e["eval_accuracy"], "train_loss": e["train_loss"]} for e in job["epochs"]]
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def run_peer(args, work, python):
    raw = os.path.join(work, "FashionMNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for name in os.listdir(FASHION):
        with gzip.open(os.path.join(FASHION, name)) as src, open(os.path.join(raw, name[:-3]), "wb") as dst:
            shutil.copyfileobj(src, dst)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    # Debian's torch 1.13 on Python 3.11 needs --redirects/--tee (BENCHMARKS.md).
    cmd = [python, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--redirects", "9:1", "--tee", "9:1", "--log_dir", os.path.join(work, "torchrun"),
           os.path.join(REPO, "bench", "ddp_peer.py"), "--data", work, "--epochs", str(args.epochs),
           "--lr", str(args.lr), "--schedule", args.schedule] + user_model_flags(args)[1]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"torchrun failed: {out.stderr[-2000:]}")
    epochs = []
    for line in out.stdout.splitlines():
        if "{" in line:
            epochs.append(json.loads(line[line.index("{"):]))
    return epochs


def time_to(epochs, accuracy):
    for e in epochs:
        if e["eval_accuracy"] >= accuracy:
            return e["elapsed_seconds"]
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(REPO, "build"))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--schedule", default="cosine", choices=["constant", "cosine"])
    p.add_argument("--peer-python", action="append",
                   help="a Python with torch and torchvision to run the DDP peer under (repeatable)")
    p.add_argument("--grad-compression", default="none",
                   help="comma-separated: Kennel runs once per value (none, fp16, bf16, powersgd)")
    p.add_argument("--no-peer", action="store_true", help="Kennel only")
    p.add_argument("--model", default="small_cnn", choices=["small_cnn", "mobilenet_v3_small"],
                   help="the small CNN (built in), or torchvision's MobileNetV3-Small as a TorchScript file")
    p.add_argument("--image-size", type=int, default=32, help="with --model mobilenet_v3_small: input side")
    args = p.parse_args()
    args.model_file = None
    compressions = [c.strip() for c in args.grad_compression.split(",") if c.strip()]
    for c in compressions:
        if c not in ("none", "fp16", "bf16", "powersgd"):
            p.error(f"--grad-compression: {c} is not none, fp16, bf16 or powersgd")
    work = tempfile.mkdtemp(prefix="kennel-t1-")
    peers = {}
    runs = {}
    try:
        if args.model != "small_cnn":
            args.model_file = make_scripted_model(args.model, work)
        for c in compressions:
            runs[c] = run_kennel(args.build, args, work, c)
        for python in [] if args.no_peer else args.peer_python or default_peer_pythons(["torchvision"]):
            peers[f"torchrun-ddp (torch {torch_version(python)})"] = run_peer(args, work, python)
    except Exception as e:  # noqa: BLE001 - any failure means the benchmark could not run.
        print(f"T1 could not run: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cores = os.cpu_count()
    median = lambda epochs: statistics.median(e["images_per_second"] for e in epochs)
    print(f"T1 machine: {cores} cores; 2 ranks x 1 torch thread, batch 64/rank, SGD momentum 0.9, "
          f"lr {args.lr} {args.schedule}, {args.epochs} epochs, model {args.model}"
          + (f" (TorchScript, {args.image_size}x{args.image_size}x3)" if args.model_file else ""))
    fmt = lambda t: f"{t:.1f}s" if t is not None else "not reached"
    sides = [("kennel" if c == "none" else f"kennel grads {c}", epochs) for c, epochs in runs.items()]
    for name, epochs in sides + list(peers.items()):
        print(f"T1 {name} per-epoch images/s: " + ", ".join(f"{e['images_per_second']:.0f}" for e in epochs))
        print(f"T1 {name} per-epoch eval accuracy: " + ", ".join(f"{e['eval_accuracy']:.4f}" for e in epochs))
        print(f"T1 {name}: median {median(epochs):.0f} images/s, time to 90% test accuracy "
              f"{fmt(time_to(epochs, 0.90))}, final test accuracy {epochs[-1]['eval_accuracy']:.4f}")
    if "none" in runs:
        base = runs["none"][-1]["eval_accuracy"]
        for c, epochs in runs.items():
            if c != "none":
                print(f"T1 kennel grads {c}: final accuracy {epochs[-1]['eval_accuracy']:.4f}, "
                      f"{100 * (epochs[-1]['eval_accuracy'] - base):+.2f} points against uncompressed {base:.4f}")
    if peers:
        ours = runs[compressions[0]]
        anchor = max(peers, key=lambda name: median(peers[name]))
        print(f"T1 images/s (median over epochs): kennel ({compressions[0]}) {median(ours):.0f}, fastest peer "
              f"{anchor} {median(peers[anchor]):.0f}, ratio {median(ours) / median(peers[anchor]):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
