"""The model store: weights in the object store under `models/<name>/<version>/`, each version
described by a manifest, and a per-node cache that fetches a file once and verifies it.

Layout in the object store:
  models/<name>/<version>/files/<relative path>   the weights, byte for byte as imported
  models/<name>/<version>/manifest.json           written last: a version without it is
                                                   an import that did not finish

The manifest names every file with its sha256 and size, and says where the weights came from
(source, licence), what they take and give (signature: input and output names, shapes and
types, as the importer knows them) and their precision. A version is immutable: importing
other bytes under an existing version is refused; importing the same bytes again is a no-op.

The node cache keeps one blob per sha256 (`<cache>/blobs/<sha256>`), so two versions that
share a file share its copy, and links each version's files into `<cache>/<name>/<version>/`
under their relative paths, where a backend opens them. Every blob is hashed when fetched;
a corrupt or missing file is refused with a message that names the model and says what to
run, before any backend loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cameofarm.storage.keys import InvalidKeyError, validate_key
from cameofarm.storage.objects import ObjectNotFoundError, ObjectStore

PREFIX = "models"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "mixed")
MAX_FILES = 1000
_CHUNK = 1 << 20
Progress = Callable[[str], None]


class ModelStoreError(ValueError):
    """A model could not be imported, found or trusted; the message says what to do."""


@dataclass(frozen=True)
class ModelFile:
    path: str  # relative, with '/' separators
    sha256: str
    size: int


@dataclass(frozen=True)
class ModelManifest:
    name: str
    version: str
    files: tuple[ModelFile, ...]
    source: str = ""
    licence: str = ""
    precision: str = "fp32"
    signature: dict[str, Any] = field(default_factory=dict)
    imported_at: float = 0.0

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def sha256(self) -> str:
        """One digest of the whole version: its files' paths and digests, in order."""
        lines = "".join(f"{f.path}\0{f.sha256}\n" for f in self.files)
        return hashlib.sha256(lines.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
            "source": self.source,
            "licence": self.licence,
            "precision": self.precision,
            "signature": self.signature,
            "imported_at": self.imported_at,
        }

    @classmethod
    def from_json(cls, data: Any) -> ModelManifest:
        """Read a stored manifest; ModelStoreError if it is not one this farm wrote."""
        try:
            if data["format"] != MANIFEST_FORMAT:
                raise ModelStoreError(f"manifest format {data['format']!r} is not supported")
            files = tuple(
                ModelFile(_relative(str(f["path"])), _digest(str(f["sha256"])), int(f["size"]))
                for f in data["files"]
            )
            manifest = cls(
                name=check_name(str(data["name"])),
                version=check_version(str(data["version"])),
                files=files,
                source=str(data.get("source", "")),
                licence=str(data.get("licence", "")),
                precision=str(data.get("precision", "fp32")),
                signature=dict(data.get("signature") or {}),
                imported_at=float(data.get("imported_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelStoreError):
                raise
            raise ModelStoreError(f"damaged model manifest: {exc!r}") from None
        if data.get("sha256") not in (None, manifest.sha256):
            raise ModelStoreError(
                f"damaged model manifest for {manifest.name}@{manifest.version}: its file "
                "list does not match its digest"
            )
        return manifest


@dataclass(frozen=True)
class FileCheck:
    path: str
    problem: str | None  # None when the stored file matches the manifest


@dataclass(frozen=True)
class VerifyReport:
    name: str
    version: str
    checks: tuple[FileCheck, ...]

    @property
    def ok(self) -> bool:
        return all(c.problem is None for c in self.checks)

    @property
    def problems(self) -> list[str]:
        return [f"{c.path}: {c.problem}" for c in self.checks if c.problem is not None]


def _check(value: str, rule: re.Pattern[str], what: str, example: str) -> str:
    if not isinstance(value, str) or not rule.fullmatch(value):
        raise ModelStoreError(
            f"model {what} {str(value)[:80]!r} must be 1-64 {example}, starting with a letter "
            "or digit"
        )
    return value


def check_name(name: str) -> str:
    return _check(name, NAME, "name", "lowercase letters, digits, '.', '_' or '-' (inswapper-128)")


def check_version(version: str) -> str:
    return _check(version, VERSION, "version", "letters, digits, '.', '_' or '-' (1.0, 2024-06)")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """`name` or `name@version` → (name, version or None)."""
    name, _, version = ref.partition("@")
    return check_name(name), (check_version(version) if version else None)


def _digest(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"not a sha256 digest: {value[:80]!r}")
    return value


def _relative(path: str) -> str:
    try:
        return validate_key(path)
    except InvalidKeyError as exc:
        raise ModelStoreError(f"model file {path[:120]!r} cannot be stored: {exc}") from None


def hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _files_of(path: Path) -> list[tuple[str, Path]]:
    if path.is_file():
        return [(path.name, path)]
    if not path.is_dir():
        raise ModelStoreError(f"{path} is neither a file nor a folder of model files")
    found = []
    for p in sorted(path.rglob("*")):
        if p.is_symlink():
            raise ModelStoreError(f"{p} is a link; import the file it points to")
        if p.is_file():
            found.append((p.relative_to(path).as_posix(), p))
    if not found:
        raise ModelStoreError(f"{path} holds no files")
    if len(found) > MAX_FILES:
        raise ModelStoreError(f"{path} holds {len(found)} files; a model has at most {MAX_FILES}")
    return found


class ModelStore:
    """Models in one farm's object store."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    @staticmethod
    def _prefix(name: str, version: str) -> str:
        return f"{PREFIX}/{name}/{version}"

    def _file_key(self, name: str, version: str, path: str) -> str:
        return f"{self._prefix(name, version)}/files/{path}"

    # --- import -----------------------------------------------------------------------------

    def import_path(
        self,
        path: str | Path,
        name: str,
        version: str | None = None,
        *,
        source: str = "",
        licence: str = "",
        precision: str = "fp32",
        signature: dict[str, Any] | None = None,
        progress: Progress = lambda _: None,
    ) -> tuple[ModelManifest, bool]:
        """Import a file or a folder as model `name`; return its manifest and whether anything
        new was stored (False: these exact bytes were already that version).

        Without a version, the first 12 hex digits of the content digest are used. Files go
        up first and the manifest last, so an interrupted import never looks complete.
        """
        check_name(name)
        if precision not in PRECISIONS:
            raise ModelStoreError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if signature is not None and not isinstance(signature, dict):
            raise ModelStoreError("the signature must be a JSON object (inputs and outputs)")
        root = Path(path)
        files = []
        for rel, local in _files_of(root):
            digest, size = hash_file(local)
            files.append((ModelFile(_relative(rel), digest, size), local))
            progress(f"  hashed {rel} ({size / 1e6:.1f} MB)")
        model_files = tuple(f for f, _ in files)
        digest = ModelManifest(name, "-", model_files).sha256  # the version's content digest
        version = check_version(version or digest[:12])
        manifest = ModelManifest(
            name=name,
            version=version,
            files=model_files,
            source=source,
            licence=licence,
            precision=precision,
            signature=dict(signature or {}),
            imported_at=time.time(),
        )
        existing = self.find(name, version)
        if existing is not None:
            if existing.sha256 != manifest.sha256:
                raise ModelStoreError(
                    f"{name}@{version} already exists with other files; versions never change — "
                    "import these files under a new --version"
                )
            return existing, False
        for model_file, local in files:
            key = self._file_key(name, version, model_file.path)
            self.objects.put_file(key, local)
            progress(f"  stored {model_file.path}")
        body = json.dumps(manifest.to_json(), indent=2, sort_keys=True).encode()
        self.objects.put_bytes(f"{self._prefix(name, version)}/{MANIFEST}", body)
        return manifest, True

    # --- reading ----------------------------------------------------------------------------

    def find(self, name: str, version: str) -> ModelManifest | None:
        key = f"{self._prefix(check_name(name), check_version(version))}/{MANIFEST}"
        try:
            raw = self.objects.get_bytes(key)
        except ObjectNotFoundError:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            raise ModelStoreError(f"the manifest of {name}@{version} is not JSON") from None
        manifest = ModelManifest.from_json(data)
        if (manifest.name, manifest.version) != (name, version):
            raise ModelStoreError(f"the manifest stored for {name}@{version} names another model")
        return manifest

    def list(self, name: str | None = None) -> list[ModelManifest]:
        """Every complete version (with a manifest), by name then import time."""
        prefix = f"{PREFIX}/{check_name(name)}/" if name else f"{PREFIX}/"
        found = []
        for key in self.objects.list(prefix):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == MANIFEST:
                manifest = self.find(parts[1], parts[2])
                if manifest is not None:
                    found.append(manifest)
        return sorted(found, key=lambda m: (m.name, m.imported_at, m.version))

    def get(self, name: str, version: str | None = None) -> ModelManifest:
        """The named version, or the newest imported one; ModelStoreError if there is none."""
        if version is not None:
            manifest = self.find(name, version)
        else:
            versions = self.list(name)
            manifest = versions[-1] if versions else None
        if manifest is None:
            what = f"{name}@{version}" if version else name
            raise ModelStoreError(
                f"model {what} is not in the model store; import it with "
                f"`cameofarm models import PATH --name {name}"
                + (f" --version {version}`" if version else "`")
            )
        return manifest

    def verify(self, name: str, version: str | None = None) -> VerifyReport:
        """Re-hash every stored file of a version against its manifest."""
        manifest = self.get(name, version)
        checks = []
        with tempfile.TemporaryDirectory(prefix="cameofarm-verify-") as scratch:
            for f in manifest.files:
                key = self._file_key(manifest.name, manifest.version, f.path)
                local = Path(scratch) / "blob"
                try:
                    self.objects.get_file(key, local)
                except ObjectNotFoundError:
                    checks.append(FileCheck(f.path, "missing from the store"))
                    continue
                digest, size = hash_file(local)
                local.unlink()
                if size != f.size:
                    checks.append(FileCheck(f.path, f"size {size} bytes, manifest says {f.size}"))
                elif digest != f.sha256:
                    checks.append(
                        FileCheck(f.path, f"sha256 {digest[:16]}…, manifest says {f.sha256[:16]}…")
                    )
                else:
                    checks.append(FileCheck(f.path, None))
        return VerifyReport(manifest.name, manifest.version, tuple(checks))

    def remove(self, name: str, version: str) -> int:
        """Delete a version: its manifest first (so it is at once no longer offered), then its
        files. Return how many objects were removed."""
        self.get(name, version)
        prefix = self._prefix(name, version)
        self.objects.delete(f"{prefix}/{MANIFEST}")
        removed = 1
        for key in list(self.objects.list(f"{prefix}/")):
            self.objects.delete(key)
            removed += 1
        return removed

    def open_file(self, manifest: ModelManifest, model_file: ModelFile, dest: Path) -> Path:
        key = self._file_key(manifest.name, manifest.version, model_file.path)
        try:
            return self.objects.get_file(key, dest)
        except ObjectNotFoundError:
            raise ModelStoreError(
                f"model {manifest.name}@{manifest.version}: {model_file.path} is missing from "
                f"the store; check it with `cameofarm models verify {manifest.name}@"
                f"{manifest.version}` and import it again"
            ) from None


class ModelCache:
    """One node's copies of model files: one blob per sha256, each verified when fetched."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def has(self, manifest: ModelManifest) -> bool:
        return all(self._blob(f.sha256).is_file() for f in manifest.files)

    def materialize(
        self, store: ModelStore, name: str, version: str | None = None
    ) -> tuple[ModelManifest, Path]:
        """Make a version's files present here and return (manifest, folder holding them).

        A file already cached (by sha256) is not fetched again. A fetched file whose digest
        does not match the manifest is deleted and refused with ModelStoreError.
        """
        manifest = store.get(name, version)
        folder = self.root / manifest.name / manifest.version
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        for f in manifest.files:
            blob = self._blob(f.sha256)
            if not blob.is_file():
                self._fetch(store, manifest, f, blob)
            target = folder / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if not (target.is_file() and os.path.samefile(target, blob)):
                tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
                tmp.unlink(missing_ok=True)
                try:
                    os.link(blob, tmp)  # a hard link: the version folder costs no space
                except OSError:  # a file system without hard links
                    shutil.copyfile(blob, tmp)
                os.replace(tmp, target)
        return manifest, folder

    def _fetch(self, store: ModelStore, manifest: ModelManifest, f: ModelFile, blob: Path) -> None:
        fd, tmp_name = tempfile.mkstemp(dir=blob.parent, prefix=".tmp-")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            store.open_file(manifest, f, tmp)
            digest, size = hash_file(tmp)
            if digest != f.sha256 or size != f.size:
                raise ModelStoreError(
                    f"model {manifest.name}@{manifest.version}: {f.path} is corrupt in the store "
                    f"(sha256 {digest[:16]}…, {size} bytes; the manifest says {f.sha256[:16]}…, "
                    f"{f.size} bytes). Run `cameofarm models verify {manifest.name}@"
                    f"{manifest.version}` and import the model again"
                )
            os.replace(tmp, blob)
        finally:
            tmp.unlink(missing_ok=True)

    def blobs(self) -> Iterator[Path]:
        folder = self.root / "blobs"
        if folder.is_dir():
            yield from (p for p in folder.iterdir() if not p.name.startswith(".tmp-"))
