"""`gicl data kodak`: verified downloads from a real HTTP server on loopback.

The server speaks HTTP/1.1 with `Range`, and can cut a file short or send other bytes, so
each documented outcome (checksum mismatch, truncated transfer, resume) is exercised on the
real urllib path.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import KODAK, run_cli

from gicl.data import download
from gicl.errors import UserError


class FileServer:
    """Serves `files` (name → bytes); `cut[name]` = bytes to send before closing, once."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.cut, self.requests = dict(files), {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[name], 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                keep = server.cut.pop(name, None)
                self.wfile.write(body[start:] if keep is None else body[start:start + keep])
                if keep is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/kodak/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator:
    servers = []

    def start(files: dict[str, bytes]) -> FileServer:
        servers.append(FileServer(files))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def small_set(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Three files of distinct content registered as a public set named 'tiny'."""
    files = {f"f{i}.bin": bytes(range(256)) * (200 + 50 * i) for i in range(3)}
    sums = {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}
    monkeypatch.setitem(download.PUBLIC_SETS, "tiny", download.PublicSet("unused", sums))
    return files


def test_cli_verifies_the_published_kodak_sums_and_stops_at_a_missing_file(tmp_path, serve):
    # The loopback server holds the 11 Kodak files the suite carries; kodim06 is missing.
    server = serve({p.name: p.read_bytes() for p in KODAK.glob("*.png")})
    dest = tmp_path / "kodak"
    proc = run_cli("data", "kodak", str(dest), "--url", server.url, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "kodim06.png: HTTP 404" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == [f"kodim0{i}.png" for i in range(1, 6)]
    for p in dest.iterdir():  # bytes equal the originals: the carried sums are the real ones
        assert p.read_bytes() == (KODAK / p.name).read_bytes()


def test_checksum_mismatch_deletes_the_file_and_names_both_sums(tmp_path, serve, small_set):
    server = serve({**small_set, "f1.bin": b"not the published file"})
    dest = tmp_path / "out"
    with pytest.raises(UserError, match=r"f1\.bin: SHA-256 [0-9a-f]{64} differs from the published"):
        download.fetch("tiny", dest, server.url)
    assert sorted(p.name for p in dest.iterdir()) == ["f0.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing written elsewhere


def test_truncated_transfer_keeps_the_part_and_the_rerun_resumes_with_range(tmp_path, serve, small_set):
    server = serve(small_set)
    server.cut["f2.bin"] = 10_000
    dest = tmp_path / "out"
    total = len(small_set["f2.bin"])
    with pytest.raises(UserError, match=rf"download of f2\.bin stopped at 10000 of {total} bytes; "
                                        r"run the same command again to resume"):
        download.fetch("tiny", dest, server.url)
    assert (dest / "f2.bin.part").stat().st_size == 10_000
    server.requests.clear()
    files = download.fetch("tiny", dest, server.url)
    assert [f.name for f in files] == ["f0.bin", "f1.bin", "f2.bin"]
    assert server.requests == [("f2.bin", "bytes=10000-")]  # f0, f1 kept; f2 resumed
    assert (dest / "f2.bin").read_bytes() == small_set["f2.bin"]
    assert sorted(p.name for p in dest.iterdir()) == ["f0.bin", "f1.bin", "f2.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
