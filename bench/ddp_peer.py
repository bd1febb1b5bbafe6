#!/usr/bin/python3
"""BENCHMARKS.md T1 peer: PyTorch DDP (gloo) under torchrun, the same small CNN and
hyperparameters as Kennel's run, torchvision's FashionMNIST with a DistributedSampler.

    torchrun --nproc_per_node 2 --redirects 9:1 --tee 9:1 ddp_peer.py --data DIR [...]

DIR holds FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (uncompressed).
Rank 0 prints one JSON line per epoch: {"epoch", "images_per_second", "seconds",
"elapsed_seconds", "eval_accuracy", "train_loss"}.
"""
import argparse
import json
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(F.relu(self.fc1(x.flatten(1))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--compression", choices=["none", "fp16", "bf16", "powersgd"], default="none",
                   help="DDP's fp16/bf16 compress hook or its PowerSGD hook (rank 4, 100 warm-up "
                        "steps, as Kennel's --grad-compression defaults)")
    p.add_argument("--max-train-samples", type=int, default=0, help="0: the whole training set")
    p.add_argument("--max-eval-samples", type=int, default=0, help="0: the whole test set")
    p.add_argument("--model-file", help="train this TorchScript module (torch.jit.load) instead of the small CNN")
    p.add_argument("--image-size", type=int, default=28,
                   help="with --model-file: images resized to this side, the gray channel repeated 3 times")
    args = p.parse_args()

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed)
    tf = T.Compose([T.ToTensor(), T.Normalize((0.2860,), (0.3530,))])
    if args.model_file:  # As Kennel's preprocessing: resize, 3 channels, the same statistics.
        tf = T.Compose([T.ToTensor(), T.Resize(args.image_size), T.Lambda(lambda x: x.expand(3, -1, -1)),
                        T.Normalize((0.2860,) * 3, (0.3530,) * 3)])
    train = torchvision.datasets.FashionMNIST(args.data, train=True, transform=tf, download=False)
    test = torchvision.datasets.FashionMNIST(args.data, train=False, transform=tf, download=False)
    if args.max_train_samples:
        train = torch.utils.data.Subset(train, range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples:
        test = torch.utils.data.Subset(test, range(min(args.max_eval_samples, len(test))))
    sampler = torch.utils.data.distributed.DistributedSampler(train, seed=args.seed)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, sampler=sampler,
                                         num_workers=args.workers)
    test_sampler = torch.utils.data.distributed.DistributedSampler(test, shuffle=False)
    test_loader = torch.utils.data.DataLoader(test, batch_size=256, sampler=test_sampler)
    model = nn.parallel.DistributedDataParallel(torch.jit.load(args.model_file) if args.model_file else SmallCnn())
    if args.compression == "powersgd":
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook
        state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=4,
                                            start_powerSGD_iter=100, min_compression_rate=2,
                                            use_error_feedback=True, warm_start=True, random_seed=args.seed)
        model.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    elif args.compression != "none":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        model.register_comm_hook(None, getattr(default_hooks, f"{args.compression}_compress_hook"))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    total_steps = len(loader) * args.epochs
    # Per-step cosine decay to 0, as Kennel's LearningRateAt.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        if args.schedule == "cosine" else 1.0)

    start = time.perf_counter()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        images, loss_sum = 0, 0.0
        for x, y in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            images += x.shape[0]
            loss_sum += loss.item() * x.shape[0]
        seconds = time.perf_counter() - t0
        model.eval()
        correct = torch.zeros(3, dtype=torch.float64)
        with torch.no_grad():
            for x, y in test_loader:
                correct[0] += (model(x).argmax(1) == y).sum()
                correct[1] += y.shape[0]
        correct[2] = loss_sum
        dist.all_reduce(correct)
        total_images = torch.tensor([images], dtype=torch.float64)
        dist.all_reduce(total_images)
        if rank == 0:
            print(json.dumps({"epoch": epoch, "images_per_second": total_images.item() / seconds,
                              "seconds": seconds, "elapsed_seconds": time.perf_counter() - start,
                              "eval_accuracy": (correct[0] / correct[1]).item(),
                              "train_loss": correct[2].item() / total_images.item()}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
