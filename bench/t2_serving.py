#!/usr/bin/python3
"""BENCHMARKS.md T2: serving on CPU, Kennel's inference node against a plain Python gRPC
endpoint, both driven by the same load generator (kennelctl bench) in one run.

    bench/t2_serving.py [--build build] [--models small_cnn,resnet50] [--duration 10]
                        [--peer-python PYTHON ...]

For each model: the raw forward throughput at the best batch size and the preprocessing
throughput alone (kennel-bench-limits, 2 threads); Kennel's throughput and latency at
saturation and at a fixed lower rate, and its efficiency (server / the smaller limit); the
Python peer configured carefully (a worker per stream, 1 torch thread) and with its defaults;
the ratio. The peer runs under every Python given with --peer-python (default: Debian's
/usr/bin/python3 with torch 1.13, and .venv-torch2/bin/python with PyTorch 2.x when
`deploy/bootstrap.sh torch2 peers` has set it up); the fastest is the ratio's anchor.
Models: the small CNN on 28x28 PNGs of the Fashion-MNIST test set, ResNet-50 at 224x224 on
500x375 JPEGs (seeded random weights: throughput does not depend on them).
Prints one line per figure; exits non-zero only when something could not run.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from peers import default_peer_pythons, torch_version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1")


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kw)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
    return out.stdout


def start(cmd, log):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=ENV)
    for line in proc.stdout:
        m = re.search(r"listening on port (\d+)", line)
        if m:
            return proc, f"127.0.0.1:{m.group(1)}"
    raise RuntimeError(f"{cmd[0]} did not start; see {log}")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def cpu_seconds(pid):
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench(build, server, images, args, concurrency, rate=0.0, depth=4, unary=False, server_pid=None):
    """Runs kennelctl bench; with server_pid, adds the CPU cores the server and the load
    generator used during the run (they share this machine's cores)."""
    cmd = [f"{build}/cli/kennelctl", "-o", "json", "bench", "-s", server, "--concurrency", str(concurrency),
           "--depth", str(depth), "--duration", str(args.duration), "--rate", str(rate)]
    cmd += ["--images", images] if images else ["--fashion-mnist", "2000"]
    if unary:
        cmd.append("--unary")
    server_before = cpu_seconds(server_pid) if server_pid else 0.0
    client_before = os.times()
    start = time.monotonic()
    # Exit 1 means some requests failed: still a measurement (the errors are in the report).
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout)
    wall = time.monotonic() - start
    client_after = os.times()
    if server_pid:
        result["server_cores"] = (cpu_seconds(server_pid) - server_before) / wall
    result["client_cores"] = ((client_after.children_user - client_before.children_user)
                              + (client_after.children_system - client_before.children_system)) / wall
    return result


def fmt(r):
    errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "none"
    return (f"{r['throughput']:.1f} req/s, p50 {r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms, errors {errors}")


