"""Runs inside the emulated Cortex-A76 (qemu-aarch64 with the countmark plugin, the arm64 root's own
python3.11): loads each job's model, runs one warm-up inference, then `runs` counted ones, making the
marker syscall around each so the plugin prints the instruction count there. Standalone: numpy,
onnxruntime and ncnn only (no graphopt), so it runs with any aarch64 Python that has them.

    python3.11 guest.py JOBS.json

JOBS.json: a list of {"name", "runtime": "ort"|"ncnn", "model", "weights" (NCNN .bin, or null: zero
weights as benchncnn's DataReaderFromEmpty), "shape" (NCNN: [c, h, w]), "precision": "fp32"|"fp16"|
"int8", "runs"}. stdout: one `job I NAME` line before each job's marks; marks are 1000*I + k, k = 0
before the warm-up, k = 1 after it, k = 1 + r after counted run r. "warmup": false counts the
first inference alone (k = 2 right after k = 1; on the models counted both ways the first and the
second inference differ by under 0.05 % on the benchncnn models), for models too long to emulate twice.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

MARK_NR = 4000  # countmark.c: an unassigned aarch64 syscall number (ENOSYS), watched by the plugin
_KEEP: list[object] = []
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def mark(tag: int) -> None:
    _libc.syscall(ctypes.c_long(MARK_NR), ctypes.c_long(tag))


def ort_runner(job: dict):
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(job["model"], opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    return (lambda: sess.run(None, {inp.name: x})), (lambda: None)


def ncnn_runner(job: dict):
    import ncnn

    net = ncnn.Net()
    opt = net.opt
    # benchncnn's options (benchncnn.cpp main): lightmode, 1 thread, winograd/sgemm, fp16 and int8
    # storage/arithmetic where the CPU has them, packing; its pool allocators
    opt.lightmode = True
    opt.num_threads = 1
    opt.use_winograd_convolution = True
    opt.use_sgemm_convolution = True
    opt.use_int8_inference = True
    fp16 = job.get("precision", "fp16") != "fp32"
    opt.use_fp16_packed = fp16
    opt.use_fp16_storage = fp16
    opt.use_fp16_arithmetic = fp16
    opt.use_int8_storage = True
    opt.use_int8_arithmetic = True
    opt.use_packing_layout = True
    blob_pool, work_pool = ncnn.UnlockedPoolAllocator(), ncnn.PoolAllocator()
    opt.blob_allocator = blob_pool
    opt.workspace_allocator = work_pool
    if net.load_param(job["model"]) != 0:
        raise SystemExit(f"error: {job['model']}: ncnn cannot load the param file")
    if job.get("weights"):
        if net.load_model(job["weights"]) != 0:
            raise SystemExit(f"error: {job['weights']}: ncnn cannot load the weights")
    else:
        net.load_model(ncnn.DataReaderFromEmpty())
    c, h, w = job["shape"]
    x = ncnn.Mat(w, h, c)
    x.fill(0.01)  # benchncnn's input
    ins, outs = net.input_names(), net.output_names()

    def run() -> None:
        ex = net.create_extractor()
        ex.input(ins[0], x)
        for name in outs:
            ex.extract(name)
        del ex

    def close() -> None:  # the net before its pool allocators (ncnn aborts otherwise)
        net.clear()
        blob_pool.clear()
        work_pool.clear()

    _KEEP.append((net, blob_pool, work_pool, x))  # never destroyed: the process ends with os._exit
    return run, close


def main() -> None:
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for i, job in enumerate(jobs):
        print(f"job {i} {job['name']}", flush=True)
        run, close = ort_runner(job) if job["runtime"] == "ort" else ncnn_runner(job)
        mark(1000 * i)
        run()
        mark(1000 * i + 1)
        if not job.get("warmup", True):  # the first inference is the counted one (a long model)
            mark(1000 * i + 2)
            print(f"done {i}", flush=True)
            close()
            continue
        for r in range(int(job.get("runs", 1))):
            run()
            mark(1000 * i + 2 + r)
        print(f"done {i}", flush=True)
        close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no destructors at exit: ncnn aborts when a pool allocator dies before its net


if __name__ == "__main__":
    main()
