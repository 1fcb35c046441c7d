"""Shared assets: what a file needs besides its own bytes (a learned prior), named by id, identified by content.

An asset is an .npz archive (NumPy's zip of .npy arrays) of float32 and int32 arrays keyed 'collection/path'
plus one uint8 array 'meta', UTF-8 JSON with at least {"id": str, "model": family name}. The reader parses each
array's header and reads its raw bytes, refusing any other dtype, so no Python object is ever deserialised. Its digest is SHA-256 over the id, the meta record and every array's
key, dtype, shape and bytes in sorted key order, so it identifies the content whatever the zip's
timestamps. A .nerva file names the asset it was coded with by id and digest (FORMAT.md §17); the
reader looks for `<id>.npz` in the directories `search_path` lists and takes the one whose digest
matches, so a renamed, retrained or damaged prior is refused instead of decoding other weights.

Everything an archive claims is checked before it is used: at most MAX_ARRAYS arrays, MAX_ELEMENTS
elements in all, the dtypes above, a meta record under MAX_META bytes that parses as a JSON object.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from codec.bytesio import FormatError

MAX_ARRAYS = 4096
MAX_ELEMENTS = 1 << 26        # 256 MiB of float32: far above a prior (~0.1M numbers)
MAX_META = 1 << 20
DTYPES = (np.dtype("<f4"), np.dtype("<i4"))
ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
MAX_ID = 64
ENV = "NERVA_PRIORS"          # os.pathsep-separated directories searched before the shipped priors
SHIPPED = Path(__file__).resolve().parent.parent / "inr" / "priors"   # package data (inr/priors/*.npz)


@dataclasses.dataclass(frozen=True)
class Asset:
    id: str
    digest: bytes                  # 32 bytes
    arrays: dict                   # key -> read-only np.ndarray
    meta: dict
    path: Path | None = None
    size: int = 0                  # bytes of the archive on disk

    def collection(self, name: str) -> dict:
        """{path: array} of the arrays under 'name/'."""
        prefix = name + "/"
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}


def check_id(asset_id: str) -> str:
    if not (0 < len(asset_id) <= MAX_ID and set(asset_id) <= ID_CHARS and asset_id[0] not in ".-"):
        raise FormatError(f"asset id {asset_id[:MAX_ID]!r} must be 1-{MAX_ID} characters of a-z, 0-9, '-', '_', '.'")
    return asset_id


def digest_of(asset_id: str, arrays: dict, meta: dict) -> bytes:
    h = hashlib.sha256()
    h.update(asset_id.encode())
    h.update(json.dumps(meta, sort_keys=True).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.digest()


def save(path, asset_id: str, arrays: dict, meta: dict) -> Asset:
    """Writes the asset atomically (a temporary file renamed into place) and returns it as read back."""
    check_id(asset_id)
    meta = {**meta, "id": asset_id}
    arrays = {k: np.asarray(v, np.float32 if np.asarray(v).dtype.kind == "f" else np.int32) for k, v in arrays.items()}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8), **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; an asset is shared, so it gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return load(path)


def load(path) -> Asset:
    """Reads and checks an asset archive; FormatError (one line) for anything that is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FormatError(f"{path}: cannot read the asset ({e.strerror or e})") from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
            if len(names) > MAX_ARRAYS + 1:
                raise FormatError(f"{path}: an asset holds at most {MAX_ARRAYS} arrays, this one {len(names) - 1}")
            arrays, meta, elements = {}, None, 0
            for name in names:
                if not name.endswith(".npy"):
                    raise FormatError(f"{path}: unexpected member {name[:60]!r} in the asset")
                with z.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read_header(f)
                    n = int(np.prod(shape, dtype=np.int64))
                    elements += n
                    if elements > MAX_ELEMENTS:
                        raise FormatError(f"{path}: the asset's arrays hold more than {MAX_ELEMENTS} elements")
                    key = name[:-4]
                    if key == "meta":
                        if dtype != np.uint8 or len(shape) != 1 or n > MAX_META:
                            raise FormatError(f"{path}: the asset's meta record must be at most {MAX_META} bytes")
                    elif dtype not in DTYPES or fortran:
                        raise FormatError(f"{path}: array {key[:60]!r} has dtype {dtype}; assets hold float32 "
                                          "and int32")
                    raw = f.read(n * dtype.itemsize)
                    if len(raw) != n * dtype.itemsize:
                        raise FormatError(f"{path}: array {key[:60]!r} is truncated")
                a = np.frombuffer(raw, dtype).reshape(shape)
                if key == "meta":
                    meta = a
                else:
                    arrays[key] = a
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError) as e:
        raise FormatError(f"{path}: not a nerva asset ({type(e).__name__}: {str(e)[:80]})") from None
    if meta is None:
        raise FormatError(f"{path}: the asset has no meta record")
    try:
        meta = json.loads(meta.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FormatError(f"{path}: the asset's meta record is not JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("id"), str):
        raise FormatError(f"{path}: the asset's meta record has no id")
    asset_id = check_id(meta["id"])
    return Asset(asset_id, digest_of(asset_id, arrays, meta), arrays, meta, path, len(data))


def search_path(extra=()) -> list[Path]:
    """Where assets are looked for, first match wins: `extra` (files or directories, e.g. `--prior`), then
    $NERVA_PRIORS, then the priors shipped with nerva."""
    env = [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    return [Path(p) for p in extra] + env + [SHIPPED]


def find(asset_id: str, digest: bytes, extra=()) -> Asset:
    """The asset with this id and digest; FormatError naming both and where it looked if there is none."""
    check_id(asset_id)
    looked = []
    for place in search_path(extra):
        candidates = [place] if place.is_file() else [place / f"{asset_id}.npz"]
        for p in candidates:
            if not p.is_file():
                continue
            looked.append(str(p))
            try:
                asset = load(p)
            except FormatError:
                continue
            if asset.id == asset_id and asset.digest == digest:
                return asset
    where = ", ".join(looked) if looked else ", ".join(str(p) for p in search_path(extra))
    raise FormatError(f"the file was coded with prior {asset_id!r} (sha256 {digest.hex()[:16]}...), which is not "
                      f"in {where or 'any search directory'}; pass it with --prior PATH or put it in ${ENV}")
