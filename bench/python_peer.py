#!/usr/bin/python3
"""BENCHMARKS.md T2 peer: a plain Python gRPC endpoint (Debian's python3-grpcio +
python3-torch) serving kennel.v1.Inference the way a typical hand-written endpoint does:
decode and classify one request at a time per stream with PIL + torchvision transforms.

    python_peer.py --artifact DIR --stubs DIR --port N [--workers W] [--threads T]

--stubs: a folder with the protoc-generated kennel/v1/*_pb2*.py. --workers: the gRPC
thread pool (a careful user sets it to the number of streams, since grpcio's sync server holds
a thread for a stream's whole life); --threads: torch intra-op threads (a careful user: 1).
Prints "listening on port N" once serving.
"""
import argparse
import io
import json
import struct
import sys
import time
from concurrent import futures

import grpc
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from PIL import Image


class SmallCnn(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(F.relu(self.fc1(x.flatten(1))))


DTYPES = {"F32": torch.float32, "I64": torch.int64, "F64": torch.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=DTYPES[info["dtype"]]) if e > b else torch.empty(0, dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--artifact", required=True)
    p.add_argument("--stubs", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="grpc thread pool size (default: Python's)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    sys.path.insert(0, args.stubs)
    from kennel.v1 import inference_pb2, inference_pb2_grpc  # noqa: E402

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    manifest = json.load(open(f"{args.artifact}/manifest.json"))
    arch = manifest["model"]["architecture"]
    classes = manifest["class_names"]
    pre = manifest["preprocess"]
    if arch == "SMALL_CNN":
        model = SmallCnn(len(classes))
    else:
        model = torchvision.models.resnet50(num_classes=len(classes))
    model.load_state_dict(read_safetensors(f"{args.artifact}/{manifest['weights_file']}"))
    model.eval()
    size = (pre["height"], pre["width"])
    steps = []
    if pre.get("resize_shorter"):
        steps += [T.Resize(pre["resize_shorter"]), T.CenterCrop(size)]
    else:
        steps += [T.Resize(size)]
    steps += [T.ToTensor(), T.Normalize(pre.get("mean", [0.0]), pre.get("std", [1.0]))]
    transform = T.Compose(steps)
    mode = "L" if pre.get("channels", 3) == 1 else "RGB"

    def classify(request):
        t0 = time.perf_counter()
        response = inference_pb2.ClassifyResponse(request_id=request.request_id, model_name=manifest["name"],
                                                  model_version=int(manifest.get("version", 0)), batch_size=1)
        try:
            x = transform(Image.open(io.BytesIO(request.image)).convert(mode)).unsqueeze(0)
        except Exception as e:  # noqa: BLE001
            response.error_code = 3
            response.error_message = str(e)
            return response
        with torch.no_grad():
            probs = torch.softmax(model(x), 1)[0]
        k = min(request.top_k or 5, len(classes))
        values, indices = probs.topk(k)
        for v, i in zip(values.tolist(), indices.tolist()):
            response.predictions.add(label=classes[i], class_index=i, probability=v)
        response.server_time.total_us = int((time.perf_counter() - t0) * 1e6)
        return response

    class Servicer(inference_pb2_grpc.InferenceServicer):
        def Classify(self, request, context):
            return classify(request)

        def ClassifyStream(self, request_iterator, context):
            for request in request_iterator:
                yield classify(request)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_receive_message_length", 16 << 20)])
    inference_pb2_grpc.add_InferenceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"listening on port {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
