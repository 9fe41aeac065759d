"""On-disk cache of frozen text-encoder embeddings, so CLIP training never runs (or loads) the LLM.

Layout under ``root/<fingerprint>/``:

- ``shard-<id>.npy``: float32 ``(n, dim)`` embeddings (read memory-mapped),
- ``shard-<id>.keys.npy``: the ``n`` 32-hex-char keys of those rows,
- ``manifest.json``: fingerprint, dim and the list of committed shards. Written **last**.

Every file is written to a temporary name, fsynced and ``os.replace``d into place; a reader only opens
shards the manifest lists, so a killed writer leaves, at worst, unreferenced temp files that are never read.
A commit holds ``manifest.lock`` (a file lock) while it re-reads the manifest on disk and adds its shards, so
writers that commit concurrently (DDP ranks, two jobs filling one cache) never drop each other's shards.
A key is ``blake2b(instruction, text)``; the encoder fingerprint selects the directory. Changing the
encoder, its settings, the instruction or one character of a text therefore misses the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

MANIFEST = "manifest.json"
LOCK = "manifest.lock"
FORMAT_VERSION = 1
#: Disk bytes per cached row beyond the float32 embedding: the 32-byte key plus .npy headers amortised.
_ROW_OVERHEAD = 48
#: Free space kept beyond the estimate (the manifest, temp copies, other writers).
_SPACE_MARGIN = 64 << 20


class CacheDirectoryError(OSError):
    """The cache directory cannot take the embeddings (not creatable, not writable, or too little space)."""


def text_key(text: str, instruction: str | None) -> str:
    """Cache key of one (instruction, text) pair: blake2b-128 of the exact strings."""
    h = hashlib.blake2b(digest_size=16)
    h.update((instruction or "").encode("utf-8"))
    h.update(b"\x00")  # separator: ("ab", "c") and ("a", "bc") must differ
    h.update(text.encode("utf-8"))
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, write) -> None:
    """Write through ``write(fileobj)`` into a temp file in ``path``'s folder, fsync, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def shard_id(keys: list[str]) -> str:
    """Deterministic shard name from its keys, so every rank can name every other rank's shard."""
    h = hashlib.blake2b(digest_size=8)
    for k in keys:
        h.update(k.encode("ascii"))
    return h.hexdigest()


@dataclass
class _Shard:
    name: str
    rows: int


