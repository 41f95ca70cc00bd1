"""The loopback TLS material: the private key is owner-only whatever existed before, in an owner-only folder."""

import stat

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from simulations.deploy import make_certificates


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_key_is_0600_in_a_0700_folder(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    assert _mode(certs.server_key) == 0o600
    assert _mode(tmp_path / "certs") == 0o700


def test_regenerating_over_a_world_readable_key_and_folder_tightens_both(tmp_path):
    folder = tmp_path / "certs"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    old_key = folder / "server.key"
    old_key.write_text("an older key, readable by everyone")
    old_key.chmod(0o644)
    certs = make_certificates(folder)
    assert certs.server_key == old_key
    assert _mode(certs.server_key) == 0o600
    assert _mode(folder) == 0o700
    assert load_pem_private_key(certs.server_key.read_bytes(), password=None) is not None  # the new key
