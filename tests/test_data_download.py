"""The download path, on loopback only: a local http.server serves a generated archive."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from cifarlab.data import load_cifar, synthetic
from cifarlab.data.digest import file_digest
from cifarlab.errors import DataError


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (www folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve_archive(www, tmp_path):
    written = synthetic.write_cifar10_python(tmp_path / "src")
    return written, synthetic.pack(written.path, www / "generated-cifar-10-python.tar.gz")


def test_download_then_load_then_reuse(server, tmp_path, monkeypatch):
    www, base = server
    written, archive = _serve_archive(www, tmp_path)
    monkeypatch.delenv("CIFARLAB_DATA", raising=False)
    monkeypatch.setenv("CIFARLAB_DOWNLOAD_URL", f"{base}/{archive.name}")
    monkeypatch.setenv("CIFARLAB_DOWNLOAD_MD5", file_digest(archive, "md5"))
    home = tmp_path / "home"
    data = load_cifar(val=0, cache_dir=home, progress=True)
    assert (home / archive.name).read_bytes() == archive.read_bytes()
    assert data.info.source == str(home / archive.name)
    assert len(data.train) == len(written.train)
    archive.unlink()  # the second call must find the downloaded copy, not fetch again
    assert len(load_cifar(val=0, cache_dir=home, progress=False).test) == len(written.test)
    assert sorted(p.name for p in home.iterdir()) == sorted(["arrays", "digests", archive.name, "last-source-cifar10.json"])


def test_download_with_wrong_md5_leaves_nothing(server, tmp_path, monkeypatch):
    www, base = server
    _, archive = _serve_archive(www, tmp_path)
    monkeypatch.delenv("CIFARLAB_DATA", raising=False)
    monkeypatch.setenv("CIFARLAB_DOWNLOAD_URL", f"{base}/{archive.name}")
    monkeypatch.setenv("CIFARLAB_DOWNLOAD_MD5", "0" * 32)
    home = tmp_path / "home"
    with pytest.raises(DataError, match="checksum mismatch"):
        load_cifar(cache_dir=home, progress=False)
    assert list(home.iterdir()) == []


def test_official_name_served_with_other_bytes_fails_its_published_md5(server, tmp_path, monkeypatch):
    www, base = server
    written = synthetic.write_cifar10_python(tmp_path / "src")
    synthetic.pack(written.path, www / "cifar-10-python.tar.gz")
    monkeypatch.delenv("CIFARLAB_DATA", raising=False)
    monkeypatch.setenv("CIFARLAB_DOWNLOAD_URL", f"{base}/cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="c58f30108f718f92721af3b95e74349a"):
        load_cifar(cache_dir=tmp_path / "home", progress=False)
    assert list((tmp_path / "home").iterdir()) == []


def test_unreachable_server_gives_one_line_with_the_way_out(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFARLAB_DATA", raising=False)
    monkeypatch.setenv("CIFARLAB_DOWNLOAD_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(DataError) as err:
        load_cifar(cache_dir=tmp_path, progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert "127.0.0.1:9" in msg and str(tmp_path) in msg
    assert "--data PATH" in msg and "CIFARLAB_DATA" in msg
    assert [p for p in tmp_path.iterdir()] == []  # no .part file left


def test_missing_file_on_server(server, tmp_path, monkeypatch):
    _, base = server
    monkeypatch.delenv("CIFARLAB_DATA", raising=False)
    monkeypatch.setenv("CIFARLAB_DOWNLOAD_URL", f"{base}/absent.tar.gz")
    with pytest.raises(DataError, match="absent.tar.gz"):
        load_cifar(cache_dir=tmp_path, progress=False)