@dataclass
class TextEmbeddingCache:
    """A read/append handle on one fingerprint's cache directory.

    Args:
        root: cache root (``cache_dir``); the fingerprint sub-folder is created on first write.
        fingerprint: encoder identity + encoding settings (see ``TextTower.fingerprint``).
    """

    root: Path
    fingerprint: str
    dim: int | None = None
    _index: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    _arrays: list[np.ndarray] = field(default_factory=list, repr=False)
    _shards: list[_Shard] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.reload()

    @property
    def directory(self) -> Path:
        return self.root / self.fingerprint

    def _read_manifest(self) -> dict | None:
        """The manifest on disk if it is this fingerprint's (a foreign or outdated one counts as absent)."""
        manifest = self.directory / MANIFEST
        if not manifest.is_file():
            return None
        meta = json.loads(manifest.read_text())
        if meta.get("fingerprint") != self.fingerprint or meta.get("version") != FORMAT_VERSION:
            return None  # never mix embeddings across encoders
        return meta

    def reload(self) -> None:
        """Re-read the manifest (e.g. after another rank committed shards)."""
        self._index, self._arrays, self._shards = {}, [], []
        meta = self._read_manifest()
        if meta is None:
            return
        self.dim = int(meta["dim"])
        for i, shard in enumerate(meta["shards"]):
            emb = np.load(self.directory / f"shard-{shard['name']}.npy", mmap_mode="r")
            keys = np.load(self.directory / f"shard-{shard['name']}.keys.npy")
            if emb.shape != (shard["rows"], self.dim) or keys.shape != (shard["rows"],):
                raise ValueError(f"text cache {self.directory}: shard {shard['name']} does not match its manifest")
            self._arrays.append(emb)
            self._shards.append(_Shard(shard["name"], int(shard["rows"])))
            for row, key in enumerate(keys.tolist()):
                self._index[key.decode("ascii")] = (i, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def missing(self, keys: list[str]) -> list[str]:
        """Keys not in the cache, de-duplicated, in first-seen order."""
        seen: set[str] = set()
        out = []
        for k in keys:
            if k not in self._index and k not in seen:
                seen.add(k)
                out.append(k)
        return out

    def lookup(self, keys: list[str]) -> torch.Tensor:
        """``(len(keys), dim)`` float32 embeddings; ``KeyError`` naming the first missing key."""
        if self.dim is None:
            raise KeyError(f"text cache {self.directory} is empty")
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        for j, k in enumerate(keys):
            try:
                shard, row = self._index[k]
            except KeyError:
                raise KeyError(f"text {k} not in cache {self.directory}") from None
            out[j] = self._arrays[shard][row]
        return torch.from_numpy(out)

    def write_shard(self, keys: list[str], embeddings: torch.Tensor | np.ndarray) -> str:
        """Write one shard's files atomically (not yet visible: :meth:`commit` lists it). Returns its id."""
        emb = np.ascontiguousarray(np.asarray(embeddings.detach().cpu() if torch.is_tensor(embeddings)
                                              else embeddings, dtype=np.float32))
        if emb.ndim != 2 or emb.shape[0] != len(keys):
            raise ValueError(f"embeddings {emb.shape} do not match {len(keys)} keys")
        self.directory.mkdir(parents=True, exist_ok=True)
        name = shard_id(keys)
        key_arr = np.asarray(keys, dtype="S32")
        atomic_write_bytes(self.directory / f"shard-{name}.keys.npy", lambda f: np.save(f, key_arr))
        atomic_write_bytes(self.directory / f"shard-{name}.npy", lambda f: np.save(f, emb))
        return name

    def commit(self, names: list[str], reload: bool = True) -> None:
        """Add written shards to the manifest (atomic replace, written last) and reload.

        Holds the manifest lock and starts from the manifest on disk, not from this handle's last reload, so
        shards another writer committed meanwhile are kept. ``reload=False`` skips re-reading every shard's
        keys (a long fill commits often and reloads once at the end).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.directory / LOCK)):
            self._commit_locked(names)
        if reload:
            self.reload()

    def _commit_locked(self, names: list[str]) -> None:
        meta = self._read_manifest()
        if meta is not None and self.dim is None:
            self.dim = int(meta["dim"])
        shards = {s["name"]: int(s["rows"]) for s in (meta["shards"] if meta else [])}
        for name in names:
            if name in shards:
                continue
            emb = np.load(self.directory / f"shard-{name}.npy", mmap_mode="r")
            if self.dim is None:
                self.dim = int(emb.shape[1])
            elif emb.shape[1] != self.dim:
                raise ValueError(f"shard {name} has dim {emb.shape[1]}, cache has {self.dim}")
            shards[name] = int(emb.shape[0])
        meta = {"version": FORMAT_VERSION, "fingerprint": self.fingerprint, "dim": self.dim,
                "shards": [{"name": n, "rows": r} for n, r in shards.items()]}
        payload = json.dumps(meta, indent=1).encode()
        atomic_write_bytes(self.directory / MANIFEST, lambda f: f.write(payload))

    def ensure_room(self, rows: int, dim: int) -> None:
        """Fail before any encoding when the directory cannot be created or written, or lacks the space for
        ``rows`` more embeddings of ``dim`` floats (an LLM fill takes hours: find out now, not at the end)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".write-probe-"):
                pass
        except OSError as err:
            raise CacheDirectoryError(err.errno, f"text cache directory {self.directory} is not writable "
                                                 f"({err.strerror or err}); set text.cache_dir to a writable "
                                                 f"folder") from err
        needed = rows * (dim * 4 + _ROW_OVERHEAD) + _SPACE_MARGIN
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            raise CacheDirectoryError(28, f"text cache directory {self.directory} has {free / 2**20:.0f} MiB "
                                          f"free; {rows} embeddings of dim {dim} need about "
                                          f"{needed / 2**20:.0f} MiB")

    def add(self, keys: list[str], embeddings: torch.Tensor | np.ndarray, reload: bool = True) -> None:
        """Write a shard and commit it (see :meth:`commit`)."""
        if keys:
            self.commit([self.write_shard(keys, embeddings)], reload=reload)
