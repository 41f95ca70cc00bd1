"""The multi-process federation: bad arguments fail early, certificates, a real run, TLS, and no leftovers."""

import math
import os
import subprocess
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from fedcompress.config import RunConfig
from fedcompress.errors import RunError
from simulations.deploy import (
    APP_ROOT,
    CONNECTION,
    MAX_SUPERNODES,
    TOKEN_VARIABLE,
    federate,
    make_certificates,
    stage_app,
)
from simulations.processes import process_alive

TINY = {
    "num_clients": 2,
    "num_rounds": 2,
    "min_clients": 2,
    "samples_per_client": 16,
    "test_samples": 16,
    "proxy_samples": 16,
    "width": 4,
    "batch_size": 8,
    "round_timeout": 600.0,  # catches hangs, not slowness: start-up on a loaded machine is inside it
}


def tiny(out: Path, **changes) -> RunConfig:
    return RunConfig(**{**TINY, **changes}, out_dir=str(out))


def assert_nothing_left(logs: Path) -> None:
    """Every PID in pids.txt is gone, and no live process carries the federation's token."""
    lines = (logs / "pids.txt").read_text().splitlines()
    marker = lines[0].removeprefix("# ").encode()
    assert marker.startswith(TOKEN_VARIABLE.encode())
    recorded = [tuple(map(int, line.split()[:2])) for line in lines if not line.startswith("#")]
    assert len(recorded) >= 3
    assert [pid for pid, start in recorded if process_alive(pid, start)] == []
    carriers = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and marker in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                carriers.append(int(entry))
        except OSError:
            continue
    assert [pid for pid in carriers if process_alive(pid)] == []


# ------------------------------------------------------------------------------------------ fast
@pytest.fixture
def no_processes(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"supernodes": 3}, "supernodes=3 must equal num-clients=2"),
        ({"supernodes": 0}, "supernodes"),
        ({"supernodes": True}, "supernodes"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
    ],
)
def test_bad_arguments_fail_before_any_process_starts(tmp_path, no_processes, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        federate(tiny(tmp_path / "run"), **kwargs)
    assert not (tmp_path / "run").exists()


def test_more_supernodes_than_one_machine_should_run_are_refused(tmp_path, no_processes):
    with pytest.raises(ValueError, match="use `fedcompress simulate`"):
        federate(tiny(tmp_path / "run", num_clients=MAX_SUPERNODES + 1))
    assert not (tmp_path / "run").exists()


def test_noise_from_the_public_seed_is_refused_by_a_deployment(tmp_path, no_processes):
    seeded = tiny(tmp_path / "run", dp="client", dp_noise="local", noise_multiplier=1.0, dp_randomness="seeded")
    with pytest.raises(ValueError, match="public seed"):
        federate(seeded)
    assert not (tmp_path / "run").exists()


def test_a_finished_run_folder_is_refused_before_any_process_starts(tmp_path, no_processes):
    (tmp_path / "result.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds a run"):
        federate(tiny(tmp_path))
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("inside", [False, True], ids=["file", "folder-under-a-file"])
def test_an_out_dir_that_is_a_file_is_a_value_error_naming_it(tmp_path, no_processes, inside):
    existing = tmp_path / "result-as-file"
    existing.write_text("not a folder")
    out = existing / "run" if inside else existing
    with pytest.raises(ValueError, match=r"out-dir .*result-as-file.* file") as caught:
        federate(tiny(out))
    assert str(existing) in str(caught.value)
    assert existing.read_text() == "not a folder"


def test_the_command_line_turns_a_file_out_dir_into_one_line_and_exit_code_2(tmp_path, no_processes, capsys):
    from simulations.cli import main

    existing = tmp_path / "a-file"
    existing.write_text("")
    assert main(["federate", "--out", str(existing), "--set", "num-clients=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedcompress federate: error: out-dir") and str(existing) in err
    assert len(err.splitlines()) == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Flower's own pathspec and click use
def test_the_staged_app_holds_the_components_but_not_the_venv_or_runs(tmp_path):
    import io
    import zipfile

    from flwr.cli.build import build_fab_from_disk

    staged = stage_app(APP_ROOT, tmp_path / "app")
    names = set(zipfile.ZipFile(io.BytesIO(build_fab_from_disk(staged))).namelist())
    assert {"pyproject.toml", "server/app.py", "clients/app.py", "fedcompress/config.py"} <= names
    assert not any(n.startswith((".venv/", "runs/", ".flwr/")) for n in names)
    assert not (staged / ".venv").exists()


def test_staging_skips_ignored_and_excluded_folders_and_foreign_files(tmp_path):
    root = tmp_path / "repo"
    files = {
        ".gitignore": "runs/\n.venv/\n",
        "pyproject.toml": "",
        "pkg/a.py": "",
        "pkg/data.npy": "",
        ".venv/lib/x.py": "",
        "runs/r/result.json": "",
        "results/run1/result.json": "",
        ".git/x.md": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    staged = stage_app(root, tmp_path / "staged", exclude=(root / "results" / "run1",))
    found = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    assert found == {".gitignore", "pyproject.toml", "pkg/a.py"}


def test_certificates_are_signed_by_the_ca_and_name_loopback(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1"}
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certs.server_key.stat().st_mode & 0o077 == 0


# ------------------------------------------------------------------------------------------ real federations
@pytest.mark.e2e
def test_two_supernodes_two_rounds_complete_and_leave_nothing_running(tmp_path):
    out = tmp_path / "run"
    result = federate(tiny(out), timeout=600)
    assert result["status"] == "completed"
    assert [row["round"] for row in result["rounds"]] == [1, 2]
    for row in result["rounds"]:
        assert row["uplink_bytes"] > 0
        assert math.isfinite(row["psnr"])
        assert row["clients_ok"] == 2
    assert result["config"]["out-dir"] == str(out.resolve())
    logs = out / "logs"
    for name in ("superlink.log", "supernode-0.log", "supernode-1.log", "flwr-run.log", "serverapp.log"):
        assert (logs / name).is_file(), name
    superlink = (logs / "superlink.log").read_text()
    assert "will accept connections from any SuperNode" not in superlink  # SuperNode authentication is on
    assert superlink.count("Activated node_id=") == 2
    assert (out / "node-keys").stat().st_mode & 0o077 == 0
    assert_nothing_left(logs)


@pytest.mark.e2e
def test_over_tls_a_crashing_server_app_is_a_run_error_not_a_success(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RunError, match="finished:failed") as caught:
        federate(tiny(out, num_rounds=1, dataset=str(tmp_path / "missing.npz")), tls=True, timeout=600)
    assert "missing.npz" in str(caught.value)  # the ServerApp's own error reaches the caller
    connection = tomllib.loads((out / ".flwr" / "config.toml").read_text())["superlink"][CONNECTION]
    assert connection["root-certificates"] == str(out / "certs" / "ca.pem")
    assert "insecure" not in connection
    assert (out / "logs" / "superlink.log").read_text().count("/v1/fleet/activate-node") == 2  # joined over TLS
    assert_nothing_left(out / "logs")
