"""OpenVINO convolution time per VGG-19 stage, the four methods of one seed interleaved in 40 blocks of 10
inferences at batch 32 (2 threads, PERF_COUNT), so that the VM's drifting speed cancels in the ratios.
The record of 2026-12-07 03:47:57 UTC (quick_2026-12-07_avx2); usage:
    python openvino_stage_profile.py runs/peers-quick-avx2/vgg19x0.25/seed1 DIR
where DIR holds each method's `compress export SEED/METHOD/finetuned --onnx DIR/METHOD.onnx`."""
import collections
import json
import sys
import time

import numpy as np
import openvino as ov

core = ov.Core()
hw = [1024]*2 + [256]*2 + [64]*4 + [16]*4 + [4]*4
stages = [(0, 2, "32px"), (2, 4, "16px"), (4, 8, "8px"), (8, 12, "4px"), (12, 16, "2px")]
M = ["toolkit", "tp-bnscale", "tp-groupnorm", "tp-l1"]
reqs, macs = {}, {}
for m in M:
    meta = json.load(open(f"{sys.argv[1]}/{m}/finetuned/model.json"))
    convs = [v for v in meta["widths"].values() if v.get("type") == "Conv2d"]
    macs[m] = [c["in_channels"] * c["out_channels"] * 9 * h * 32 for c, h in zip(convs, hw)]
    model = core.read_model(f"{sys.argv[2]}/{m}.onnx"); model.reshape([32, 3, 32, 32])
    c = core.compile_model(model, "CPU", {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2})
    reqs[m] = (c, c.create_infer_request())
x = np.random.rand(32, 3, 32, 32).astype(np.float32)
for m in M:
    for _ in range(20): reqs[m][1].infer({0: x})
blocks = {m: collections.defaultdict(list) for m in M}  # per block: stage -> median us of that block
total = {m: [] for m in M}
rng = np.random.default_rng(0)
for b in range(40):
    for m in rng.permutation(M):
        r = reqs[m][1]
        per = collections.defaultdict(list); tot = []
        for _ in range(10):
            t0 = time.perf_counter(); r.infer({0: x}); tot.append(time.perf_counter() - t0)
            order, us = [], []
            for p in r.get_profiling_info():
                if p.status == p.Status.EXECUTED and p.node_type == "Convolution":
                    us.append(p.real_time.total_seconds() * 1e6)
            for i, (a, bb, name) in enumerate(stages):
                per[name].append(sum(us[a:bb]))
            per["other"].append(sum(p.real_time.total_seconds() * 1e6 for p in r.get_profiling_info() if p.status == p.Status.EXECUTED and p.node_type != "Convolution"))
        for k, v in per.items(): blocks[m][k].append(np.median(v))
        total[m].append(np.median(tot) * 1e3)
print("stage ratios peer/toolkit per block, median over 40 blocks [p05-p95 of blocks]; toolkit us per stage")
for k in [s[2] for s in stages] + ["other"]:
    t = np.array(blocks["toolkit"][k])
    row = [f"{k:5s} toolkit {np.median(t):6.0f}us"]
    for m in M[1:]:
        r = np.array(blocks[m][k]) / t
        row.append(f"{m} x{np.median(r):.3f} [{np.percentile(r, 5):.3f}-{np.percentile(r, 95):.3f}]")
    print(" | ".join(row))
t = np.array(total["toolkit"])
print("end to end toolkit %.3f ms |" % np.median(t), " | ".join(f"{m} x{np.median(np.array(total[m]) / t):.3f} [{np.percentile(np.array(total[m]) / t, 5):.3f}-{np.percentile(np.array(total[m]) / t, 95):.3f}]" for m in M[1:]))
for m in M:
    mm = macs[m]
    print(m, " ".join(f"{name} {sum(mm[a:b])/32/1e6:.2f}M {sum(mm[a:b])/np.median(blocks[m][name])/1e3:.0f}GMAC/s" for a, b, name in stages))
