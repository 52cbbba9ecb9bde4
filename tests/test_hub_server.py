"""The loopback hub (tests/hub_server.py) against the unmodified client libraries.

Decision: the client side runs in a fresh subprocess (`run_hub_client`) with `HF_ENDPOINT` pointing at the server,
`HF_TOKEN=dummy`, `HF_HUB_DISABLE_XET=1`, a private `HF_HOME` and no offline switch. huggingface_hub and datasets
read those at import time, so only a fresh interpreter tests them as users run them. The subprocess refuses any
connection or name lookup that is not loopback and the helper fails the test if one was attempted.
A few protocol rules the clients rely on (LFS integrity, commit preconditions, private repos, byte ranges) are
checked directly over HTTP with urllib.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hub_server import client_env, loopback_hub, run_hub_client  # noqa: F401  (loopback_hub is a fixture)

# huggingface_hub's LFS PUT passes a file object as `data=`, which its HTTP client deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

LARGE_FILE_SIZE = 11 * 1024 * 1024  # above the 10 MiB threshold: LFS whatever the file name


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_huggingface_hub_upload_and_download_round_trip(loopback_hub, tmp_path):
    folder = tmp_path / "upload"
    (folder / "weights").mkdir(parents=True)
    (folder / "notes.txt").write_text("a small text file: committed inline\n")
    (folder / "weights" / "model.safetensors").write_bytes(os.urandom(4096))  # LFS by .gitattributes pattern
    (folder / "large.dat").write_bytes(os.urandom(LARGE_FILE_SIZE))  # LFS by size
    script = f"""
from huggingface_hub import HfApi, RepoFile, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError
api = HfApi()
repo_url = api.create_repo("loopback-user/round-trip")
commit = api.upload_folder(folder_path={str(folder)!r}, repo_id="loopback-user/round-trip")
info = api.model_info("loopback-user/round-trip", files_metadata=True)
downloads = {{name: hf_hub_download("loopback-user/round-trip", name)
             for name in ["notes.txt", "weights/model.safetensors", "large.dat"]}}
try:
    hf_hub_download("loopback-user/round-trip", "missing.txt")
    missing = "downloaded"
except EntryNotFoundError as error:
    missing = type(error).__name__
paths = api.get_paths_info("loopback-user/round-trip", ["notes.txt", "weights", "absent.txt"])
tree = api.list_repo_tree("loopback-user/round-trip", recursive=True, expand=True)
emit({{
    "repo_url": str(repo_url),
    "paths_info": {{entry.path: type(entry).__name__ for entry in paths}},
    "last_commits": {{entry.path: entry.last_commit.oid for entry in tree if isinstance(entry, RepoFile)}},
    "commit": commit.oid,
    "files": api.list_repo_files("loopback-user/round-trip"),
    "info_sha": info.sha,
    "lfs_siblings": sorted(s.rfilename for s in info.siblings if s.lfs is not None),
    "downloads": downloads,
    "snapshot": snapshot_download("loopback-user/round-trip"),
    "missing": missing,
}})
"""
    result = run_hub_client(script, client_env(loopback_hub.endpoint, tmp_path / "hf_home"), cwd=tmp_path)

    assert result["repo_url"] == f"{loopback_hub.endpoint}/loopback-user/round-trip"
    assert result["files"] == [".gitattributes", "large.dat", "notes.txt", "weights/model.safetensors"]
    assert result["info_sha"] == result["commit"] == Path(result["snapshot"]).name
    assert result["lfs_siblings"] == ["large.dat", "weights/model.safetensors"]
    assert result["missing"] == "RemoteEntryNotFoundError"
    assert result["paths_info"] == {"notes.txt": "RepoFile", "weights": "RepoFolder"}
    last_commits = result["last_commits"]
    assert last_commits.pop(".gitattributes") != result["commit"]  # written by the repo's initial commit
    assert set(last_commits.values()) == {result["commit"]} and len(last_commits) == 3  # the 404 the Hub gives for a missing file
    for name, path in result["downloads"].items():
        assert _sha256(Path(path)) == _sha256(folder / name), name
        assert _sha256(Path(result["snapshot"]) / name) == _sha256(folder / name), name

    stored = loopback_hub.file_table("model", "loopback-user/round-trip")
    assert {name: entry.lfs for name, entry in stored.items() if name != ".gitattributes"} == {
        "notes.txt": False, "weights/model.safetensors": True, "large.dat": True,
    }
    lfs_puts = [path for method, path in loopback_hub.requests if method == "PUT"]
    assert len(lfs_puts) == 2  # the two LFS files went through batch + PUT, the text file did not
    assert any(path.endswith(".git/info/lfs/objects/batch") for _, path in loopback_hub.requests)


@pytest.mark.slow
def test_datasets_push_to_hub_and_load_dataset_round_trip(loopback_hub, tmp_path):
    script = """
