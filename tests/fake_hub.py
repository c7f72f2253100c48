"""A local stand-in for the Hugging Face hub: the real `huggingface_hub` client talks to it over
HTTP (through `HF_ENDPOINT`), so prefetch's listing and download run unchanged and offline.

Repositories are directories that mimic hub snapshots: `<root>/<org>/<name>/<files>`. A file's
size is its size on disk (a sparse file stands for a multi-GB shard); a file `.gated` at a
repository's top marks it gated (403 GatedRepo, as the hub answers without an accepted licence).
Served: the model info (`/api/models/<repo>[/revision/<rev>]`, with `siblings` and sizes), the
recursive tree (`/api/models/<repo>/tree/<rev>`) and file downloads (`/<repo>/resolve/<rev>/<path>`,
HEAD and GET). Every repository has one commit, `SHA`, which `main` and the sha itself name.

`tests/data/hub_trees.json` holds the file lists of the paper pairs' repositories (path → bytes),
from their hub pages; `materialize` writes them as sparse files.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"
TREES = Path(__file__).resolve().parent / "data" / "hub_trees.json"


def materialize(root: Path, trees: dict[str, dict[str, int]] | None = None) -> Path:
    """Write repositories `{repo: {path: size}}` (default: the paper pairs' real trees) under
    `root` as sparse files of those sizes; return `root`."""
    trees = trees if trees is not None else json.loads(TREES.read_text())["repos"]
    for repo, files in trees.items():
        for path, size in files.items():
            f = root / repo / path
            f.parent.mkdir(parents=True, exist_ok=True)
            with open(f, "wb") as fh:
                fh.truncate(size)
    return root


def _files(repo_dir: Path) -> dict[str, Path]:
    return {str(p.relative_to(repo_dir)): p for p in sorted(repo_dir.rglob("*"))
            if p.is_file() and p.name != ".gated"}


class _Handler(BaseHTTPRequestHandler):
    root: Path

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None,
              length: int | None = None) -> None:
        """Reply `body`; a HEAD reply passes `length` (the size a GET would send) instead."""
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _json(self, obj) -> None:
        self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _error(self, code: int, error_code: str) -> None:
        self._send(code, json.dumps({"error": error_code}).encode(),
                   {"X-Error-Code": error_code, "Content-Type": "application/json"})

    def _repo(self, org: str, name: str, rev: str) -> Path | None:
        repo_dir = self.root / org / name
        if not repo_dir.is_dir():
            self._error(404, "RepoNotFound")
            return None
        if (repo_dir / ".gated").exists():
            self._error(403, "GatedRepo")
            return None
        if rev not in ("main", SHA):
            self._error(404, "RevisionNotFound")
            return None
        return repo_dir

    def _handle(self, head: bool) -> None:
        parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            org, name, rest = parts[2], parts[3], parts[4:]
            rev = rest[1] if len(rest) >= 2 else "main"
            repo_dir = self._repo(org, name, rev)
            if repo_dir is None:
                return
            files = _files(repo_dir)
            if not rest or rest[0] == "revision":
                self._json({"id": f"{org}/{name}", "sha": SHA, "siblings": [
                    {"rfilename": f, "size": p.stat().st_size} for f, p in files.items()]})
            elif rest[0] == "tree":
                self._json([{"type": "file", "path": f, "size": p.stat().st_size,
                             "oid": hashlib.sha1(f.encode()).hexdigest()}
                            for f, p in files.items()])
            else:
                self._error(404, "EntryNotFound")
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            org, name, rev, path = parts[0], parts[1], parts[3], "/".join(parts[4:])
            repo_dir = self._repo(org, name, rev)
            if repo_dir is None:
                return
            f = _files(repo_dir).get(path)
            if f is None:
                self._error(404, "EntryNotFound")
                return
            size = f.stat().st_size
            etag = hashlib.sha256(f"{path}{size}".encode()).hexdigest()
            self._send(200, b"" if head else f.read_bytes(),
                       {"X-Repo-Commit": SHA, "ETag": f'"{etag}"'}, size if head else None)
            return
        self._error(404, "EntryNotFound")

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._handle(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle(head=True)


class FakeHub:
    """A running fake hub over `root`; `endpoint` is its URL (for HF_ENDPOINT)."""

    def __init__(self, root: Path):
        handler = type("Handler", (_Handler,), {"root": Path(root)})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
