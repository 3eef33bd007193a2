"""C2PA provenance with c2pa-python: the farm's ES256 certificate chain, signing and verifying."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cameofarm.models.data import ProvenanceClaim, ProvenanceReport

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
RENDER_ASSERTION = "org.cameofarm.render"
GENERATOR = "cameofarm"


@dataclass(frozen=True)
class SigningChain:
    """PEM files of the farm's signing identity."""

    root_cert: Path
    leaf_cert: Path
    leaf_key: Path

    def chain_pem(self) -> bytes:
        return self.leaf_cert.read_bytes() + self.root_cert.read_bytes()

    def files(self) -> SigningFiles:
        return SigningFiles(
            self.root_cert.read_bytes(), self.leaf_cert.read_bytes(), self.leaf_key.read_bytes()
        )


@dataclass(frozen=True)
class SigningFiles:
    """The chain's contents, handed by `up` to replicas on other nodes: every node signs with
    the one identity whose root the farm publishes, never with one it made for itself."""

    root_cert: bytes
    leaf_cert: bytes
    leaf_key: bytes

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.root_cert + self.leaf_cert).hexdigest()[:16]

    def install(self, keys_dir: str | Path) -> SigningChain:
        """Write the chain into this node's keys folder where it differs (atomically: replicas
        on one node may install the same chain at once)."""
        folder = Path(keys_dir)
        folder.mkdir(parents=True, exist_ok=True)
        chain = SigningChain(folder / "root.pem", folder / "signer.pem", folder / "signer.key")
        for path, data, mode in (
            (chain.root_cert, self.root_cert, 0o644),
            (chain.leaf_cert, self.leaf_cert, 0o644),
            (chain.leaf_key, self.leaf_key, 0o600),
        ):
            if path.is_file() and path.read_bytes() == data:
                continue
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        return chain


def ensure_signing_chain(keys_dir: str | Path, organisation: str = "cameofarm") -> SigningChain:
    """Return the farm's chain in keys_dir, creating a root CA and ES256 leaf on first run."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(keys_dir)
    chain = SigningChain(folder / "root.pem", folder / "signer.pem", folder / "signer.key")
    if chain.root_cert.is_file() and chain.leaf_cert.is_file() and chain.leaf_key.is_file():
        return chain
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            ]
        )

    def usage(sign: bool, ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=sign,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        )

    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(name(f"{organisation} provenance root"))
        .issuer_name(name(f"{organisation} provenance root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(False, True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name(f"{organisation} render signer"))
        .issuer_name(root.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=730))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(True, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain.root_cert.write_bytes(root.public_bytes(pem))
    chain.leaf_cert.write_bytes(leaf.public_bytes(pem))
    fd = os.open(chain.leaf_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            leaf_key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return chain


def manifest_for(claim: ProvenanceClaim) -> dict[str, Any]:
    """Return the C2PA manifest definition stating AI generation, tier, job and cameo ids."""
    return {
        "claim_generator_info": [{"name": GENERATOR, "version": "0.1.0"}],
        "title": claim.title,
        "format": "video/mp4",
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                            "softwareAgent": {"name": GENERATOR},
                        }
                    ]
                },
            },
            {
                "label": RENDER_ASSERTION,
                "data": {
                    "job_id": claim.job_id,
                    "tier": claim.tier,
                    "cameo_ids": list(claim.cameo_ids),
                    **claim.extra,
                },
            },
        ],
    }


def sign_mp4(data: bytes, claim: ProvenanceClaim, chain: SigningChain) -> bytes:
    """Return the MP4 with an embedded C2PA manifest signed by the farm's leaf key."""
    import c2pa

    info = c2pa.C2paSignerInfo(b"es256", chain.chain_pem(), chain.leaf_key.read_bytes(), None)
    signer = c2pa.Signer.from_info(info)
    builder = c2pa.Builder(manifest_for(claim))
    try:
        dest = io.BytesIO()
        builder.sign(signer, "video/mp4", io.BytesIO(data), dest)
        return dest.getvalue()
    finally:
        builder.close()
        signer.close()


def verify_mp4(data: bytes, trust_anchor_pem: bytes | None = None) -> ProvenanceReport:
    """Validate an MP4's C2PA manifest (trusting trust_anchor_pem if given) and report it."""
    import c2pa

    context = None
    if trust_anchor_pem is not None:
        context = c2pa.Context.from_dict(
            {
                "trust": {"trust_anchors": trust_anchor_pem.decode()},
                "verify": {"verify_trust": True},
            }
        )
    try:
        reader = c2pa.Reader("video/mp4", io.BytesIO(data), context=context)
    except Exception as exc:  # c2pa raises its own error types for "no manifest"
        return ProvenanceReport(
            False, "Missing", None, None, None, (), False, (f"no readable C2PA manifest: {exc}",)
        )
    try:
        state = reader.get_validation_state() or "Unknown"
        manifest = reader.get_active_manifest() or {}
        results = reader.get_validation_results() or {}
    finally:
        reader.close()
    failures = [
        f"{f.get('code')}: {f.get('explanation', '')}"
        for f in results.get("activeManifest", {}).get("failure", [])
    ]
    render: dict[str, Any] = {}
    ai = False
    for assertion in manifest.get("assertions", []):
        if assertion.get("label") == RENDER_ASSERTION:
            render = assertion.get("data", {})
        if assertion.get("label", "").startswith("c2pa.actions"):
            ai = ai or any(
                a.get("digitalSourceType") == TRAINED_ALGORITHMIC_MEDIA
                for a in assertion.get("data", {}).get("actions", [])
            )
    signer = (manifest.get("signature_info") or {}).get("common_name") or (
        manifest.get("signature_info") or {}
    ).get("issuer")
    wanted = "Trusted" if trust_anchor_pem is not None else "Valid"
    ok = state in (wanted, "Trusted") and not failures and bool(render)
    problems = tuple(failures) + (() if render else ("manifest lacks the render assertion",))
    if state not in (wanted, "Trusted"):
        problems += (f"validation state is {state}, expected {wanted}",)
    return ProvenanceReport(
        valid=ok,
        state=state,
        signer=signer,
        job_id=render.get("job_id"),
        tier=render.get("tier"),
        cameo_ids=tuple(render.get("cameo_ids", ())),
        ai_generated=ai,
        problems=problems,
        extra={k: v for k, v in render.items() if k not in ("job_id", "tier", "cameo_ids")},
        manifest_id=manifest.get("label"),
    )


def describe(report: ProvenanceReport) -> str:
    """Return the report as one JSON line for logs and the CLI."""
    return json.dumps(report.__dict__, default=list)
