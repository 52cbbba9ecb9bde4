"""`metaqap serve`: the command line of `metaqap_hf.serving.serve`. Every default shown is read from the library."""

from __future__ import annotations

import argparse
import inspect
import sys

from metaqap_hf.devices import DTYPE_CHOICES
from metaqap_hf.serving import ScoringService, ServiceLimits, serve

from . import command_parser

SERVICE = {name: parameter.default for name, parameter in inspect.signature(ScoringService).parameters.items()}
SERVE = {name: parameter.default for name, parameter in inspect.signature(serve).parameters.items()}
LIMITS = ServiceLimits()


def build_parser(command: str) -> argparse.ArgumentParser:
    parser = command_parser(
        command,
        "Serve quality scores over HTTP: POST an image (or multipart files) to /score and get the results "
        "`metaqap score` gives. Concurrent requests are scored together in batches. Also: GET /healthz, /readyz, "
        "/metrics (Prometheus), / (usage). SIGTERM or Ctrl-C finishes the accepted requests, then exits.\n\n"
        "  curl --data-binary @photo.jpg http://127.0.0.1:8000/score\n"
        "  curl -F file=@a.jpg -F file=@b.png http://127.0.0.1:8000/score\n\n"
        "Python: metaqap_hf.serving.serve(ScoringService(MODEL, limits=ServiceLimits(...)), port=PORT).",
    )
    parser.add_argument("--host", default=SERVE["host"],
                        help="address to listen on (0.0.0.0: every interface; put a proxy with TLS in front)")
    parser.add_argument("--port", "-p", type=int, default=SERVE["port"], help="port to listen on (0: a free one)")
    parser.add_argument("--model", "-m", metavar="M",
                        help="checkpoint folder or hub id (default: the bundled metaqap-lite-biq2021)")
    parser.add_argument("--device", "-d", default=SERVICE["device"], metavar="D",
                        help="auto (a GPU when there is one), cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default=SERVICE["dtype"],
                        help="compute precision; auto: bfloat16 on GPUs and CPUs with native bfloat16, else float32")
    parser.add_argument("--max-batch", type=int, default=LIMITS.max_batch, metavar="N",
                        help="images scored together in one forward pass at most")
    parser.add_argument("--max-wait-ms", type=float, default=LIMITS.max_wait_ms, metavar="MS",
                        help="how long the first image of a batch waits for others")
    parser.add_argument("--max-queue", type=int, default=LIMITS.max_queue, metavar="N",
                        help="requests in flight at most; more are answered 503 with Retry-After")
    parser.add_argument("--max-body-bytes", type=int, default=LIMITS.max_body_bytes, metavar="B",
                        help="request body size at most (413 beyond)")
    parser.add_argument("--max-files", type=int, default=LIMITS.max_files, metavar="N",
                        help="files in one multipart request at most")
    parser.add_argument("--max-pixels", type=int, default=LIMITS.max_pixels, metavar="N",
                        help="pixels in one image at most, read from its header before decoding")
    parser.add_argument("--timeout", type=float, default=LIMITS.timeout, metavar="S",
                        help="seconds from a request's arrival to its answer (408 for a body not sent in time, "
                             "503 for a score not ready in time)")
    parser.add_argument("--decode-threads", type=int, default=LIMITS.decode_threads, metavar="N",
                        help="images decoded at once")
    parser.add_argument("--shutdown-timeout", type=float, default=SERVE["shutdown_timeout"], metavar="S",
                        help="on SIGTERM, how long accepted requests may take to finish")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    limits = ServiceLimits(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                           max_body_bytes=args.max_body_bytes, max_files=args.max_files, max_pixels=args.max_pixels,
                           timeout=args.timeout, decode_threads=args.decode_threads)
    service = ScoringService(args.model, device=args.device, dtype=args.dtype, limits=limits)
    about = service.description

    def ready(url: str) -> None:
        print(f"serving {about['model']} ({about['device']}, {about['dtype']}) on {url} (Ctrl-C or SIGTERM to stop)",
              file=sys.stderr, flush=True)

    # Returns on a signal once the accepted requests are answered; uvicorn then re-raises the signal, so the
    # command ends as every command does on SIGTERM or Ctrl-C ("interrupted", status 130).
    serve(service, host=args.host, port=args.port, shutdown_timeout=args.shutdown_timeout, on_ready=ready)
    return 0
