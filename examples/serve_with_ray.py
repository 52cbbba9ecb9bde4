"""Run `metaqap serve`'s app under Ray Serve (`pip install 'ray[serve]'`): replicas on as many machines as the
cluster has, each one `metaqap_hf.serving.ScoringService` (its dynamic batching, limits and metrics) behind Ray's
HTTP proxy, which spreads the requests over them. The same FastAPI app as `metaqap serve`, built in each replica
(`create_app` takes a function that builds the service), so the answers are the same.

    python examples/serve_with_ray.py --replicas 2                           # a local Ray instance, port 8000
    python examples/serve_with_ray.py --address auto --replicas 8 --gpus-per-replica 1 --device cuda
    curl --data-binary @photo.jpg http://127.0.0.1:8000/score

`--check PHOTO ...` starts the deployment, posts each photo once, prints the answers as JSON lines and shuts down
(what tests/test_serving_ray.py runs).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request


def build_application(args: argparse.Namespace):
    from ray import serve

    from metaqap_hf.serving import ScoringService, ServiceLimits, create_app

    limits = ServiceLimits(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue)
    model, device, dtype = args.model, args.device, args.dtype
    app = create_app(lambda: ScoringService(model, device=device, dtype=dtype, limits=limits))

    @serve.deployment(num_replicas=args.replicas, max_ongoing_requests=args.max_queue,
                      ray_actor_options={"num_cpus": args.cpus_per_replica, "num_gpus": args.gpus_per_replica})
    @serve.ingress(app)
    class MetaQAPService:
        """One ScoringService per replica; the routes are the app's."""

    return MetaQAPService.bind()


def post(url: str, data: bytes) -> dict:
    request = urllib.request.Request(url, data=data, method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder or hub id (default: the bundled model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--cpus-per-replica", type=float, default=1.0)
    parser.add_argument("--gpus-per-replica", type=float, default=0)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--host", default="127.0.0.1", help="where Ray's HTTP proxy listens")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--address", help="a Ray cluster to join (default: start a local instance)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local instance")
    parser.add_argument("--check", nargs="+", metavar="PHOTO", help="post these photos once each, print, shut down")
    args = parser.parse_args()

    import ray
    from ray import serve

    ray.init(address=args.address, num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_application(args), name="metaqap", route_prefix="/")
    url = f"http://{args.host}:{args.port}"
    try:
        if args.check:
            for photo in args.check:
                with open(photo, "rb") as file:
                    print(json.dumps({"photo": photo, **post(f"{url}/score", file.read())}), flush=True)
            return
        print(f"serving on {url} with {args.replicas} replicas (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
