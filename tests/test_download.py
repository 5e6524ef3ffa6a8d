"""Named datasets: download from a loopback HTTP server, extraction, failures and name resolution.

Every test talks only to 127.0.0.1: the dataset server URL comes from TOOLKIT_DATA_URL.
"""

import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from toolkit.data import download
from toolkit.data.download import DATASETS, data_cache_dir, dataset_url, fetch_dataset, resolve_data
from toolkit.errors import DataError


class _Handler(BaseHTTPRequestHandler):
    """Serve ``server.routes[path]`` (bytes) and record every requested path."""

    def do_GET(self):
        self.server.requests.append(self.path)
        body = self.server.routes.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(self.server.lengths.get(self.path, len(body))))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {}
    httpd.lengths = {}
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty dataset cache; proxies are bypassed so requests stay on loopback."""
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    folder = tmp_path / "cache"
    monkeypatch.setenv("TOOLKIT_DATA", str(folder))
    return folder


def use_server(monkeypatch, server):
    monkeypatch.setenv("TOOLKIT_DATA_URL", f"http://127.0.0.1:{server.server_address[1]}")


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png_bytes(color):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def dataset_zip(name, extra_members=()):
    """A zip laid out like the CycleGAN archives: <name>/trainA, trainB, testA, testB with one image each."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for number, folder in enumerate(("trainA", "trainB", "testA", "testB")):
            archive.writestr(f"{name}/{folder}/{number}.png", png_bytes((number * 40, 0, 0)))
        for member in extra_members:
            archive.writestr(member, b"payload")
    return buffer.getvalue()


# URLs and cache folder


def test_dataset_urls_point_to_cyclegan_server():
    assert DATASETS["horse2zebra"] == "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/horse2zebra.zip"
    assert DATASETS["cat2dog"] == "http://vllab.ucmerced.edu/hylee/DRIT/datasets/cat2dog.zip"
    assert len(DATASETS) == 12


