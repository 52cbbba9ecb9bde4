"""Load on `metaqap serve` over loopback: N clients x M requests of real photos, each a one-image POST /score, in
three ways, side by side in one run (two `metaqap serve` processes with the same model, device and dtype; the
modes take turns, round after round, so that the machine's load weighs on each alike):

- one at a time:        one client, each request sent when the previous one is answered (--max-batch 1);
- concurrent, batch 1:  N clients at once, the server scoring one image per forward pass (--max-batch 1);
- dynamic batching:     N clients at once, the server gathering up to --max-batch images for --max-wait-ms.

Prints and writes (JSON, and the printed table beside it as .txt) throughput, p50/p95/p99 latency, the mean batch
size (from /metrics) and the largest score difference from the one-at-a-time answers for the same photo.

    python benchmarks/serve_load.py --photos ../shared/data/biq2021-sample/Images --clients 8 --requests 12 \\
        --output benchmarks/results/serve_load-2core-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch

SOURCE = Path(__file__).resolve().parents[1] / "src"
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def start_server(options: list[str]) -> tuple[subprocess.Popen, str]:
    environment = {**os.environ, "PYTHONPATH": f"{SOURCE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen([sys.executable, "-c", "import sys; from metaqap_cli import main; sys.exit(main())",
                                "serve", "--port", "0", *options], env=environment, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    found = re.search(r" on (http://\S+) ", line)
    if not found:
        process.kill()
        raise SystemExit(f"metaqap serve did not start: {line}{process.stderr.read()}")
    return process, found.group(1)


def batch_counts(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics").text
    values = {name: float(value) for name, value in re.findall(r"^(metaqap_batch_size_(?:sum|count)) (\S+)$", text,
                                                                re.MULTILINE)}
    return values["metaqap_batch_size_sum"], values["metaqap_batch_size_count"]


async def run_clients(url: str, bodies: list[bytes], clients: int, requests: int) -> tuple[list[float], list, float]:
    """(latencies in s, (photo index, score) per answer, wall seconds); client c sends photos c, c+N, c+2N, ..."""
    latencies, scores = [], []

    async def client(index: int, session: httpx.AsyncClient) -> None:
        for number in range(requests):
            photo = (index + number * clients) % len(bodies)
            started = time.perf_counter()
            response = await session.post("/score", content=bodies[photo])
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise SystemExit(f"request answered {response.status_code}: {response.text}")
            scores.append((photo, response.json()["results"][0]["score"]))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as session:
        await session.post("/score", content=bodies[0])  # warm-up: first-call allocations are not the service's
        started = time.perf_counter()
        await asyncio.gather(*(client(index, session) for index in range(clients)))
        return latencies, scores, time.perf_counter() - started


def summarize(name: str, clients: int, runs: list[tuple[list[float], list, float]], batches: tuple[float, float]):
    latencies = [value for run in runs for value in run[0]]
    seconds = sum(run[2] for run in runs)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"mode": name, "clients": clients, "requests": len(latencies), "seconds": round(seconds, 3),
            "requests_per_s": round(len(latencies) / seconds, 3), "p50_ms": round(p50 * 1000, 1),
            "p95_ms": round(p95 * 1000, 1), "p99_ms": round(p99 * 1000, 1),
            "mean_batch_size": round(batches[0] / batches[1], 2), "scores": [pair for run in runs for pair in run[1]]}


def measure(common: list[str], args: argparse.Namespace, bodies: list[bytes]) -> list[dict]:
    """The three modes in `args.rounds` interleaved rounds, so that a change in the machine's load over the run
    falls on all three alike."""
    single, single_url = start_server([*common, "--max-batch", "1"])
    batching, batching_url = start_server([*common, "--max-batch", str(args.max_batch), "--max-wait-ms",
                                           str(args.max_wait_ms)])
    modes = [("one at a time", single_url, 1, args.clients * args.requests),
             ("concurrent, batch 1", single_url, args.clients, args.requests),
             ("dynamic batching", batching_url, args.clients, args.requests)]
    runs = {name: [] for name, *_ in modes}
    batches = {name: [0.0, 0.0] for name, *_ in modes}
    try:
        for _ in range(args.rounds):
            for name, url, clients, requests in modes:
                before = batch_counts(url)
                runs[name].append(asyncio.run(run_clients(url, bodies, clients, requests)))
                after = batch_counts(url)
                batches[name] = [total + b - a for total, a, b in zip(batches[name], before, after)]
    finally:
        for process in (single, batching):
            process.terminate()
            process.wait(timeout=120)
            process.stderr.close()
    return [summarize(name, clients, runs[name], batches[name]) for name, _, clients, _ in modes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default=os.path.join(os.environ.get("METAQAP_BIQ2021_SAMPLE", ""), "Images"),
                        help="a folder of photos (default: $METAQAP_BIQ2021_SAMPLE/Images)")
    parser.add_argument("--count", type=int, default=32, help="distinct photos sent")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=12, help="requests per client in each round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three modes, interleaved")
    parser.add_argument("--model", help="checkpoint (default: the bundled model)")
    parser.add_argument("--device", help="--device of metaqap serve (default: its default)")
    parser.add_argument("--dtype", help="--dtype of metaqap serve (default: its default)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--output", help="JSON file to write (a .txt with the table beside it)")
    args = parser.parse_args()

    paths = sorted(path for path in Path(args.photos).iterdir() if path.suffix.lower() in SUFFIXES)[:args.count]
    if not paths:
        raise SystemExit(f"no photos in {args.photos!r}: give --photos")
    bodies = [path.read_bytes() for path in paths]
    common = [*(["--model", args.model] if args.model else []), *(["--device", args.device] if args.device else []),
              *(["--dtype", args.dtype] if args.dtype else [])]
    rows = measure(common, args, bodies)
    reference = dict(rows[0]["scores"])
    for row in rows:
        row["max_score_difference"] = max(abs(score - reference[photo]) for photo, score in row.pop("scores"))
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch CPU capability "
               f"{torch.backends.cpu.get_cpu_capability()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    load = os.getloadavg()[0]
    lines = [f"metaqap serve under load: {len(bodies)} photos from {args.photos}, {args.rounds} rounds of {args.clients} "
             f"clients x {args.requests} requests; server options {' '.join(common) or '(defaults)'}, dynamic batching "
             f"--max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g}; {machine}; load average at "
             f"the end {load:.1f}",
             f"{'mode':<22}{'requests/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'mean batch':>12}{'max diff':>10}"]
    lines += [f"{row['mode']:<22}{row['requests_per_s']:>11.2f}{row['p50_ms']:>9.0f}{row['p95_ms']:>9.0f}"
              f"{row['p99_ms']:>9.0f}{row['mean_batch_size']:>12.2f}{row['max_score_difference']:>10.1e}"
              for row in rows]
    speedup = rows[2]["requests_per_s"] / rows[0]["requests_per_s"]
    lines.append(f"dynamic batching: {speedup:.2f}x the throughput of one request at a time")
    print("\n".join(lines))
    if args.output:
        output = Path(args.output)
        output.write_text(json.dumps({"command": " ".join(sys.argv), "machine": machine, "photos": args.photos,
                                      "load_average_at_end": load, "rows": rows,
                                      "speedup": round(speedup, 3)}, indent=2) + "\n")
        output.with_suffix(".txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