import io
import numpy as np
from PIL import Image
import datasets

def png(seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": f"image_{seed}.png"}

features = datasets.Features({"image": datasets.Image(), "name": datasets.Value("string"),
                              "mos": datasets.Value("float32")})
rows = {"image": [png(seed) for seed in range(5)], "name": [f"img{i}" for i in range(5)],
        "mos": [0.1, 0.35, 0.5, 0.72, 0.9]}
original = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features).select(range(3)),
                                 "test": datasets.Dataset.from_dict(rows, features=features).select(range(3, 5))})
original.push_to_hub("loopback-user/tiny-iqa")
loaded = datasets.load_dataset("loopback-user/tiny-iqa")

def plain(split):
    return [{"name": r["name"], "mos": r["mos"], "pixels": np.asarray(r["image"]).tolist()} for r in split]

emit({"original": {k: plain(v) for k, v in original.items()}, "loaded": {k: plain(v) for k, v in loaded.items()},
      "features": str(loaded["train"].features)})
"""
    result = run_hub_client(script, client_env(loopback_hub.endpoint, tmp_path / "hf_home"), cwd=tmp_path)

    assert sorted(result["loaded"]) == ["test", "train"]
    assert result["loaded"] == result["original"]
    assert "Image(" in result["features"]
    stored = loopback_hub.file_table("dataset", "loopback-user/tiny-iqa")
    shards = [name for name in stored if name.endswith(".parquet")]
    assert len(shards) == 2 and all(stored[name].lfs for name in shards)
    assert not stored["README.md"].lfs
    assert ("GET", "/info") in loopback_hub.requests  # datasets' viewer probe was answered on loopback


def test_client_guard_refuses_connections_that_leave_loopback(loopback_hub, tmp_path):
    script = """
import socket
for attempt in (lambda: socket.create_connection(("example.org", 443), timeout=1),  # name lookup
                lambda: socket.socket().connect(("192.0.2.1", 443))):  # TEST-NET-1 address, no lookup
    try:
        attempt()
    except OSError:
        pass
emit("done")
"""
    with pytest.raises(AssertionError, match=r"tried to leave 127\.0\.0\.1.*example\.org.*192\.0\.2\.1"):
        run_hub_client(script, client_env(loopback_hub.endpoint, tmp_path / "hf_home"), cwd=tmp_path)


def test_client_import_blocker(loopback_hub, tmp_path):
    script = """
import importlib.util
try:
    emit("importable" if importlib.util.find_spec("metaqap_hf") else "absent")
except ModuleNotFoundError:
    emit("blocked")
