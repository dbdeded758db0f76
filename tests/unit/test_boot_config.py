"""The first-boot file (config.py): settings under the config file and the command line, its own
sections, and a file that cannot be used ignored whole rather than stopping the node."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekube import config as config_mod


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_its_settings_count_under_the_config_file_and_the_command_line(tmp_path: Path) -> None:
    boot = _write(tmp_path / "edgekube.yaml", "node-name: pump-7\nhttps-port: 7000\ncontrollers: {max-events: 77}\n"
                  "kubelet: {max-pods: 40}\n")
    etc = _write(tmp_path / "config.yaml", "https-port: 7001\nkubelet: {max-pods: 41}\n")
    cfg = config_mod.load(config_file=etc, overrides={"https-port": 7002, "data-dir": str(tmp_path / "d")},
                          boot_file=boot)
    assert cfg.node_name == "pump-7" and cfg.controllers.max_events == 77  # only the boot file sets them
    assert cfg.kubelet.max_pods == 41  # the config file wins over the boot file
    assert cfg.https_port == 7002  # the command line over both
    assert cfg.boot == config_mod.BootConfig(boot)
    assert cfg.source == f"{etc} over {boot}"


def test_registries_go_to_the_data_dir_unless_the_kubelet_has_a_file_of_its_own(tmp_path: Path) -> None:
    boot = _write(tmp_path / "edgekube.yaml", "registries:\n  mirrors:\n    docker.io: {endpoint: ['http://10.0.0.5:5000']}\n"
                  f"kubelet: {{registries-file: {tmp_path / 'registries.yaml'}}}\n"
                  "manifests:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n")
    cfg = config_mod.load(overrides={"data-dir": str(tmp_path / "d")}, boot_file=boot)
    assert cfg.boot is not None and cfg.boot.error == ""
    assert cfg.boot.registries == {"mirrors": {"docker.io": {"endpoint": ["http://10.0.0.5:5000"]}}}
    assert cfg.boot.manifests == ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},)
    assert cfg.kubelet.registries_file == tmp_path / "d" / config_mod.BOOT_REGISTRIES_FILE
    _write(tmp_path / "registries.yaml", "mirrors: {}\n")
    cfg = config_mod.load(overrides={"data-dir": str(tmp_path / "d")}, boot_file=boot)
    assert cfg.kubelet.registries_file == tmp_path / "registries.yaml"


@pytest.mark.parametrize(("text", "why"), [
    ("node-name: [unclosed\n", "is not valid YAML"),
    ("node-name: pump-7\nnode-nmae: typo\n", "unknown setting 'node-nmae'"),
    ("- a list\n", "must hold a mapping"),
    ("node-name: pump-7\nhttps-port: 99999\n", "'https-port' must be between 1 and 65535"),
    ("node-name: pump-7\nmanifests: {kind: ConfigMap}\n", "'manifests' must be a list of objects"),
    ("node-name: pump-7\nregistries: [a]\n", "'registries' must be a mapping"),
    (b"node-name: \xff\n", "cannot be read"),
])
def test_a_file_that_cannot_be_used_is_ignored_whole_and_says_why(tmp_path: Path, text: str | bytes, why: str) -> None:
    boot = tmp_path / "edgekube.yaml"
    if isinstance(text, bytes):
        boot.write_bytes(text)
    else:
        boot.write_text(text)
    cfg = config_mod.load(overrides={"data-dir": str(tmp_path / "d")}, boot_file=boot)
    assert cfg.node_name == "" and cfg.https_port == 6443  # nothing of it used
    assert cfg.boot is not None and why in cfg.boot.error and cfg.boot.error.endswith("the whole file is ignored")
    assert cfg.boot.manifests is None and cfg.boot.registries is None


def test_the_first_default_place_present_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    firmware, legacy = tmp_path / "firmware" / "edgekube.yaml", tmp_path / "edgekube.yaml"
    monkeypatch.setattr(config_mod, "BOOT_CONFIG_FILES", (firmware, legacy))
    assert config_mod.load(overrides={"data-dir": str(tmp_path)}).boot is None
    _write(legacy, "node-name: old-image\n")
    assert config_mod.load(overrides={"data-dir": str(tmp_path)}).node_name == "old-image"
    firmware.parent.mkdir()
    _write(firmware, "node-name: bookworm\n")
    cfg = config_mod.load(overrides={"data-dir": str(tmp_path)})
    assert cfg.node_name == "bookworm" and cfg.boot == config_mod.BootConfig(firmware)
