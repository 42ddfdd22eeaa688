"""What the compose commands decide before any engine is involved: the .env they write, the image set they build."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from containers import images, stack


@pytest.fixture
def env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / ".env"
    monkeypatch.setattr(stack, "ENV_FILE", path)
    return path


def test_a_missing_env_file_gets_fresh_secrets_and_the_engines_socket(env_file: Path, tmp_path: Path) -> None:
    socket = tmp_path / "docker.sock"
    socket.touch()
    values = stack.ensure_env_file(socket)
    assert values["DOCKER_SOCKET"] == str(socket) and values["DOCKER_GID"] == str(socket.stat().st_gid)
    for key in stack.GENERATED:
        assert len(values[key]) >= 16, key
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640  # the socket's group: root-equivalent already
    assert env_file.stat().st_gid == socket.stat().st_gid

    inode = env_file.stat().st_ino
    again = stack.ensure_env_file(socket)
    assert again == values, "secrets are generated once, never rotated behind the stack's back"
    assert env_file.stat().st_ino == inode, "rewritten in place: the scheduler has this very file bind-mounted"


def test_every_image_the_airgap_override_names_is_built_by_the_airgap_image_set() -> None:
    built = {image.tag for image in images.airgap_images()}
    assert set(images.override_images().values()) <= built
    assert images.AIRFLOW_IMAGE in built
    for image in images.airgap_images():
        assert image.dockerfile.is_file(), image.dockerfile
        text = image.dockerfile.read_text()
        assert image.target is None or f" AS {image.target}" in text, image
        assert all(f"ARG {arg}" in text for arg in image.args), image


def test_the_debian_mirror_comes_from_the_apt_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDIT_RISK_DEBIAN_MIRROR", "http://mirror.internal/debian")
    assert images.debian_mirror() == "http://mirror.internal/debian"
    monkeypatch.delenv("CREDIT_RISK_DEBIAN_MIRROR")
    assert images.debian_mirror().startswith("http") and images.debian_mirror().endswith("/debian")


def test_python310_is_a_shared_library_build() -> None:
    prefix = images.python310_prefix()
    assert (prefix / "lib" / "libpython3.10.so.1.0").exists() and os.access(prefix / "bin" / "python3.10", os.X_OK)
