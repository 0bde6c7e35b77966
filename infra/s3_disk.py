"""An S3 server on one's own disk, for the embedded broker's ``s3://`` storage.

The tansu broker we ship stores its topics in memory or in S3. moto's S3 server
(PyPI ``moto[server]``) answers the S3 protocol with the conditional writes the
broker allocates offsets with (``If-None-Match: *``, ``If-Match: ETAG``), but keeps
its objects in memory. This process runs moto's WSGI application and writes
through: each successful PUT, POST or DELETE of an object is mirrored to a file
under ``--dir`` before the response leaves, and at start every file is loaded
back. So whatever the broker was told is stored (and so acknowledged to a
producer) is on disk, whether the broker or this server is then stopped or killed.

Writes are serialised under one lock held across moto's handling and the file
write: moto checks a condition and stores in two steps, so two concurrent
conditional PUTs could otherwise both succeed, and the files could end in
another order than the objects. Reads run concurrently.

Files are written to a temporary name and renamed, not fsync'd: a killed process
loses nothing, a power cut may lose the last writes.

``bench/broker_storage.py`` runs it to measure tansu's S3 engine on durable storage;
``guardstream up`` does not use it (its broker stays in memory: see the storage note
in :mod:`guardstream.infra.stack` for what the S3 engine did under the stack).

Run: python -m guardstream.infra.s3_disk --dir DIR --port PORT [--bucket NAME]
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

SUFFIX = ".obj"  # so that key "a" (file a.obj) and key "a/b" (folder a) never collide
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account: the one requests without a known key map to


def object_path(root: Path, bucket: str, key: str) -> Path:
    """The file holding ``key`` of ``bucket`` under ``root``; each segment of the key quoted."""
    return root / quote(bucket, safe="") / (quote(key, safe="/") + SUFFIX)


def stored_objects(root: Path) -> Iterator[tuple[str, str, Path]]:
    """(bucket, key, file) of every object kept under ``root``; leftover temporary files skipped."""
    if not root.is_dir():
        return
    for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        bucket = unquote(bucket_dir.name)
        for path in sorted(bucket_dir.rglob("*" + SUFFIX)):
            key = unquote(str(path.relative_to(bucket_dir))[: -len(SUFFIX)])
            yield bucket, key, path


def bucket_and_key(path: str) -> tuple[str, str]:
    """(bucket, key) of a path-style request path; key "" for a request on the bucket itself."""
    bucket, _, key = urlsplit(path).path.lstrip("/").partition("/")
    return unquote(bucket), unquote(key)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class DiskMirror:
    """moto's S3 backend with every object mirrored to files under ``root``."""

    def __init__(self, root: Path, backend: Any) -> None:
        self.root = root
        self.backend = backend
        self.lock = threading.Lock()

    def load(self, buckets: Iterable[str]) -> int:
        """Create ``buckets`` and every bucket on disk, then load their objects; how many objects."""
        self.root.mkdir(parents=True, exist_ok=True)
        names = set(buckets) | {p.name for p in self.root.iterdir() if p.is_dir()}
        for name in sorted(unquote(n) for n in names):
            self._ensure_bucket(name)
            (self.root / quote(name, safe="")).mkdir(exist_ok=True)
        count = 0
        for bucket, key, path in stored_objects(self.root):
            self.backend.put_object(bucket, key, path.read_bytes())
            count += 1
        return count

    def _ensure_bucket(self, name: str) -> None:
        from moto.s3.exceptions import MissingBucket
        try:
            self.backend.get_bucket(name)
        except MissingBucket:
            self.backend.create_bucket(name, REGION)

    def sync(self, bucket: str, key: str) -> None:
        """Make the file of ``key`` what the backend holds now: written, or removed when gone."""
        path = object_path(self.root, bucket, key)
        try:
            obj = self.backend.get_object(bucket, key)
        except Exception:  # noqa: BLE001 - moto raises MissingBucket and kin for "not there"
            obj = None
        if obj is None:
            path.unlink(missing_ok=True)
        else:
            _write_atomic(path, obj.value)

    def sync_bucket(self, bucket: str) -> None:
        """After a request that may touch many keys (a multi-object delete): the whole bucket."""
        from moto.s3.exceptions import MissingBucket
        folder = self.root / quote(bucket, safe="")
        try:
            keys = set(self.backend.get_bucket(bucket).keys.keys())
        except MissingBucket:
            keys = set()
        on_disk = {key for b, key, _ in stored_objects(self.root) if b == bucket}
        for key in keys | on_disk:
            self.sync(bucket, key)
        if keys or folder.exists():
            folder.mkdir(parents=True, exist_ok=True)

    def wsgi(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        """``app`` with its writes mirrored to disk before the response is returned."""
        def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            method = environ["REQUEST_METHOD"]
            if method not in ("PUT", "POST", "DELETE"):
                return app(environ, start_response)
            status: list[str] = []

            def recording_start_response(code: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
                status.append(code)
                return start_response(code, headers, *exc)

            with self.lock:
                body = list(app(environ, recording_start_response))  # the whole answer, while locked
                if status and status[0].startswith("2"):
                    self._mirror(method, environ)
            return body
        return application

    def _mirror(self, method: str, environ: dict[str, Any]) -> None:
        bucket, key = bucket_and_key(environ.get("PATH_INFO", "/"))
        query = environ.get("QUERY_STRING", "")
        if not bucket:
            return
        if key and "partNumber=" not in query:  # a part of a multipart upload is no object yet
            self.sync(bucket, key)
        elif not key:  # bucket created or deleted, or a multi-object delete (POST ?delete)
            self.sync_bucket(bucket)


def serve(root: Path, host: str, port: int, buckets: Iterable[str]) -> None:
    import logging

    from moto.s3.models import s3_backends
    from moto.server import create_backend_app
    from werkzeug.serving import make_server

    mirror = DiskMirror(root, s3_backends[ACCOUNT]["aws"])
    loaded = mirror.load(buckets)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    print(f"s3_disk: {loaded} object(s) loaded from {root}", flush=True)
    app = mirror.wsgi(create_backend_app("s3"))  # every request is S3's, whatever its Host
    make_server(host, port, app, threaded=True).serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the objects are kept")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", action="append", default=[], help="a bucket to create when missing")
    args = parser.parse_args(argv)
    serve(args.dir, args.host, args.port, args.bucket)


if __name__ == "__main__":
    main()