def test_base_url_override(monkeypatch):
    monkeypatch.setenv("TOOLKIT_DATA_URL", "http://127.0.0.1:9/mirror/")
    assert dataset_url("maps") == "http://127.0.0.1:9/mirror/maps.zip"
    assert dataset_url("cat2dog") == DATASETS["cat2dog"]


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_DATA", str(tmp_path / "explicit"))
    assert data_cache_dir() == tmp_path / "explicit"

    monkeypatch.delenv("TOOLKIT_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_cache_dir() == tmp_path / "xdg" / "toolkit" / "datasets"

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_cache_dir() == tmp_path / "home" / ".cache" / "toolkit" / "datasets"


# Downloads


def test_fetch_downloads_and_extracts(cache, server, monkeypatch):
    server.routes["/apple2orange.zip"] = dataset_zip("apple2orange")
    use_server(monkeypatch, server)

    root = fetch_dataset("apple2orange")

    assert root == cache / "apple2orange"
    assert sorted(path.name for path in root.iterdir()) == ["testA", "testB", "trainA", "trainB"]
    assert (root / "trainA" / "0.png").read_bytes() == png_bytes((0, 0, 0))
    # The zip and the extraction folder are removed.
    assert [path.name for path in cache.iterdir()] == ["apple2orange"]


def test_second_fetch_skips_download(cache, server, monkeypatch):
    server.routes["/apple2orange.zip"] = dataset_zip("apple2orange")
    use_server(monkeypatch, server)

    first = fetch_dataset("apple2orange")
    second = fetch_dataset("apple2orange")

    assert first == second
    assert server.requests == ["/apple2orange.zip"]


def test_fetch_into_explicit_cache_dir(cache, server, monkeypatch, tmp_path):
    server.routes["/maps.zip"] = dataset_zip("maps")
    use_server(monkeypatch, server)
    root = fetch_dataset("maps", cache_dir=tmp_path / "elsewhere")
    assert root == tmp_path / "elsewhere" / "maps"
    assert (root / "trainB").is_dir()


def test_http_404_gives_manual_instructions(cache, server, monkeypatch):
    use_server(monkeypatch, server)
    with pytest.raises(DataError) as error:
        fetch_dataset("horse2zebra")
    message = str(error.value)
    assert "404" in message
    assert f"http://127.0.0.1:{server.server_address[1]}/horse2zebra.zip" in message
    assert str(cache / "horse2zebra" / "trainA") in message
    assert "--data horse2zebra" in message
    assert list(cache.iterdir()) == []


def test_closed_port_gives_manual_instructions(cache, monkeypatch):
    monkeypatch.setenv("TOOLKIT_DATA_URL", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(DataError) as error:
        fetch_dataset("apple2orange")
    message = str(error.value)
    assert "could not be reached" in message
    assert "apple2orange.zip" in message
    assert str(cache / "apple2orange" / "trainA") in message
    assert "--data apple2orange" in message


def test_silent_server_times_out(cache, monkeypatch):
    monkeypatch.setattr(download, "DOWNLOAD_TIMEOUT_S", 0.5)
    with socket.socket() as listener:
        # Connections wait in the backlog, and the test server never reads a request.
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        monkeypatch.setenv("TOOLKIT_DATA_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
        with pytest.raises(DataError) as error:
            fetch_dataset("apple2orange")
    assert "timed out" in str(error.value)


def test_short_body_rejected(cache, server, monkeypatch):
    body = dataset_zip("apple2orange")
    server.routes["/apple2orange.zip"] = body
    server.lengths["/apple2orange.zip"] = len(body) + 1000
    use_server(monkeypatch, server)
    with pytest.raises(DataError) as error:
        fetch_dataset("apple2orange")
    assert "failed" in str(error.value)
    assert not (cache / "apple2orange").exists()


def test_invalid_zip_rejected(cache, server, monkeypatch):
    server.routes["/apple2orange.zip"] = b"<html>maintenance</html>"
    use_server(monkeypatch, server)
    with pytest.raises(DataError) as error:
        fetch_dataset("apple2orange")
    assert "not a valid zip" in str(error.value)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("member", ["../evil.txt", "apple2orange/../../evil.txt", "/evil.txt"])
def test_unsafe_zip_member_rejected(cache, server, monkeypatch, member):
    server.routes["/apple2orange.zip"] = dataset_zip("apple2orange", extra_members=[member])
    use_server(monkeypatch, server)
    with pytest.raises(DataError) as error:
        fetch_dataset("apple2orange")
    assert member in str(error.value)
    assert not (cache / "apple2orange").exists()
    assert not (cache / "evil.txt").exists()
    assert not (cache.parent / "evil.txt").exists()


def test_zip_without_top_folder_accepted(cache, server, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("trainA/0.png", png_bytes((0, 0, 0)))
        archive.writestr("trainB/0.png", png_bytes((9, 9, 9)))
    server.routes["/facades.zip"] = buffer.getvalue()
    use_server(monkeypatch, server)
    root = fetch_dataset("facades")
    assert (root / "trainB" / "0.png").is_file()
    assert [path.name for path in cache.iterdir()] == ["facades"]


def test_zip_without_train_a_rejected(cache, server, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("apple2orange/images/0.png", png_bytes((0, 0, 0)))
    server.routes["/apple2orange.zip"] = buffer.getvalue()
    use_server(monkeypatch, server)
    with pytest.raises(DataError) as error:
        fetch_dataset("apple2orange")
    assert "trainA" in str(error.value)


def test_partial_dataset_folder_rejected(cache, monkeypatch):
    monkeypatch.setenv("TOOLKIT_DATA_URL", f"http://127.0.0.1:{closed_port()}")
    (cache / "apple2orange" / "leftover").mkdir(parents=True)
    with pytest.raises(DataError) as error:
        fetch_dataset("apple2orange")
    assert str(cache / "apple2orange") in str(error.value)


def test_fetch_unknown_name_raises(cache):
    with pytest.raises(DataError) as error:
        fetch_dataset("horse2zebr")
    assert "did you mean 'horse2zebra'" in str(error.value)


# Resolving --data


def test_resolve_existing_folder(tmp_path):
    assert resolve_data(str(tmp_path)) == tmp_path


def test_resolve_file_path_raises(tmp_path):
    archive = tmp_path / "apple2orange.zip"
    archive.write_bytes(b"zip")
    with pytest.raises(DataError) as error:
        resolve_data(str(archive))
    assert "not a folder" in str(error.value)


def test_resolve_name_downloads(cache, server, monkeypatch):
    server.routes["/apple2orange.zip"] = dataset_zip("apple2orange")
    use_server(monkeypatch, server)
    assert resolve_data("apple2orange") == cache / "apple2orange"


def test_resolve_suggests_close_name(cache):
    with pytest.raises(DataError) as error:
        resolve_data("apple2orang")
    message = str(error.value)
    assert "data folder 'apple2orang' not found" in message
    assert "did you mean 'apple2orange'" in message
    assert "horse2zebra" in message


# Named dataset components


def test_named_component_reads_cache(registry, cache, monkeypatch, horse2zebra_mini):
    monkeypatch.setenv("TOOLKIT_DATA_URL", f"http://127.0.0.1:{closed_port()}")
    cache.mkdir()
    (cache / "horse2zebra").symlink_to(horse2zebra_mini, target_is_directory=True)

    data = registry.build("dataset", "horse2zebra", {}, image_size=64)

    assert data.root == cache / "horse2zebra"
    assert data.domains == ["A", "B"]
    assert data.domain_sizes == [10, 10]
    assert data.train[(0, 0, 0)][0].shape == (3, 64, 64)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_named_component_documented(registry, name):
    entry = registry.get("dataset", name)
    assert entry.factory.__name__ == name
    assert f"'{name}'" in entry.summary
    assert [parameter.name for parameter in entry.parameters] == ["load_size", "flip"]
    assert entry.context_arguments == {"image_size"}
