"""A loopback Hugging Face Hub for tests: the real client libraries talk to it over HTTP on 127.0.0.1.

The server speaks the part of the Hub HTTP protocol that `huggingface_hub` 2.x (with Xet disabled) and `datasets`
use to push and pull repos: repo creation, README metadata validation, preupload (regular vs LFS), the LFS batch API
with single-part PUT and verify, NDJSON commits, repo/revision info, tree listings, paths-info and `resolve`
downloads (HEAD, GET, byte ranges). Repos are git-less: every commit keeps a snapshot of its file table, and file
contents live content-addressed (sha256) on disk. Errors carry the Hub's `X-Error-Code` headers, so clients raise
their usual `RepositoryNotFoundError` / `EntryNotFoundError` / ... Pull requests, branches and Xet are not served.

Clients: `huggingface_hub` and `datasets` read `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_HUB_DISABLE_XET`... at import
time, so consumers run in a fresh interpreter (`run_hub_client`) with `client_env(...)`: `HF_ENDPOINT` at the
server, `HF_TOKEN=dummy`, `HF_HUB_DISABLE_XET=1`, a private `HF_HOME`, no offline switch. That interpreter refuses
any connection or name lookup that is not loopback, and the helper fails the test if one was attempted. Code that
takes `endpoint=` explicitly (metaqap_hf.hub) can also push from the test process; see tests/test_hub.py.
"""

from __future__ import annotations

import base64
import dataclasses
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

__all__ = [
    "HubError",
    "LoopbackHub",
    "client_env",
    "loopback_hub",
    "run_hub_client",
    "serve_loopback_hub",
]

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # files at least this big always go through LFS, as on the Hub
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
DEFAULT_LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lz4 *.mlmodel *.model *.msgpack *.npy *.npz "
    "*.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors *.tar *.tflite *.tgz *.wasm *.xz "
    "*.zip *.zst *tfevents* *.jpg *.jpeg *.png *.webp *.gif"
).split()
DEFAULT_GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in DEFAULT_LFS_PATTERNS)
USER = "loopback-user"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class HubError(Exception):
    """An HTTP error answered the way the Hub does: status, `X-Error-Code` header and a JSON `error` message."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None,
                 **body: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.commit, self.body = status, message, code, commit, body


def _now() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclasses.dataclass(frozen=True)
class StoredFile:
    """One file of one commit: where its bytes are (sha256) and how git would see it (blob oid, LFS or not)."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str
    last_commit: str

    @property
    def pointer_size(self) -> int:
        return len(LFS_POINTER.format(oid=self.sha256, size=self.size))

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclasses.dataclass
class Commit:
    sha: str
    parent: str | None
    title: str
    description: str
    date: str
    files: dict[str, StoredFile]


@dataclasses.dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    refs: dict[str, str] = dataclasses.field(default_factory=dict)
    commits: dict[str, Commit] = dataclasses.field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        """Branch name or full commit sha -> commit; anything else is the Hub's `RevisionNotFound`."""
        sha = self.refs.get(revision.removeprefix("refs/heads/"), revision)
        if sha not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[sha]


