"""The node's configuration: YAML validated at start-up with errors naming the key, flags that
override the file, and `serve --check-config`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.cli import main
from app.node.config import NodeConfigError, load_node_config, parse_destination

EXAMPLE = Path(__file__).resolve().parent.parent / "app" / "node" / "example-config.yaml"


def write(tmp_path: Path, document: dict | str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document), encoding="utf-8")
    return path


def minimal(**sections) -> dict:
    """The smallest valid configuration, with `sections` merged in (lists replace)."""
    config = {"spool": {"path": "spool"}, "processing": {"models": "models"}}
    for section, values in sections.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    return config


def error_of(path: Path | None, overrides: dict | None = None) -> str:
    with pytest.raises(NodeConfigError) as caught:
        load_node_config(path, overrides)
    return str(caught.value)


def test_defaults_and_relative_paths_resolved_against_the_file(tmp_path):
    config = load_node_config(write(tmp_path, minimal()))
    assert config.dicom.ae_title == "BIOMEDCLIP" and config.dicom.bind == "127.0.0.1" and config.dicom.port == 11112
    assert config.spool.quiet_period_s == 5.0
    assert config.spool.path == tmp_path / "spool"
    assert config.processing.models == tmp_path / "models"
    assert config.work_dir == tmp_path / "spool" / "work"
    assert config.http.bind == "127.0.0.1"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (minimal(dicom={"port": 70000}), "dicom.port: Input should be less than or equal to 65535"),
        (minimal(dicom={"prot": 104}), "dicom.prot: unknown setting"),
        (minimal(dicom={"ae_title": "A\\B"}), "dicom.ae_title: Value error, an AE title is 1 to 16 characters"),
        (minimal(dicom={"ae_title": "WAY-TOO-LONG-AE-TITLE"}), "dicom.ae_title"),
        (minimal(spool={"quiet_period_s": 0}), "spool.quiet_period_s: Input should be greater than 0"),
        (minimal(spool={"max_bytes": "lots"}), "spool.max_bytes"),
        (minimal(http={"bind": "0.0.0.0"}), "http.bind: Value error, the observability endpoint listens on a loopback address only"),
        (minimal(destinations=[{"name": "pacs", "ae_title": "PACS", "host": "10.0.0.5"}]), "destinations[0]: Value error, a DICOM destination needs ae_title, host and port"),
        (minimal(destinations=[{"name": "a", "stow_url": "ftp://x"}]), "destinations[0]: Value error, stow_url must start with http"),
        (
            minimal(destinations=[{"name": "a", "ae_title": "A", "host": "h", "port": 1}, {"name": "a", "ae_title": "B", "host": "h", "port": 2}]),
            "destinations: Value error, destination names must be unique; repeated: a",
        ),
        (minimal(delivery={"retry_initial_s": 10, "retry_max_s": 1}), "delivery: Value error, retry_max_s must not be smaller"),
        ({"spool": {"path": "s"}}, "processing: required section is missing; it needs at least processing.models (or pass --models)"),
        ({"processing": {"models": "m"}, "spool": {"quiet_period_s": 1}}, "spool.path: required setting is missing (or pass --spool)"),
    ],
)
def test_errors_name_the_key(tmp_path, document, expected):
    message = error_of(write(tmp_path, document))
    assert expected in message, message
    assert str(tmp_path / "node.yaml") in message


def test_missing_required_settings_without_a_file_name_the_flag():
    message = error_of(None, {"models": "m"})
    assert "spool: required section is missing; it needs at least spool.path (or pass --spool)" in message
    assert "(command-line flags only)" in message


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    message = error_of(write(tmp_path, "spool:\n  path: [unclosed\nprocessing: {}\n"))
    assert "is not valid YAML at line" in message and "node.yaml" in message


def test_flags_override_the_file_and_errors_say_which_flag(tmp_path):
    path = write(tmp_path, minimal(dicom={"port": 4242, "allow_calling_aes": ["OLD"]}, destinations=[{"name": "x", "ae_title": "X", "host": "h", "port": 1}]))
    config = load_node_config(
        path,
        {"port": 11113, "ae_title": "NODE", "allow_calling_ae": ["PACS", "WS"], "destination": ["PACS@10.0.0.5:104", "WS@[::1]:11112"],
         "http_port": 9100, "allow_untrained": True, "spool": str(tmp_path / "elsewhere")},
    )
    assert (config.dicom.port, config.dicom.ae_title, config.dicom.allow_calling_aes) == (11113, "NODE", ["PACS", "WS"])
    assert [(d.name, d.ae_title, d.host, d.port) for d in config.destinations] == [("pacs", "PACS", "10.0.0.5", 104), ("ws-2", "WS", "::1", 11112)]
    assert config.http.port == 9100 and config.processing.allow_untrained
    assert config.spool.path == tmp_path / "elsewhere"
    message = error_of(path, {"port": 0})
    assert "dicom.port (from --port): Input should be greater than or equal to 1" in message


def test_destination_flag_syntax_is_checked():
    assert parse_destination("ORTHANC@127.0.0.1:4242", 0) == {"name": "orthanc", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}
    for wrong in ("ORTHANC127.0.0.1:4242", "ORTHANC@host", "@host:1", "AE@host:port"):
        with pytest.raises(NodeConfigError, match="--destination"):
            parse_destination(wrong, 0)


def test_the_example_configuration_is_valid():
    config = load_node_config(EXAMPLE)
    assert config.dicom.allow_calling_aes and config.destinations
    assert {d.is_dicomweb for d in config.destinations} == {False, True}


def test_check_config_reports_ok_and_problems_with_exit_codes(tmp_path, tiny_model_dir, capsys):
    good = write(tmp_path, minimal(spool={"path": str(tmp_path / "spool")}, processing={"models": str(tiny_model_dir.parent), "allow_untrained": True},
                                  destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104}],
                                  dicom={"allow_calling_aes": ["PACS"]}))
    assert main(["serve", "--config", str(good), "--check-config"]) == 0
    out = capsys.readouterr().out
    assert "configuration is valid" in out and "BIOMEDCLIP on 127.0.0.1:11112" in out and "pacs (PACS@127.0.0.1:104)" in out
    assert "warning: processing.models: the model is UNTRAINED" in out
    assert not (tmp_path / "spool").exists(), "checking creates nothing"

    refused = write(tmp_path, minimal(processing={"models": str(tiny_model_dir.parent), "rules": str(tmp_path / "no-rules.json")}))
    assert main(["serve", "--config", str(refused), "--check-config"]) == 2
    captured = capsys.readouterr()
    assert "error: processing.models: the model's status is 'untrained'" in captured.err
    assert "error: processing (rules, tasks" in captured.err and "no-rules.json" in captured.err

    legacy = write(tmp_path, minimal(processing={"models": str(tiny_model_dir.parent), "run_arguments": ["--audit-log", "x"]}))
    assert main(["serve", "--config", str(legacy), "--check-config"]) == 2
    assert "processing.run_arguments: Value error, free-form run options are no longer taken" in capsys.readouterr().err

    assert main(["serve", "--config", str(write(tmp_path, minimal(dicom={"port": "x"}))), "--check-config"]) == 2


def test_serve_refuses_to_start_on_an_untrained_model_unless_allowed(tmp_path, tiny_model_dir, capsys):
    argv = ["serve", "--spool", str(tmp_path / "spool"), "--models", str(tiny_model_dir.parent), "--port", "1", "--http-port", "1"]
    assert main(argv) == 2
    log = capsys.readouterr().err  # serve configures logging itself, onto stderr
    assert "cannot start: the model in" in log and "processing.allow_untrained (--allow-untrained)" in log
