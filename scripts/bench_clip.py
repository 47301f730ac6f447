#!/usr/bin/env python3
"""CLIP encoder speed: cliptag's tract path against onnxruntime, interleaved A/B/A/B.

Both engines stay loaded in their own process (tract: examples/bench_clip.rs; onnxruntime:
this file with --ort-worker) with the same thread count, and time the same inputs (written
once by the tract worker). Each round runs every case on both engines, alternating which
goes first, so drift of the machine (thermal, other load) hits both alike. Reports the
median milliseconds per item, the ratio tract/onnxruntime, and the cosine between the two
engines' embeddings of the first item (a check that they ran the same thing).

Run through scripts/bench-clip.sh, which makes the venv and the models.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def ort_worker(args):
    import numpy as np
    import onnxruntime as ort

    meta = json.load(open(os.path.join(args.inputs, "inputs.json")))
    pixels = np.fromfile(os.path.join(args.inputs, "pixels.f32"), dtype="<f4").reshape(
        meta["pixels_shape"]
    )
    ids = np.array(meta["ids"], dtype=np.int64)
    pad = meta["pad_id"]
    # Real tokens and the first end token attend; padding after it does not.
    mask = np.zeros_like(ids)
    for r, row in enumerate(ids):
        end = next((i for i in range(1, len(row)) if row[i] == pad), len(row) - 1)
        mask[r, : end + 1] = 1
    sessions = {}

    def session(tower, variant):
        key = (tower, variant)
        if key not in sessions:
            suffix = "" if variant == "fp32" else "_quantized"
            path = os.path.join(args.model, "onnx", f"{tower}_model{suffix}.onnx")
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sessions[key] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return sessions[key]

    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[0] == "load":
            started = time.perf_counter()
            session("vision", words[1])
            session("text", words[1])
            print(f"loaded {(time.perf_counter() - started) * 1e3:.1f}", flush=True)
            continue
        tower, variant, batch, iters = words[0], words[1], int(words[2]), int(words[3])
        s = session("vision" if tower == "vision" else "text", variant)
        names = [i.name for i in s.get_inputs()]
        if tower == "vision":
            feed = {"pixel_values": pixels[:batch]}
            out_name = "image_embeds"
        else:
            feed = {"input_ids": ids[:batch]}
            if "attention_mask" in names:
                feed["attention_mask"] = mask[:batch]
            out_name = "text_embeds"
        times = []
        for _ in range(iters):
            started = time.perf_counter()
            out = s.run([out_name], feed)[0]
            times.append((time.perf_counter() - started) * 1e3)
        first = out[0] / np.linalg.norm(out[0])
        print("times " + " ".join(f"{t:.4f}" for t in times), flush=True)
        print("embedding " + " ".join(f"{x:.6f}" for x in first), flush=True)


class Engine:
    def __init__(self, name, argv):
        self.name = name
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            sys.exit(f"{name} worker did not start (said {line!r})")

    def ask(self, command, lines=1):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        replies = []
        for _ in range(lines):
            line = self.proc.stdout.readline()
            if not line:
                sys.exit(f"{self.name} worker died on {command!r}")
            replies.append(line.split())
        return replies

    def run(self, tower, variant, batch, iters):
        times, embedding = self.ask(f"{tower} {variant} {batch} {iters}", lines=2)
        return [float(t) for t in times[1:]], [float(x) for x in embedding[1:]]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    return dot / (na * nb) if na and nb else 0.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--worker", help="the tract worker binary (examples/bench_clip)")
    p.add_argument("--inputs", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=5, help="runs per case per round")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--variants", default="fp32,quantized")
    p.add_argument("--ort-worker", action="store_true")
    p.add_argument("--settle-ms", type=float, default=200,
                   help="idle time before each engine's runs, so neither runs while the"
                   " other's threads still spin down")
    args = p.parse_args()
    if args.ort_worker:
        return ort_worker(args)

    common = ["--model", args.model, "--threads", str(args.threads), "--inputs", args.inputs]
    tract = Engine("tract", [args.worker] + common)
    ort = Engine("onnxruntime", [sys.executable, __file__, "--ort-worker"] + common)
    variants = args.variants.split(",")
    loads = {}
    for v in variants:
        for e in (tract, ort):
            if not (e is tract and v == "fp32"):
                loads[(e.name, v)] = float(e.ask(f"load {v}")[0][1])
    batches = [int(b) for b in args.batches.split(",")]
    cases = [(t, v, b) for v in variants for t in ("vision", "text") for b in batches]
    samples = {(e, c): [] for e in ("tract", "onnxruntime") for c in cases}
    cosines = {}
    for case in cases:  # warm-up: plans, allocations, caches
        for e in (tract, ort):
            e.run(*case, 1)
    for r in range(args.rounds):
        for case in cases:
            order = (tract, ort) if r % 2 == 0 else (ort, tract)
            embeddings = {}
            for e in order:
                time.sleep(args.settle_ms / 1e3)
                times, embedding = e.run(*case, args.iters)
                samples[(e.name, case)] += [t / case[2] for t in times]
                embeddings[e.name] = embedding
            cosines[case] = cosine(embeddings["tract"], embeddings["onnxruntime"])
    rss = float(tract.ask("rss")[0][1])

    label = {"fp32": "fp32", "quantized": "int8"}
    print(f"\nmodel {args.model}, {args.threads} threads, {args.rounds} rounds x {args.iters} runs,"
          " median ms per item")
    print(f"{'case':<18} {'tract':>9} {'onnxrt':>9} {'ratio':>7} {'cosine':>8}")
    ratios = {}
    for case in cases:
        t = statistics.median(samples[("tract", case)])
        o = statistics.median(samples[("onnxruntime", case)])
        name = f"{case[0]}_{label[case[1]]}_b{case[2]}"
        ratios[name] = t / o
        print(f"{name:<18} {t:9.2f} {o:9.2f} {t / o:7.2f} {cosines[case]:8.5f}")
    for v in variants:
        if v != "fp32":
            for t in ("vision", "text"):
                for b in batches:
                    q = statistics.median(samples[("tract", (t, v, b))])
                    f = statistics.median(samples[("tract", (t, "fp32", b))])
                    print(f"tract {t} int8 vs fp32 b{b}: {f / q:.2f}x faster")
    print(f"tract peak RSS {rss:.0f} MB (all variants loaded, plans for the batches above)")
    for (engine, v), ms in sorted(loads.items()):
        print(f"load {engine} {label[v]}: {ms:.0f} ms")
    key = "vision_int8_b1" if "vision_int8_b1" in ratios else next(iter(ratios))
    print(f"ratio {key} tract/onnxruntime = {ratios[key]:.2f}")


if __name__ == "__main__":
    main()
