"""Key pairs for Flower's SuperNode authentication: one per SuperNode, made for one run.

Flower 1.42 authenticates SuperNodes when the SuperLink runs with ``--enable-supernode-auth`` (which it accepts
only over TLS). Each SuperNode holds an EC private key on a NIST curve (``flower-supernode
--auth-supernode-private-key FILE``, OpenSSH format) and signs a timestamp in every Fleet API request with it;
the SuperLink only activates a SuperNode whose public key was registered beforehand through its Control API
(``flwr supernode register FILE.pub <connection>``, OpenSSH public-key format). Fleet self-registration is
refused while authentication is on, so a SuperNode with another key, or none, cannot join.

Keys are P-384, as in Flower's own key generation. Private keys are written 0600 in a 0700 folder.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["NodeKey", "make_node_key", "make_node_keys"]


@dataclasses.dataclass(frozen=True)
class NodeKey:
    """Paths of one SuperNode's key pair: ``private_key`` for the SuperNode, ``public_key`` to register."""

    name: str
    private_key: Path
    public_key: Path


def _private_folder(folder: Path) -> None:
    """Create ``folder`` if missing and make it 0700 (readable by its owner only)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a fresh file that is 0600 from the moment it exists (any old file is removed first)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_node_key(folder: Path, name: str) -> NodeKey:
    """Write ``<name>`` (private key) and ``<name>.pub`` (public key) into ``folder`` and return their paths.

    Parameters
    ----------
    folder : Path
        Created if missing and set to 0700; existing files of the same names are replaced.
    name : str
        File name of the private key, for example ``supernode-0``: letters, digits, ``-`` and ``_`` only.
    """
    if not name or not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
        raise ValueError(f"name must be letters, digits, '-' or '_' (a file name), got {name!r}")
    _private_folder(folder)
    key = ec.generate_private_key(ec.SECP384R1())
    node = NodeKey(name, folder / name, folder / f"{name}.pub")
    _write_private(
        node.private_key,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    node.public_key.write_bytes(public + f" {name}\n".encode())
    return node


def make_node_keys(folder: Path, count: int, *, prefix: str = "supernode") -> list[NodeKey]:
    """Key pairs ``<prefix>-0`` .. ``<prefix>-<count-1>`` in ``folder`` (see ``make_node_key``)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive whole number, got {count!r}")
    return [make_node_key(folder, f"{prefix}-{i}") for i in range(count)]
