"""Create a CURVE key pair for the tensor link (an edge node's or a vehicle's).

Writes OUT/NAME.key (the public key: copy it to the peers) and OUT/NAME.key_secret (public +
secret key, mode 0600: keep it on this device). A node serves only the vehicles whose NAME.key is
in its --allow directory; a vehicle pins the node's NAME.key with --server-key.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for the two key files")
    p.add_argument("--name", required=True, help="key name, e.g. rsu or v0 (files NAME.key, NAME.key_secret)")
    p.add_argument("--force", action="store_true", help="replace existing key files of that name")


def main(args: argparse.Namespace) -> int:
    from splitrt.edge_runtime.link.security import create_key_pair, load_public_key

    public, secret = create_key_pair(args.out, args.name, force=args.force)
    print(f"public key {public} ({load_public_key(public, '--out').decode()}): give it to the peers")
    print(f"secret key {secret} (mode 0600): keep it on this device")
    return 0