class LoopbackHub:
    """Repo store plus protocol logic; `serve_loopback_hub` puts it behind an HTTP server on 127.0.0.1.

    `requests` records `(method, path)` of every request served, so tests can check which protocol path a
    client took (inline commit vs LFS batch + PUT) without trusting the client's own report.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.endpoint = ""  # set once the server has a port
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- storage
    def _blob_path(self, sha256: str) -> Path:
        if not _SHA256_HEX.fullmatch(sha256):
            raise HubError(400, f"Not a sha256 LFS oid: {sha256!r}")
        return self.blob_dir / sha256

    def _store_blob(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        path = self._blob_path(sha256)
        if not path.exists():
            partial = path.with_suffix(f".{threading.get_ident()}.partial")
            partial.write_bytes(content)
            partial.replace(path)
        return sha256

    def _has_blob(self, sha256: str, size: int) -> bool:
        path = self._blob_path(sha256)
        return path.is_file() and path.stat().st_size == size

    def read_file(self, repo_type: str, repo_id: str, path: str, revision: str = "main") -> bytes:
        """Bytes of a file as stored on the server: lets tests compare without going through a client."""
        stored = self._repo(repo_type, repo_id).resolve(revision).files[path]
        return self._blob_path(stored.sha256).read_bytes()

    def file_table(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, StoredFile]:
        return dict(self._repo(repo_type, repo_id).resolve(revision).files)

    def _repo(self, repo_type: str, repo_id: str, *, authorized: bool = True) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def _url(self, repo: Repo) -> str:
        return f"{self.endpoint}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    def _commit(self, repo: Repo, branch: str, files: dict[str, StoredFile], title: str, description: str) -> Commit:
        parent = repo.refs.get(branch)
        digest = hashlib.sha1(json.dumps([parent, title, time.time_ns(), sorted(files)]).encode()).hexdigest()
        # Files written by this commit get it as their last commit; unchanged files keep theirs.
        files = {path: f if f.last_commit else dataclasses.replace(f, last_commit=digest) for path, f in files.items()}
        commit = Commit(digest, parent, title, description, _now(), files)
        repo.commits[digest] = commit
        repo.refs[branch] = digest
        return commit

    def _stored_file(self, content: bytes, lfs: bool) -> StoredFile:
        sha256 = self._store_blob(content)
        if lfs:
            git_oid = _git_blob_oid(LFS_POINTER.format(oid=sha256, size=len(content)).encode())
        else:
            git_oid = _git_blob_oid(content)
        return StoredFile(sha256, len(content), lfs, git_oid, last_commit="")

    # ------------------------------------------------------------- repo level
    def create_repo(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        repo_type = payload.get("type") or "model"
        name, namespace = payload.get("name"), payload.get("organization") or USER
        if repo_type not in URL_PREFIXES or not name:
            raise HubError(400, f"Invalid repo creation payload: {payload}")
        repo_id = f"{namespace}/{name}"
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                url = self._url(self.repos[(repo_type, repo_id)])
                raise HubError(409, f"You already created this {repo_type} repo", url=url)  # clients read the url
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = Repo(repo_type, repo_id, private, _now())
            self.repos[(repo_type, repo_id)] = repo
            attributes = self._stored_file(DEFAULT_GITATTRIBUTES.encode(), lfs=False)
            self._commit(repo, "main", {".gitattributes": attributes}, "initial commit", "")
            return {"url": self._url(repo), "name": repo_id, "id": repo_id}

    def repo_info(self, repo: Repo, revision: str, with_blobs: bool) -> dict[str, Any]:
        commit = repo.resolve(revision)
        siblings = []
        for path, stored in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=stored.size, blobId=stored.git_oid)
                if stored.lfs:
                    sibling["lfs"] = {"size": stored.size, "sha256": stored.sha256, "pointerSize": stored.pointer_size}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "createdAt": repo.created_at,
            "lastModified": commit.date,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(stored.size for stored in commit.files.values()),
        }
        card_data = self._card_metadata(commit)
        if card_data:
            info["cardData"] = card_data
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        return info

    def _card_metadata(self, commit: Commit) -> dict[str, Any] | None:
        stored = commit.files.get("README.md")
        if stored is None:
            return None
        metadata = _front_matter(self._blob_path(stored.sha256).read_text(encoding="utf-8"))
        return metadata if isinstance(metadata, dict) else None

    # ------------------------------------------------------------- file level
    def _entry(self, repo: Repo, path: str, stored: StoredFile | None, expand: bool) -> dict[str, Any]:
        if stored is None:  # a folder; git-less, so its oid is derived from its path (stable, not content-based)
            return {"type": "directory", "path": path, "size": 0, "oid": hashlib.sha1(path.encode()).hexdigest()}
        entry = {"type": "file", "path": path, "size": stored.size, "oid": stored.git_oid}
        if stored.lfs:
            entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": stored.pointer_size}
        if expand:
            last = repo.commits[stored.last_commit]
            entry["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
        return entry

    @staticmethod
    def _folders(files: Mapping[str, StoredFile]) -> set[str]:
        return {"/".join(path.split("/")[:depth]) for path in files for depth in range(1, path.count("/") + 1)}

    def tree(self, repo: Repo, revision: str, folder: str, recursive: bool, expand: bool) -> list[dict[str, Any]]:
        commit = repo.resolve(revision)
        folders = self._folders(commit.files)
        folder = folder.strip("/")
        if folder and folder not in folders:
            raise HubError(404, f"Entry not found: {folder}", "EntryNotFound", commit.sha)
        prefix = f"{folder}/" if folder else ""

        def listed(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

        entries = [self._entry(repo, path, None, expand) for path in sorted(folders) if listed(path)]
        entries += [self._entry(repo, p, f, expand) for p, f in sorted(commit.files.items()) if listed(p)]
        return entries

    def paths_info(self, repo: Repo, revision: str, paths: Sequence[str], expand: bool) -> list[dict[str, Any]]:
        commit = repo.resolve(revision)
        folders = self._folders(commit.files)
        entries = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                entries.append(self._entry(repo, path, commit.files[path], expand))
            elif path in folders:
                entries.append(self._entry(repo, path, None, expand))
        return entries

    def _lfs_patterns(self, commit: Commit) -> list[str]:
        stored = commit.files.get(".gitattributes")
        if stored is None:
            return []
        lines = self._blob_path(stored.sha256).read_text(encoding="utf-8").splitlines()
        return [line.split()[0] for line in lines if "filter=lfs" in line.split()[1:]]

    def preupload(self, repo: Repo, revision: str, files: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Regular or LFS per file, as the Hub decides: .gitattributes LFS pattern, >= 10 MiB, or binary sample."""
        commit = repo.resolve(revision)
        patterns = self._lfs_patterns(commit)
        answers = []
        for item in files:
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            name = path.rsplit("/", 1)[-1]
            by_pattern = any(fnmatch.fnmatch(path if "/" in p else name, p) for p in patterns)
            lfs = by_pattern or size >= LFS_SIZE_THRESHOLD or b"\0" in sample
            existing = commit.files.get(path)
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.git_oid)
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return {"files": answers, "commitOid": commit.sha}

    def lfs_batch(self, repo: Repo, payload: Mapping[str, Any]) -> dict[str, Any]:
        if payload.get("operation") != "upload":
            raise HubError(400, f"Unsupported LFS operation: {payload.get('operation')}")
        objects = []
        for item in payload.get("objects", []):
            oid, size = item["oid"], int(item["size"])
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not self._has_blob(oid, size):
                answer["actions"] = {
                    "upload": {"href": f"{self.endpoint}/lfs-upload/{oid}/{size}", "header": {}},
                    "verify": {"href": f"{self.endpoint}/lfs-verify", "header": {}},
                }
            objects.append(answer)
        return {"transfer": "basic", "objects": objects}

    def lfs_upload(self, oid: str, size: int, content: bytes) -> None:
        actual = hashlib.sha256(content).hexdigest()
        if actual != oid or len(content) != size:
            raise HubError(400, f"LFS upload does not match its oid/size: got sha256 {actual}, {len(content)} bytes")
        self._store_blob(content)

    def lfs_verify(self, payload: Mapping[str, Any]) -> None:
        if not self._has_blob(str(payload.get("oid")), int(payload.get("size", -1))):
            raise HubError(404, f"LFS object {payload.get('oid')} was not uploaded")

    def commit(self, repo: Repo, revision: str, ndjson: bytes, params: Mapping[str, str]) -> dict[str, Any]:
        if params.get("create_pr"):
            raise HubError(400, "The loopback hub does not support pull requests (create_pr)")
        lines = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "A commit payload must start with a header line")
        header = lines[0]["value"]
        with self._lock:
            head = repo.resolve(revision)
            branch = revision.removeprefix("refs/heads/")
            if branch not in repo.refs:
                raise HubError(400, f"Can only commit to a branch, not to {revision}")
            if header.get("parentCommit") not in (None, head.sha):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for line in lines[1:]:
                self._apply_operation(files, line["key"], line["value"])
            commit = self._commit(repo, branch, files, header.get("summary", ""), header.get("description", ""))
        return {
            "success": True,
            "commitOid": commit.sha,
            "commitUrl": f"{self._url(repo)}/commit/{commit.sha}",
            "hookOutput": "",
            "pullRequestUrl": None,
        }

    def _apply_operation(self, files: dict[str, StoredFile], key: str, value: Mapping[str, Any]) -> None:
        path = str(value.get("path", "")).strip("/")
        if not path or path.startswith("../") or "/../" in f"/{path}/":
            raise HubError(400, f"Invalid path in commit: {value.get('path')!r}")
        if key == "file":
            if value.get("encoding") != "base64":
                raise HubError(400, f"Unsupported encoding for {path}: {value.get('encoding')}")
            files[path] = self._stored_file(base64.b64decode(value["content"]), lfs=False)
        elif key == "lfsFile":
            oid, size = value["oid"], value.get("size")
            blob = self._blob_path(oid)
            if not blob.is_file() or (size is not None and blob.stat().st_size != int(size)):
                raise HubError(422, f"Your push was rejected: LFS pointer of {path} points to a missing object {oid}")
            size = blob.stat().st_size
            git_oid = _git_blob_oid(LFS_POINTER.format(oid=oid, size=size).encode())
            files[path] = StoredFile(oid, size, True, git_oid, last_commit="")
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            doomed = [p for p in files if p.startswith(f"{path}/")]
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for doomed_path in doomed:
                del files[doomed_path]
        else:
            raise HubError(400, f"Unknown commit operation: {key}")