"""
    env = client_env(loopback_hub.endpoint, tmp_path / "hf_home")
    assert run_hub_client(script, env, cwd=tmp_path) == "importable"  # installed in this environment...
    assert run_hub_client(script, env, cwd=tmp_path, blocked_modules=["metaqap_hf"]) == "blocked"  # ...until blocked


# ------------------------------------------------------------ protocol rules, straight over HTTP
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def _call(hub, method: str, path: str, payload=None, *, token=True, headers=None, raw: bytes | None = None):
    """One HTTP request to the hub: (status, headers, body bytes); HTTP errors are returned, not raised."""
    body = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else None)
    request = urllib.request.Request(f"{hub.endpoint}{path}", data=body, method=method, headers=headers or {})
    if token:
        request.add_header("Authorization", "Bearer dummy")
    try:
        with _DIRECT.open(request) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def _commit(hub, repo_id: str, *lines: dict, parent: str | None = None):
    header = {"summary": "test commit", "description": ""}
    if parent is not None:
        header["parentCommit"] = parent
    ndjson = b"".join(json.dumps(line).encode() + b"\n" for line in [{"key": "header", "value": header}, *lines])
    return _call(hub, "POST", f"/api/models/{repo_id}/commit/main", raw=ndjson,
                 headers={"Content-Type": "application/x-ndjson"})


def _head_sha(hub, repo_id: str) -> str:
    return json.loads(_call(hub, "GET", f"/api/models/{repo_id}")[2])["sha"]


def test_lfs_integrity_and_commit_preconditions(loopback_hub):
    _call(loopback_hub, "POST", "/api/repos/create", {"name": "rules", "organization": "loopback-user"})
    content = os.urandom(2048)
    oid = hashlib.sha256(content).hexdigest()

    # An upload whose bytes do not hash to the announced oid is rejected and stores nothing.
    status, _, _ = _call(loopback_hub, "PUT", f"/lfs-upload/{oid}/{len(content)}", raw=content[:-1] + b"x")
    assert status == 400
    # A commit may not point at an LFS object that was never uploaded.
    head = _head_sha(loopback_hub, "loopback-user/rules")
    status, _, _ = _commit(loopback_hub, "loopback-user/rules",
                           {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": 2048}})
    assert status == 422 and _head_sha(loopback_hub, "loopback-user/rules") == head

    assert _call(loopback_hub, "PUT", f"/lfs-upload/{oid}/{len(content)}", raw=content)[0] == 200
    inline = {"key": "file", "value": {"path": "a.txt", "encoding": "base64",
                                       "content": base64.b64encode(b"hello").decode()}}
    # A commit based on a stale parent is refused; one based on the head goes through.
    assert _commit(loopback_hub, "loopback-user/rules", inline, parent="0" * 40)[0] == 412
    status, _, body = _commit(loopback_hub, "loopback-user/rules", inline,
                              {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid}},
                              parent=head)
    assert status == 200 and json.loads(body)["commitOid"] == _head_sha(loopback_hub, "loopback-user/rules")
    assert loopback_hub.read_file("model", "loopback-user/rules", "w.bin") == content
    assert loopback_hub.read_file("model", "loopback-user/rules", "a.txt") == b"hello"


def test_private_repos_and_byte_ranges(loopback_hub):
    _call(loopback_hub, "POST", "/api/repos/create",
          {"name": "secret", "organization": "loopback-user", "visibility": "private"})
    data = bytes(range(256)) * 4
    line = {"key": "file", "value": {"path": "d.txt", "encoding": "base64", "content": base64.b64encode(data).decode()}}
    assert _commit(loopback_hub, "loopback-user/secret", line)[0] == 200

    status, headers, _ = _call(loopback_hub, "GET", "/api/models/loopback-user/secret", token=False)
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound"
    status, headers, body = _call(loopback_hub, "GET", "/loopback-user/secret/resolve/main/d.txt",
                                  headers={"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert headers["X-Repo-Commit"] == _head_sha(loopback_hub, "loopback-user/secret")
    status, _, body = _call(loopback_hub, "GET", "/loopback-user/secret/resolve/main/d.txt",
                            headers={"Range": "bytes=-24"})
    assert status == 206 and body == data[-24:]