def one_model(name, args, work):
    build = args.build
    artifact = os.path.join(work, name)
    run([f"{build}/bench/kennel-bench-limits", "make-artifact", "--arch", name, "--out", artifact])
    images = ""
    if name == "resnet50":
        images = os.path.join(work, "jpegs")
        run([f"{build}/bench/kennel-bench-limits", "make-jpegs", "--out", images, "--count", "64"])
    limits = run([f"{build}/bench/kennel-bench-limits", "limits", "--artifact", artifact, "--threads", "2"]
                 + (["--images", images] if images else ["--fashion", "2000"]))
    model_best = float(re.search(r"model best: ([\d.]+)", limits).group(1))
    batch = re.search(r"at batch (\d+ \(.*\))", limits).group(1)
    preprocess = float(re.search(r"preprocess: ([\d.]+)", limits).group(1))
    limit = min(model_best, preprocess)
    print(f"T2 {name} raw model: {model_best:.1f} images/s at batch {batch}; preprocessing alone: "
          f"{preprocess:.1f} images/s (2 threads)")

    small = name == "small_cnn"
    conc = 16 if small else 4
    # Kennel, same 2-thread budget: two instances of one torch thread each (on this CPU both
    # models run as fast or faster that way than one instance on two threads); batches up to
    # the raw model's best batch for the small CNN, 1 for ResNet-50 (within noise of its best,
    # at the lowest latency); one preprocessing thread (two for JPEGs).
    node_cmd = [f"{build}/inference_node/kennel-inference", "--listen", "127.0.0.1:0", "--metrics_port", "-1",
                "--model_dir", artifact, "--instances", "2",
                "--torch_threads", "1", "--max_batch", batch.split()[0] if small else "1",
                "--max_delay_us", "0", "--preprocess_threads", "1" if small else "2", "--queue", "4096"]
    stubs = os.path.join(work, "stubs")
    if not os.path.exists(stubs):
        os.makedirs(stubs)
        run(["protoc", f"-I{REPO}/proto", f"--python_out={stubs}", f"--grpc_out={stubs}",
             "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
             f"{REPO}/proto/kennel/v1/inference.proto", f"{REPO}/proto/kennel/v1/model.proto"])
    careful = ["--workers", str(conc), "--threads", "1"]
    peer_configs = (("careful (worker per stream, 1 torch thread)", careful), ("defaults", []))
    peers = {}
    for python, version in args.peer_pythons:
        for label, extra in peer_configs:
            proc, addr = start([python, f"{REPO}/bench/python_peer.py", "--artifact", artifact,
                                "--stubs", stubs] + extra, os.path.join(work, f"peer-{name}.log"))
            try:
                peers[f"torch {version}, {label}"] = bench(build, addr, images, args, conc, depth=1)
            finally:
                stop(proc)
    # The careful peer under the faster torch is the one compared at a fixed rate.
    careful_python, careful_version = max(
        args.peer_pythons, key=lambda pv: peers[f"torch {pv[1]}, {peer_configs[0][0]}"]["throughput"])
    careful_label = f"torch {careful_version}, {peer_configs[0][0]}"
    proc, addr = start(node_cmd, os.path.join(work, f"kennel-{name}.log"))
    try:
        sat = bench(build, addr, images, args, conc, depth=8 if small else 4, server_pid=proc.pid)
        # The fixed lower rate: half of what the slower server sustains, the same for both.
        rate = round(0.5 * min(sat["throughput"], peers[careful_label]["throughput"]), 1)
        low = bench(build, addr, images, args, conc, rate=rate)
    finally:
        stop(proc)
    proc, addr = start([careful_python, f"{REPO}/bench/python_peer.py", "--artifact", artifact, "--stubs", stubs]
                       + careful, os.path.join(work, f"peer-{name}.log"))
    open_label = f"torch {careful_version}, careful, open loop"
    try:
        peers[open_label] = bench(build, addr, images, args, conc, rate=rate, depth=1)
    finally:
        stop(proc)
    print(f"T2 {name} kennel at saturation ({conc} streams): {fmt(sat)}; mean batch {sat['mean_batch']:.1f}")
    print(f"T2 {name} kennel at {rate:.0f} req/s open loop: {fmt(low)}")
    print(f"T2 {name} kennel efficiency: {sat['throughput'] / limit:.2f} "
          f"(server {sat['throughput']:.1f} / min(model {model_best:.1f}, preprocess {preprocess:.1f}))")
    # The limits had both cores; the server had what the load generator left it.
    cores = os.cpu_count()
    print(f"T2 {name} CPU at saturation: server {sat['server_cores']:.2f} cores, load generator "
          f"{sat['client_cores']:.2f} cores (of {cores}); efficiency per server core: "
          f"{sat['throughput'] / sat['server_cores'] / (limit / cores):.2f} "
          f"(server req/s per core it used / limit per core)")
    for label, r in peers.items():
        print(f"T2 {name} python peer {label}: {fmt(r)}")
    best_peer = max(r["throughput"] for k, r in peers.items() if "open loop" not in k)
    print(f"T2 {name} throughput ratio kennel / best python peer: {sat['throughput'] / best_peer:.2f}x")
    print(f"T2 {name} p99 at {rate:.0f} req/s: kennel {low['p99_ms']:.1f} ms, careful python peer "
          f"(torch {careful_version}) {peers[open_label]['p99_ms']:.1f} ms")
    if not small:
        # bf16 weights and activations (oneDNN uses AVX512-BF16 where the CPU has it); softmax
        # stays float32. Not like for like with the fp32 peer: reported beside it.
        limits = run([f"{build}/bench/kennel-bench-limits", "limits", "--artifact", artifact, "--threads", "2",
                      "--precision", "bf16", "--images", images])
        bf16_best = float(re.search(r"model best: ([\d.]+)", limits).group(1))
        bf16_cmd = node_cmd + ["--precision", "bf16"]
        bf16_cmd[bf16_cmd.index("--max_batch") + 1] = "8"
        proc, addr = start(bf16_cmd, os.path.join(work, f"kennel-{name}-bf16.log"))
        try:
            bf16 = bench(build, addr, images, args, conc, depth=4, server_pid=proc.pid)
        finally:
            stop(proc)
        print(f"T2 {name} kennel bf16: raw model {bf16_best:.1f} images/s; at saturation {fmt(bf16)}; "
              f"mean batch {bf16['mean_batch']:.1f}; efficiency {bf16['throughput'] / min(bf16_best, preprocess):.2f}; "
              f"{bf16['throughput'] / best_peer:.2f}x the best fp32 python peer")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(REPO, "build"))
    p.add_argument("--models", default="small_cnn,resnet50")
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--peer-python", action="append",
                   help="a Python with torch, torchvision, PIL and grpcio to run the peer under (repeatable)")
    args = p.parse_args()
    pythons = args.peer_python or default_peer_pythons(["torchvision", "grpc", "PIL"])
    args.peer_pythons = [(python, torch_version(python)) for python in pythons]
    work = tempfile.mkdtemp(prefix="kennel-t2-")
    print(f"T2 machine: {os.cpu_count()} cores; server and load generator share them")
    try:
        for name in args.models.split(","):
            one_model(name, args, work)
    except Exception as e:  # noqa: BLE001 - any failure means the benchmark could not run.
        print(f"T2 could not run: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
