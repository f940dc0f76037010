"""Which detector files may be loaded, recognised by sha256.

A TorchScript archive carries code that `torch.jit.load` runs; a state dict loaded with
`weights_only=True` carries only tensors. So:
- published files are recognised by their sha256 (below) and named in the log;
- the project's own random-init files are trusted through the `<file>.sha256` written
  beside them when they were scripted, and only inside the cache's detector dir;
- any other TorchScript file loads only with `eval.trust_torchscript=true` (eval CLI:
  `--trust-torchscript`), with a warning that it can run code;
- state dicts of unknown hash load (weights only), logged as not a published file.

Hashes: only those found in public sources are listed (looked up 2026-11-25); each one
was given by several independent repositories that verify the same download.
- i3d_torchscript.pt (StyleGAN-V FVD detector, 51,235,320 bytes): bec6519f...a5e2
- inception-2015-12-05.pt (StyleGAN2-ADA/StyleGAN-V TorchScript Inception): f58cb9b6...58f4
- pt_inception-2015-12-05-6726825d.pth (pytorch-fid state dict; torch.hub names a file by
  its sha256 prefix, here 6726825d; torch-fidelity ships the same bytes): 6726825d...29b2
- i3d_pretrained_400.pt (pytorch-i3d state dict): no published sha256 was found, so it
  is not listed; it loads as an unknown state dict (weights only).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# sha256 -> published file name
KNOWN_SHA256: dict[str, str] = {
    "bec6519f66ea534e953026b4ae2c65553c17bf105611c746d904657e5860a5e2": "i3d_torchscript.pt",
    "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4": "inception-2015-12-05.pt",
    "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2": (
        "pt_inception-2015-12-05-6726825d.pth"
    ),
}
SIDECAR = ".sha256"


class UntrustedDetector(ValueError):
    """An unknown TorchScript file without eval.trust_torchscript=true (one-line message)."""


@dataclass(frozen=True)
class Verdict:
    sha256: str
    published: str | None  # the published file this is, or None
    own: bool  # written by this project into its cache (random init)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


def write_sidecar(path: Path) -> str:
    digest = file_sha256(path)
    sidecar(path).write_text(digest + "\n")
    return digest


def _own_file(path: Path, digest: str, own_dir: Path | None) -> bool:
    if own_dir is None:
        return False
    try:
        path.resolve().relative_to(own_dir.resolve())
    except ValueError:
        return False
    side = sidecar(path)
    return side.is_file() and side.read_text().strip() == digest


def judge(
    path: Path, torchscript: bool, trust_torchscript: bool, own_dir: Path | None, what: str
) -> Verdict:
    """Decide whether `path` may be loaded; raises UntrustedDetector for unknown TorchScript."""
    digest = file_sha256(path)
    published = KNOWN_SHA256.get(digest)
    own = _own_file(path, digest, own_dir)
    if published:
        log.info("%s file %s is the published %s (sha256 %s)", what, path, published, digest[:12])
    elif torchscript and not own:
        if not trust_torchscript:
            raise UntrustedDetector(
                f"{what} TorchScript {path} (sha256 {digest[:16]}...) is not a known published "
                "file, and TorchScript can run code; pass eval.trust_torchscript=true "
                "(eval CLI: --trust-torchscript) if you trust it, or use a state dict"
            )
        log.warning(
            "%s: loading TorchScript %s of unknown sha256 %s because trust_torchscript is "
            "set: TorchScript can run arbitrary code",
            what,
            path,
            digest,
        )
    elif not own:
        log.info("%s state dict %s is not a published file (sha256 %s)", what, path, digest[:12])
    return Verdict(digest, published, own)
