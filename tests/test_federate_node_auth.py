"""SuperNode authentication in ``fedcompress federate``: per-node keys, registered nodes join, strangers do not."""

import stat
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from test_federate import assert_nothing_left

from simulations.deploy import LocalFederation, make_node_key, make_node_keys
from simulations.deploy.tools import flower_tool, free_ports
from simulations.processes import strip_colours

OPEN_TO_ANY = "will accept connections from any SuperNode"


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------------------------ fast
def test_node_keys_are_distinct_p384_openssh_pairs_readable_by_their_owner_only(tmp_path):
    keys = make_node_keys(tmp_path / "keys", 2)
    assert [k.name for k in keys] == ["supernode-0", "supernode-1"]
    assert _mode(tmp_path / "keys") == 0o700
    numbers = []
    for key in keys:
        assert _mode(key.private_key) == 0o600
        private = load_ssh_private_key(key.private_key.read_bytes(), None)  # what flower-supernode reads
        public = load_ssh_public_key(key.public_key.read_bytes())  # what `flwr supernode register` reads
        assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.name == "secp384r1"
        assert private.public_key().public_numbers() == public.public_numbers()
        numbers.append(public.public_numbers())
    assert numbers[0] != numbers[1]


def test_a_new_key_replaces_an_old_file_and_tightens_loose_permissions(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    old = folder / "node"
    old.write_text("old")
    old.chmod(0o644)
    key = make_node_key(folder, "node")
    assert _mode(folder) == 0o700
    assert _mode(key.private_key) == 0o600
    assert key.private_key.read_text() != "old"


@pytest.mark.parametrize("name", ["", "../up", "a b", "key.pem"])
def test_a_key_name_that_is_not_a_plain_file_name_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="name"):
        make_node_key(tmp_path, name)


def test_a_federation_with_node_auth_is_served_over_tls(tmp_path):
    fed = LocalFederation(tmp_path / "run", supernodes=1, tls=False)
    assert fed.node_auth and fed.tls  # Flower 1.42 refuses --enable-supernode-auth without TLS


# ------------------------------------------------------------------------------------------ real processes
def _wait_exited(fed: LocalFederation, roles: list[str], seconds: float) -> dict[str, int | None]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(fed.procs.popens[r].poll() is None for r in roles):
        time.sleep(0.5)
    return {role: fed.procs.popens[role].poll() for role in roles}


def _wait_for_line(path, text: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        log = strip_colours(path.read_text()) if path.is_file() else ""
        if text in log or time.monotonic() > deadline:
            return log
        time.sleep(0.5)


@pytest.mark.e2e
def test_a_stranger_supernode_is_refused_and_only_registered_nodes_are_listed(tmp_path):
    out = tmp_path / "run"
    stranger_key = make_node_key(tmp_path / "stranger", "stranger")
    with LocalFederation(out, supernodes=1) as fed:
        superlink_log = out / "logs" / "superlink.log"
        assert OPEN_TO_ANY not in superlink_log.read_text()
        (own_id,) = fed.node_ids
        assert fed.certs is not None  # node authentication turned TLS on
        base = [flower_tool("flower-supernode"), "--superlink", f"127.0.0.1:{fed.port}", "--host", "127.0.0.1"]
        base += ["--root-certificates", str(fed.certs.ca_cert)]
        with_key, keyless = free_ports(2)
        fed.procs.start(
            "stranger-key",
            [*base, "--port", str(with_key), "--auth-supernode-private-key", str(stranger_key.private_key)],
        )
        fed.procs.start("stranger-keyless", [*base, "--port", str(keyless)])
        codes = _wait_exited(fed, ["stranger-key", "stranger-keyless"], 120)
        assert all(code not in (None, 0) for code in codes.values()), codes
        logs = {role: strip_colours((out / "logs" / f"{role}.log").read_text()) for role in codes}
        assert "Failed to activate SuperNode" in logs["stranger-key"]  # an unregistered key
        assert "must be registered via the CLI" in logs["stranger-keyless"]  # self-registration is off
        assert {int(node["node-id"]) for node in fed.nodes()} == {own_id}
        assert f"SuperNode ID: {own_id}" in _wait_for_line(out / "logs" / "supernode-0.log", "SuperNode ID:", 60)
        activated = [line for line in superlink_log.read_text().splitlines() if "Activated node_id=" in line]
        assert [line.rsplit("=", 1)[1].strip() for line in activated] == [str(own_id)]
    assert_nothing_left(out / "logs")