def _front_matter(text: str) -> Any:
    """The YAML metadata block of a README, None when there is none; raises `yaml.YAMLError` when invalid."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return yaml.safe_load("\n".join(lines[1:index])) or {}
    return None


def _validate_card(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The Hub's README check: the metadata block must be valid YAML and a mapping."""
    try:
        metadata = _front_matter(str(payload.get("content", "")))
    except yaml.YAMLError as error:
        raise HubError(400, f"Invalid YAML in README.md metadata: {error}") from error
    if metadata is not None and not isinstance(metadata, dict):
        raise HubError(400, "README.md metadata must be a YAML mapping")
    warnings = [] if metadata else [{"message": "Empty or missing yaml metadata in repo card"}]
    return {"errors": [], "warnings": warnings}


class _HubRequestHandler(BaseHTTPRequestHandler):
    """Routes one HTTP request to `LoopbackHub`; HTTP/1.1 keep-alive, since the clients pool connections."""

    protocol_version = "HTTP/1.1"
    server: _HubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean; `hub.requests` has it all
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    # ------------------------------------------------------------ plumbing
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailer lines, then the empty line
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _handle(self, method: str) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        hub.requests.append((method, url.path))
        body = self._read_body() if method in ("POST", "PUT") else b""
        try:
            self._route(hub, method, [unquote(part) for part in url.path.strip("/").split("/")], url.query, body)
        except Exception as error:  # a server bug must reach the client as a 500, not as a dropped connection
            if not isinstance(error, HubError):
                error = HubError(500, f"loopback hub failure: {type(error).__name__}: {error}")
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            if error.commit:
                headers["X-Repo-Commit"] = error.commit
            self._send_json({"error": error.message, **error.body}, error.status, headers)

    @property
    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "").startswith("Bearer ")

    def _require_token(self) -> None:
        if not self._authorized:
            raise HubError(401, "Invalid credentials in Authorization header")

    # ------------------------------------------------------------- routing
    def _route(self, hub: LoopbackHub, method: str, parts: list[str], query: str, body: bytes) -> None:
        params = {key: values[-1] for key, values in parse_qs(query).items()}
        if parts[0] == "api":
            return self._route_api(hub, method, parts[1:], params, body)
        if parts[0] == "lfs-upload" and method == "PUT":
            hub.lfs_upload(parts[1], int(parts[2]), body)
            return self._send(200)
        if parts[0] == "lfs-verify" and method == "POST":
            hub.lfs_verify(json.loads(body))
            return self._send_json({"success": True})
        if parts[0] in ("info", "parquet", "splits", "is-valid"):
            raise HubError(404, "The loopback hub has no dataset viewer", "DatasetViewerUnavailable")
        repo_type = REPO_TYPES.get(parts[0], "model")
        parts = parts[1:] if parts[0] in REPO_TYPES else parts
        if len(parts) >= 2 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            self._require_token()
            repo = hub._repo(repo_type, f"{parts[0]}/{parts[1].removesuffix('.git')}")
            payload = hub.lfs_batch(repo, json.loads(body))
            return self._send_json(payload, headers={"Content-Type": "application/vnd.git-lfs+json"})
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            repo = hub._repo(repo_type, f"{parts[0]}/{parts[1]}", authorized=self._authorized)
            return self._resolve(hub, repo, parts[3], "/".join(parts[4:]))
        raise HubError(404, f"The loopback hub does not serve {method} {self.path}")

    def _route_api(self, hub: LoopbackHub, method: str, parts: list[str], params: dict, body: bytes) -> None:
        if parts == ["validate-yaml"] and method == "POST":
            return self._send_json(_validate_card(json.loads(body)))
        if parts == ["repos", "create"] and method == "POST":
            self._require_token()
            return self._send_json(hub.create_repo(json.loads(body)))
        if len(parts) < 3 or parts[0] not in REPO_TYPES:
            raise HubError(404, f"The loopback hub does not serve {method} {self.path}")
        repo = hub._repo(REPO_TYPES[parts[0]], f"{parts[1]}/{parts[2]}", authorized=self._authorized)
        action, rest = (parts[3], parts[4:]) if len(parts) > 3 else ("", [])
        with_blobs = params.get("blobs", "").lower() == "true"
        expand = params.get("expand", "").lower() == "true"
        if method == "GET" and action == "":
            return self._send_json(hub.repo_info(repo, "main", with_blobs))
        if method == "GET" and action == "revision":
            return self._send_json(hub.repo_info(repo, "/".join(rest), with_blobs))
        if method == "GET" and action == "tree":
            recursive = params.get("recursive", "").lower() == "true"
            return self._send_json(hub.tree(repo, rest[0], "/".join(rest[1:]), recursive, expand))
        if method == "POST" and action == "paths-info":
            form = parse_qs(body.decode())
            expand = form.get("expand", ["false"])[-1].lower() == "true"
            return self._send_json(hub.paths_info(repo, "/".join(rest), form.get("paths", []), expand))
        if method == "POST":
            self._require_token()
            if action == "preupload":
                return self._send_json(hub.preupload(repo, "/".join(rest), json.loads(body)["files"]))
            if action == "commit":
                return self._send_json(hub.commit(repo, "/".join(rest), body, params))
        raise HubError(404, f"The loopback hub does not serve {method} {self.path}")

    def _resolve(self, hub: LoopbackHub, repo: Repo, revision: str, path: str) -> None:
        """A file download with the headers `hf_hub_download` needs; byte ranges for fsspec readers."""
        commit = repo.resolve(revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit.sha)
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{stored.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(stored.size)})
        start, end, status = 0, stored.size - 1, 200
        requested = self.headers.get("Range", "")
        if requested.startswith("bytes="):
            first, _, last = requested.removeprefix("bytes=").split(",")[0].partition("-")
            if first:
                start, end = int(first), min(int(last), stored.size - 1) if last else stored.size - 1
            else:
                start = max(stored.size - int(last), 0)
            if start > end or start >= stored.size:
                raise HubError(416, f"Range not satisfiable: {requested} of {stored.size} bytes")
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{stored.size}"
        with hub._blob_path(stored.sha256).open("rb") as blob:
            blob.seek(start)
            self._send(status, blob.read(end - start + 1), headers)


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: LoopbackHub):
        super().__init__(("127.0.0.1", 0), _HubRequestHandler)
        self.hub = hub


