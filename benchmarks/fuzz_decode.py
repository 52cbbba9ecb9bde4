"""Coverage-guided fuzzing (atheris, libFuzzer) of the decode entry point in every input form the pipeline takes:
encoded bytes (`load_image`), and through `to_pil_image` file paths, http URLs (served by a loopback server in this
process), base64 strings, data URIs and free text. Every input must end in an 8-bit RGB image that the image
processor turns into the model's input, or in `ImageLoadError`; anything else (another exception, a hang past
--timeout, memory past --rss-limit-mb, a crash) is a failure. No input can reach the network: an audit hook refuses
every connection and name lookup that is not for 127.0.0.1 (and counts it as a failure).

Seeds: tests/fixtures/fuzz_seeds (small valid JPEG, PNG, TIFF, WebP, GIF and BMP files), each given in every form.
PIL's Python parsers and metaqap_hf are instrumented for coverage; PIL's C decoders run uninstrumented.

    pip install 'metaqap-hf[fuzz]'
    python benchmarks/fuzz_decode.py --iterations 10000 --output benchmarks/results/fuzz_decode-10k.json
    python benchmarks/fuzz_decode.py --seconds 60          # a time-boxed run (what the test suite does, shorter)

Exit status 0 when no failure was found; failing inputs are written to --artifacts (and named in the summary).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "tests" / "fixtures" / "fuzz_seeds"
FORMS = ("bytes", "file", "base64", "data_uri", "url", "text")
REDUCE_FOR = (64, 64)  # the processor's size in the harness: large images take the reduced-decode path
SUMMARY_EVERY = 25


# ------------------------------------------------------------------------------------------------ the fuzzed child
def _child(args: argparse.Namespace) -> None:
    import atheris

    with atheris.instrument_imports(include=["PIL", "metaqap_hf"]):
        from PIL import Image

        Image.init()  # imports every format plugin now, so that they are instrumented
        from metaqap_hf import ImageLoadError, MetaQAPImageProcessor, load_image
        from metaqap_hf.image_utils import to_pil_image

    import base64
    import http.server
    import threading
    import traceback
    import urllib.parse

    violations: list[str] = []

    def loopback_only(event: str, hook_args: tuple) -> None:
        if event == "socket.connect":
            address = hook_args[1]
            host = address[0] if isinstance(address, tuple) else address
        elif event == "socket.getaddrinfo":
            host = hook_args[0]
        else:
            return
        if isinstance(host, bytes):
            host = host.decode("latin-1")
        if host not in ("127.0.0.1", "localhost", "::1"):
            violations.append(f"{event} to {host!r}")
            raise ConnectionRefusedError(f"fuzz harness: no network ({host!r})")

    sys.addaudithook(loopback_only)

    served = {"body": b"", "status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status = served["status"]
            body = served["body"] if status == 200 else b"not found"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    scratch = Path(args.summary).parent  # the driver's temporary folder, removed when the run ends
    workdir = scratch / "work"
    workdir.mkdir()
    os.chdir(workdir)  # free-text inputs that name relative paths look here
    processor = MetaQAPImageProcessor(size={"height": REDUCE_FOR[0], "width": REDUCE_FOR[1]})
    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)

    outcomes: Counter = Counter()
    reasons: Counter = Counter()
    failures: list[dict] = []
    state = {"iterations": 0, "started": time.monotonic()}

    def write_summary() -> None:
        summary = {"iterations": state["iterations"], "seconds": round(time.monotonic() - state["started"], 1),
                   "outcomes": dict(sorted(outcomes.items())), "reasons": dict(reasons.most_common(25)),
                   "network_violations": violations[:20], "failures": failures[:50]}
        Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n")

    def decode(form: str, payload: bytes):
        if form == "bytes":
            return load_image(payload, reduce_for=REDUCE_FOR)
        if form == "file":
            path = workdir / "input.img"
            path.write_bytes(payload)
            return to_pil_image(str(path), reduce_for=REDUCE_FOR)
        if form == "base64":
            return to_pil_image(base64.b64encode(payload).decode("ascii"), reduce_for=REDUCE_FOR)
        if form == "data_uri":
            if payload[:1] == b"!":  # a fuzzed header and payload as text
                return to_pil_image("data:" + payload[1:].decode("latin-1"), reduce_for=REDUCE_FOR)
            return to_pil_image("data:image/png;base64," + base64.b64encode(payload).decode("ascii"),
                                reduce_for=REDUCE_FOR)
        if form == "url":  # "!" + status selector + 16 bytes of path + body, or the body served at /image
            if payload[:1] == b"!" and len(payload) > 1:
                served["status"] = (200, 404, 500, 301)[payload[1] % 4]
                path, served["body"] = "/" + urllib.parse.quote(payload[2:18]), payload[18:]
            else:
                served["status"], path, served["body"] = 200, "/image", payload
            return to_pil_image(base_url + path, timeout=args.timeout / 4, reduce_for=REDUCE_FOR)
        text = payload.decode("utf-8", errors="replace")  # free text: a path, a URL, base64, a data URI, noise
        for scheme in ("http://", "https://"):
            if text.startswith(scheme):  # whatever host was fuzzed, the request goes to the loopback server
                text = f"{scheme}127.0.0.1:{server.server_address[1]}/{text[len(scheme):]}"
        return to_pil_image(text, timeout=args.timeout / 4, reduce_for=REDUCE_FOR)

    def one_input(data: bytes) -> None:
        form = FORMS[data[0] % len(FORMS)] if data else "bytes"
        payload = data[1:]
        try:
            image = decode(form, payload)
            if not (isinstance(image, Image.Image) and image.mode == "RGB" and image.width and image.height):
                raise AssertionError(f"decoded to {image!r}, not a non-empty RGB image")
            pixels = processor(images=image, return_tensors="pt")["pixel_values"]
            if tuple(pixels.shape) != (1, 3, *REDUCE_FOR):
                raise AssertionError(f"the processor gave a tensor of shape {tuple(pixels.shape)}")
            outcomes[f"{form}: decoded"] += 1
        except ImageLoadError as error:
            outcomes[f"{form}: ImageLoadError"] += 1
            reasons[error.reason.split("(")[0].strip()[:80]] += 1
        except Exception as error:  # the failure this harness looks for
            name = f"failure-{len(failures):03d}-{form}.bin"
            (artifacts / name).write_bytes(data)
            failures.append({"form": form, "input": str(artifacts / name), "error": f"{type(error).__name__}: {error}",
                             "traceback": traceback.format_exc(limit=6).splitlines()[-6:]})
            outcomes[f"{form}: FAILURE"] += 1
            write_summary()
        state["iterations"] += 1
        if state["iterations"] % SUMMARY_EVERY == 0 or violations:
            write_summary()

    corpus = scratch / "corpus"
    corpus.mkdir()
    for seed in sorted(SEEDS.iterdir()):
        for index, _ in enumerate(FORMS):
            (corpus / f"{index}-{seed.name}").write_bytes(bytes([index]) + seed.read_bytes())
    libfuzzer = [sys.argv[0], f"-timeout={int(args.timeout)}", f"-rss_limit_mb={args.rss_limit_mb}",
                 f"-max_len={args.max_len}", f"-artifact_prefix={artifacts}/", f"-seed={args.seed}",
                 "-print_final_stats=1", str(corpus)]
    if args.iterations:
        libfuzzer.append(f"-runs={args.iterations}")
    if args.seconds:
        libfuzzer.append(f"-max_total_time={int(args.seconds)}")
    atheris.Setup(libfuzzer, one_input)
    atheris.Fuzz()


# --------------------------------------------------------------------------------------------------- the driver
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=0, help="inputs to try (0: until --seconds)")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: after --iterations)")
    parser.add_argument("--timeout", type=float, default=20, help="seconds one input may take")
    parser.add_argument("--rss-limit-mb", type=int, default=3072, help="memory the fuzzing process may use")
    parser.add_argument("--max-len", type=int, default=65536, help="largest input, in bytes")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed")
    parser.add_argument("--artifacts", default=None, help="folder for failing inputs (default: a temporary one)")
    parser.add_argument("--output", help="JSON summary to write (and the command that made it)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--summary", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (args.iterations or args.seconds):
        parser.error("give --iterations N or --seconds S")
    if args.child:
        _child(args)
        return 0
    args.artifacts = args.artifacts or tempfile.mkdtemp(prefix="fuzz-artifacts-")
    with tempfile.TemporaryDirectory(prefix="fuzz-decode-") as scratch:
        summary_path = Path(scratch) / "summary.json"
        command = [sys.executable, __file__, "--child", "--summary", str(summary_path), "--artifacts", args.artifacts,
                   "--iterations", str(args.iterations), "--seconds", str(args.seconds), "--timeout",
                   str(args.timeout), "--rss-limit-mb", str(args.rss_limit_mb), "--max-len", str(args.max_len),
                   "--seed", str(args.seed)]
        environment = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                       "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        started = time.monotonic()
        limit = (args.seconds or 0) + 600 + (args.iterations * args.timeout if not args.seconds else 0)
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=limit)
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    stats = [line for line in result.stderr.splitlines() if line.startswith(("stat::", "Done ", "==", "#"))]
    runs = next((int(line.split()[1]) for line in stats if line.startswith("Done ")), None)
    crashed = result.returncode != 0 and not summary.get("failures")
    report = {"command": " ".join(["python", "benchmarks/fuzz_decode.py", *sys.argv[1:]]),
              "libfuzzer_runs": runs, "exit_status": result.returncode, "wall_seconds": round(time.monotonic() - started, 1),
              **summary, "libfuzzer_stats": [line for line in stats if line.startswith("stat::")],
              "crash": result.stderr[-4000:] if crashed else None, "artifacts": args.artifacts}
    ok = result.returncode == 0 and not summary.get("failures") and not summary.get("network_violations")
    report["result"] = "no failures" if ok else "FAILURES FOUND"
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