@contextmanager
def serve_loopback_hub(root: Path | None = None) -> Iterator[LoopbackHub]:
    """Run a `LoopbackHub` on 127.0.0.1 (free port) in a background thread for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="loopback-hub-") as scratch:
        hub = LoopbackHub(Path(root) if root is not None else Path(scratch))
        server = _HubHTTPServer(hub)
        hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="loopback-hub", daemon=True)
        thread.start()
        try:
            yield hub
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


@pytest.fixture
def loopback_hub(tmp_path: Path) -> Iterator[LoopbackHub]:
    """A fresh loopback hub per test, storing its repos under the test's tmp_path."""
    with serve_loopback_hub(tmp_path / "hub-storage") as hub:
        yield hub


# ----------------------------------------------------------------- client side
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
# `datasets` probes the dataset viewer at HF_ENDPOINT with "datasets-server." put before the host, and has no switch
# to turn that off; client processes resolve that name to the loopback hub (which answers "no viewer export").
_LOOPBACK_NAMES = {"datasets-server.127.0.0.1": "127.0.0.1"}
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def client_env(endpoint: str, hf_home: Path, *, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a client process that must reach `endpoint` and nothing else.

    Offline switches and proxies are dropped (they would block or reroute loopback calls), Xet is disabled (the
    loopback hub speaks the LFS protocol), and `HF_HOME` is private so no real cache or token is touched.
    """
    env = {k: v for k, v in os.environ.items() if k not in _OFFLINE_VARIABLES + _PROXY_VARIABLES}
    env.pop("HF_TOKEN_PATH", None)
    env.update(
        HF_ENDPOINT=endpoint,
        HF_TOKEN="dummy",
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_UPDATE_DOWNLOAD_COUNTS="0",  # else `load_dataset` sends a HEAD to s3.amazonaws.com
        NO_PROXY="127.0.0.1,localhost",
        PYTHONNOUSERSITE="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra or {})
    return env


# Prepended to every client script: a socket guard (loopback only, violations recorded and refused), an optional
# import blocker, and `emit()` to hand a JSON result back to the test.
_CLIENT_PRELUDE = r'''
import ipaddress as _ipaddress, json as _json, socket as _socket, sys as _sys

_BLOCKED_MODULES = {blocked_modules!r}
_LOOPBACK_NAMES = {loopback_names!r}
_refused = []

def _loopback(host):
    if host in (None, "", "localhost"):
        return True
    try:
        return _ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False

def _guard_address(address):
    if isinstance(address, tuple) and not _loopback(address[0]):
        _refused.append(str(address))
        raise ConnectionRefusedError(f"loopback guard: refused connection to {{address}}")

_real_connect, _real_connect_ex = _socket.socket.connect, _socket.socket.connect_ex
_real_getaddrinfo = _socket.getaddrinfo

def _connect(self, address):
    _guard_address(address)
    return _real_connect(self, address)

def _connect_ex(self, address):
    _guard_address(address)
    return _real_connect_ex(self, address)

def _getaddrinfo(host, *args, **kwargs):
    host = host.decode() if isinstance(host, bytes) else host
    host = _LOOPBACK_NAMES.get(host, host)
    if not _loopback(host):
        _refused.append(f"lookup {{host}}")
        raise _socket.gaierror(f"loopback guard: refused name lookup of {{host}}")
    return _real_getaddrinfo(host, *args, **kwargs)

_socket.socket.connect, _socket.socket.connect_ex, _socket.getaddrinfo = _connect, _connect_ex, _getaddrinfo

class _ImportBlocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED_MODULES:
            raise ModuleNotFoundError(f"import of {{name}} is blocked in this process", name=name)
        return None

_sys.meta_path.insert(0, _ImportBlocker())

def emit(result):
    """Print the script's result as the last stdout line, with the guard's record."""
    print(_json.dumps({{"result": result, "refused": _refused}}))
'''


def run_hub_client(
    script: str,
    env: Mapping[str, str],
    *,
    cwd: Path,
    blocked_modules: Sequence[str] = (),
    timeout: float = 300,
) -> Any:
    """Run `script` in a fresh interpreter with `env`; return what it passed to `emit()`.

    Fails the test with the process's stderr if it crashes, and if anything tried to leave 127.0.0.1.
    `blocked_modules` makes `import <name>` fail inside the process (e.g. to prove remote code needs no install).
    """
    prelude = _CLIENT_PRELUDE.format(blocked_modules=set(blocked_modules), loopback_names=_LOOPBACK_NAMES)
    source = prelude + script
    process = subprocess.run(
        [sys.executable, "-c", source], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if process.returncode != 0:
        raise AssertionError(f"hub client failed (exit {process.returncode}):\n{process.stderr[-6000:]}")
    last_line = process.stdout.strip().splitlines()[-1] if process.stdout.strip() else ""
    try:
        report = json.loads(last_line)
    except json.JSONDecodeError:
        raise AssertionError(f"hub client did not emit() a result:\n{process.stdout[-3000:]}\n{process.stderr[-3000:]}")
    if report["refused"]:
        raise AssertionError(f"hub client tried to leave 127.0.0.1: {report['refused']}")
    return report["result"]
