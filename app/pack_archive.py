"""Creating, exporting and installing domain packs as files.

* :func:`new_pack` scaffolds a pack from an existing one (``slmrag packs new NAME --from medical``).
* :func:`export_pack` writes one ``.tar.gz``: ``MANIFEST.json`` (every file with its sha256 and size),
  ``pack/`` (pack.yaml, prompts, optionally the corpus) and, on request, ``index/`` (``meta.sqlite`` and
  the current generation's vector files: ``vectors.<gen>.faiss``, plus ``vectors.<gen>.f16.npy`` and
  ``vectors.<gen>.ids.npy`` for an ivfpq index).
* :func:`install_pack` installs such an archive. An archive is untrusted input: nothing in it is ever
  imported, executed or unpickled, and it is refused as a whole (with the offending member named) if it
  holds anything unexpected: a path that is absolute or climbs out with ``..``, a link or device, a
  duplicate name, a file type outside :data:`ALLOWED_SUFFIXES` (so no ``.pkl``, ``.py``, ``.so``...),
  a member over the size limits, a file missing from the manifest or a manifest entry missing from the
  archive, or a checksum that does not match. Everything is extracted into temporary folders inside the
  packs folder and the index folder, validated there (``load_pack_dir``, SQLite schema, FAISS/rows
  agreement) and only then renamed into place, so a refused archive changes nothing.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from app.errors import ConfigError, IndexDamaged, InputError
from app.packs import PACK_FILE, Pack, discover, index_root, load_pack, load_pack_dir, packs_dir
from app.store import DB_NAME, IndexStore, file_sha256

FORMAT = "slmrag-pack"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
PACK_PREFIX = "pack"
INDEX_PREFIX = "index"

#: The only file types an archive may carry. Everything here is data that is parsed, never executed or
#: unpickled: adapters and trained filters travel as safetensors (a header and raw tensors, by design no
#: code) and GGUF (read by llama.cpp's own parser); there is deliberately no pickle, Python or native
#: library format in this list.
ALLOWED_SUFFIXES = frozenset(
    {".yaml", ".yml", ".j2", ".md", ".txt", ".html", ".htm", ".pdf", ".json", ".sqlite", ".faiss",
     ".safetensors", ".gguf"}
)
#: Suffixes that would be code or pickles if anything ever loaded them; named specially in errors.
DANGEROUS_SUFFIXES = frozenset(
    {".pkl", ".pickle", ".joblib", ".npy", ".npz", ".pt", ".pth", ".bin", ".ckpt", ".py", ".pyc", ".pyo",
     ".pyd", ".so", ".dll", ".dylib", ".sh", ".exe", ".pth", ".whl", ".egg"}
)
INDEX_FILES = re.compile(r"(meta\.sqlite|vectors\.[0-9]{1,12}\.(faiss|f16\.npy|ids\.npy))")
#: The one exception to DANGEROUS_SUFFIXES: an ivfpq index's exact vectors and ids, at exactly these names
#: under index/. They are read with np.load(allow_pickle=False) (an object array, the only way an .npy can
#: hold a pickle, is refused) and must be float16 / int64 of the index's size.
INDEX_NPY = re.compile(r"index/vectors\.[0-9]{1,12}\.(f16|ids)\.npy")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # the same rule as PackConfig.name

MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
MAX_MEMBERS = 10_000
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_PATH_CHARS = 512
#: Room for tar headers, pax records and padding on top of the members' own bytes when bounding how far
#: the decompressed stream may be read.
STREAM_OVERHEAD_BYTES = MAX_MEMBERS * 4096 + MAX_MANIFEST_BYTES + (16 << 20)


class ArchiveError(InputError):
    """A pack archive was refused or could not be written; the message names the file or member."""


# ---------------------------------------------------------------------------------------------- helpers
def validate_pack_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConfigError(
            f"'{name}' is not a valid pack name: use 1-64 characters of lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. 'cardiology' or 'my-contracts')."
        )
    return name


def _pack_exists(name: str) -> Path | None:
    target = packs_dir() / name
    if target.exists() or target.is_symlink():
        return target
    return discover().get(name)


def _set_yaml_name(text: str, name: str) -> str:
    """Change the top-level ``name:`` of pack.yaml, keeping the file's comments and layout."""
    new, n = re.subn(r"(?m)^name:[^\n]*$", f"name: {name}", text, count=1)
    if n == 1:
        return new
    data = yaml.safe_load(text) or {}
    data["name"] = name
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _mkdtemp_in(parent: Path, prefix: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    # A dot-folder without pack.yaml at its top is never picked up by discover() while we work in it.
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


# ---------------------------------------------------------------------------------------------- new
def new_pack(name: str, source: str | Path, *, with_corpus: bool = False, title: str | None = None) -> Path:
    """Scaffold ``packs_dir()/NAME`` from an existing pack; returns the new folder."""
    validate_pack_name(name)
    existing = _pack_exists(name)
    if existing is not None:
        raise ConfigError(
            f"A pack named '{name}' already exists at {existing}; choose another name "
            f"(or delete that folder first)."
        )
    src = load_pack(source)
    root = packs_dir()
    tmp = _mkdtemp_in(root, f".new-{name}-")
    try:
        staged = tmp / name
        corpus = src.corpus_path
        corpus_inside = _inside(corpus, src.path)

        def ignore(folder: str, names: list[str]) -> set[str]:
            skip = {n for n in names if n.startswith(".") or n == "__pycache__"}
            if not with_corpus and corpus_inside:
                skip |= {n for n in names if (Path(folder) / n).resolve() == corpus}
            return skip

        shutil.copytree(src.path, staged, symlinks=False, ignore=ignore)
        if not with_corpus and corpus_inside:
            (staged / src.config.corpus_dir).mkdir(parents=True, exist_ok=True)
        text = _set_yaml_name((src.path / PACK_FILE).read_text(encoding="utf-8"), name)
        if title:
            text, n = re.subn(r"(?m)^title:[^\n]*$", "title: " + json.dumps(title), text, count=1)
            if not n:
                text += "\ntitle: " + json.dumps(title) + "\n"
        (staged / PACK_FILE).write_text(text, encoding="utf-8")
        pack = load_pack_dir(staged)
        if pack.name != name:
            raise ConfigError(f"{staged / PACK_FILE}: could not set name to '{name}'")
        target = root / name
        os.rename(staged, target)  # atomic; fails if the target appeared meanwhile
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    path: Path
    files: list[dict]
    skipped: list[str] = field(default_factory=list)
    with_index: bool = False
    bytes: int = 0


class _HashingReader(io.RawIOBase):
    def __init__(self, fh):
        self.fh = fh
        self.sha = hashlib.sha256()
        self.n = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.sha.update(data)
        self.n += len(data)
        return data


def _pack_files(pack: Pack, with_corpus: bool) -> tuple[list[tuple[Path, str]], list[str]]:
    """(file, archive name) for everything exported from the pack folder, plus what was skipped and why."""
    files: list[tuple[Path, str]] = []
    skipped: list[str] = []
    corpus = pack.corpus_path
    if with_corpus and not _inside(corpus, pack.path):
        skipped.append(f"{corpus}: corpus_dir is outside the pack folder, so the corpus is not exported")
    for dirpath, dirs, names in os.walk(pack.path, followlinks=False):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirs):
            full = here / d
            if d.startswith(".") or d == "__pycache__":
                continue
            if full.is_symlink():
                skipped.append(f"{full}: symbolic link, not exported")
                continue
            if not with_corpus and full.resolve() == corpus:
                continue
            keep.append(d)
        dirs[:] = keep
        for n in sorted(names):
            full = here / n
            rel = full.relative_to(pack.path).as_posix()
            if n.startswith("."):
                continue
            if full.is_symlink() or not full.is_file():
                skipped.append(f"{full}: not a regular file, not exported")
                continue
            if full.suffix.lower() not in ALLOWED_SUFFIXES:
                skipped.append(f"{full}: file type '{full.suffix or '(none)'}' is not allowed in pack archives")
                continue
            files.append((full, f"{PACK_PREFIX}/{rel}"))
    return files, skipped


def _index_copy(index_dir: Path, staging: Path) -> tuple[list[tuple[Path, str]], dict]:
    """A consistent copy of the current index generation (see :meth:`IndexStore.copy_to`)."""
    store = IndexStore(index_dir)
    if not store.exists():
        raise ArchiveError(
            f"Pack has no index at {index_dir}; build it first with: slmrag ingest PATH --pack NAME "
            "(or export without --with-index)."
        )
    try:
        generation, embedder = store.copy_to(staging)
    except IndexDamaged as exc:
        raise ArchiveError(str(exc)) from exc
    copy = IndexStore(staging)
    files = [(copy.db_path, f"{INDEX_PREFIX}/{DB_NAME}")]
    files += [(vec, f"{INDEX_PREFIX}/{vec.name}") for vec in copy.generation_files(generation, copy.index_info()["kind"])]
    return files, {"generation": generation, "embedder": embedder}


def _tarinfo(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def export_pack(name_or_path: str | Path, dest: str | Path, *, with_index: bool = False,
                with_corpus: bool = True, overwrite: bool = False) -> ExportResult:
    """Write a pack (and optionally its built index) to one ``.tar.gz`` with a checksummed manifest."""
    pack = load_pack(name_or_path)
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not overwrite:
        raise ArchiveError(f"{dest} already exists; choose another file name or pass --force to overwrite it.")
    if dest.is_dir():
        raise ArchiveError(f"{dest} is a folder; give a file name such as {pack.name}.slmrag.tar.gz")
    dest.parent.mkdir(parents=True, exist_ok=True)
    files, skipped = _pack_files(pack, with_corpus)
    with tempfile.TemporaryDirectory(prefix=".slmrag-export-") as staging_dir:
        staging = Path(staging_dir)
        index_info = None
        if with_index:
            index_files, index_info = _index_copy(pack.index_dir, staging)
            files += index_files
        entries: list[dict] = []
        total = 0
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
                for path, arcname in files:
                    st = path.stat()
                    if st.st_size > MAX_FILE_BYTES:
                        raise ArchiveError(f"{path}: {st.st_size} bytes is over the per-file limit of "
                                           f"{MAX_FILE_BYTES} bytes for pack archives; remove it from the pack.")
                    total += st.st_size
                    if total > MAX_TOTAL_BYTES:
                        raise ArchiveError(f"the pack is over the archive size limit of {MAX_TOTAL_BYTES} bytes "
                                           f"(reached at {path}); export without the corpus or index.")
                    with path.open("rb") as fh:
                        reader = _HashingReader(fh)
                        tar.addfile(_tarinfo(arcname, st.st_size, st.st_mtime), reader)
                    if reader.n != st.st_size:
                        raise ArchiveError(f"{path} changed while it was exported; try again.")
                    entries.append({"path": arcname, "sha256": reader.sha.hexdigest(), "size": st.st_size})
                manifest = {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "name": pack.name,
                    "title": pack.config.title,
                    "version": pack.config.version,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "with_index": bool(with_index),
                    "index": index_info,
                    "files": entries,
                }
                data = json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8")
                tar.addfile(_tarinfo(MANIFEST, len(data), time.time()), io.BytesIO(data))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    return ExportResult(dest, entries, skipped, with_index, dest.stat().st_size)


# ---------------------------------------------------------------------------------------------- install
@dataclass
class InstallResult:
    name: str
    path: Path
    index_dir: Path | None
    files: int
    replaced: bool = False
    notes: list[str] = field(default_factory=list)


def _refuse(archive: Path, member: str, why: str) -> ArchiveError:
    return ArchiveError(f"{archive}: refused member '{member}': {why}. Nothing was installed.")


def _check_name(archive: Path, name: str) -> str:
    """Return the member's normalised POSIX name, or raise naming it."""
    shown = name.encode("unicode_escape").decode("ascii")[:200]
    if not name or len(name) > MAX_PATH_CHARS:
        raise _refuse(archive, shown, "empty or overlong path")
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise _refuse(archive, shown, "control characters in the path")
    if "\\" in name:
        raise _refuse(archive, shown, "backslash in the path (archives use '/' only)")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise _refuse(archive, shown, "absolute path (members must be relative to the archive)")
    parts = name.rstrip("/").split("/")
    if any(p == ".." for p in parts):
        raise _refuse(archive, shown, "path traversal ('..' would escape the packs folder)")
    if any(p in ("", ".") for p in parts):
        raise _refuse(archive, shown, "path with empty or '.' components")
    return "/".join(parts)


def _check_kind(archive: Path, name: str, member: tarfile.TarInfo) -> None:
    if member.issym():
        raise _refuse(archive, name, f"symbolic link (to '{member.linkname}'); links are not allowed")
    if member.islnk():
        raise _refuse(archive, name, f"hard link (to '{member.linkname}'); links are not allowed")
    if member.ischr() or member.isblk():
        raise _refuse(archive, name, "device file; only regular files are allowed")
    if member.isfifo():
        raise _refuse(archive, name, "FIFO; only regular files are allowed")
    if member.issparse():
        raise _refuse(archive, name, "sparse file; only regular files are allowed")
    if not (member.isreg() or member.isdir()):
        raise _refuse(archive, name, f"unsupported member type {member.type!r}; only regular files are allowed")


def _check_suffix(archive: Path, name: str) -> None:
    if INDEX_NPY.fullmatch(name):
        return
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in DANGEROUS_SUFFIXES:
        raise _refuse(archive, name, f"'{suffix}' files (pickles, code, native libraries, model weights) are "
                                     "never installed from an archive")
    if suffix not in ALLOWED_SUFFIXES:
        allowed = " ".join(sorted(ALLOWED_SUFFIXES))
        raise _refuse(archive, name, f"file type '{suffix or '(none)'}' is not allowed (allowed: {allowed})")


def _check_place(archive: Path, name: str) -> None:
    if name == MANIFEST:
        return
    top, _, rest = name.partition("/")
    if top == PACK_PREFIX and rest:
        return
    if top == INDEX_PREFIX and rest:
        if not INDEX_FILES.fullmatch(rest):
            raise _refuse(archive, name, "only index/meta.sqlite and the vector files of one generation "
                                         "(vectors.<generation>.faiss, .f16.npy, .ids.npy) may be in index/")
        return
    raise _refuse(archive, name, f"unexpected location; members must be {MANIFEST}, pack/... or index/...")


def _read_manifest(archive: Path, tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict:
    if member.size > MAX_MANIFEST_BYTES:
        raise _refuse(archive, MANIFEST, f"{member.size} bytes is over the manifest limit of {MAX_MANIFEST_BYTES}")
    fh = tar.extractfile(member)
    try:
        manifest = json.loads(fh.read(MAX_MANIFEST_BYTES + 1).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(archive, MANIFEST, f"not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _refuse(archive, MANIFEST, f"not a slmrag pack manifest (format must be '{FORMAT}')")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise _refuse(archive, MANIFEST, f"format_version {manifest.get('format_version')!r} is not supported "
                                         f"(this slmrag reads version {FORMAT_VERSION}); upgrade slmrag")
    files = manifest.get("files")
    if not isinstance(files, list):
        raise _refuse(archive, MANIFEST, "'files' must be a list")
    for i, entry in enumerate(files):
        ok = (isinstance(entry, dict) and isinstance(entry.get("path"), str)
              and isinstance(entry.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
              and isinstance(entry.get("size"), int) and not isinstance(entry.get("size"), bool)
              and entry["size"] >= 0)
        if not ok:
            raise _refuse(archive, MANIFEST, f"files[{i}] needs path, sha256 (64 hex digits) and size (bytes)")
    return manifest


def _validate_index(archive: Path, index_tmp: Path, vector_files: list[str]) -> str:
    """Refuse an index whose SQLite schema is not exactly slmrag's, or whose vectors and rows disagree;
    returns the embedder it was built with."""
    store = IndexStore(index_tmp)
    if not store.exists():
        raise _refuse(archive, f"{INDEX_PREFIX}/{DB_NAME}", "an index needs meta.sqlite")
    try:
        generation, embedder, kind = store.validate_foreign()
    except IndexDamaged as exc:
        raise _refuse(archive, f"{INDEX_PREFIX}/{DB_NAME}", str(exc)) from exc
    expected = sorted(f.name for f in store.generation_files(generation, kind))
    if sorted(vector_files) != expected:
        raise _refuse(archive, f"{INDEX_PREFIX}/", f"the index records generation {generation}, so it must hold "
                                                   f"exactly {expected or 'no vector file'}, not {sorted(vector_files)}")
    problems = store.check()
    if problems:
        text = "; ".join(problems).replace(str(index_tmp) + os.sep, f"{INDEX_PREFIX}/")
        raise _refuse(archive, f"{INDEX_PREFIX}/", "index is inconsistent: " + text)
    return embedder


def _relink_documents(index_tmp: Path, corpus_final: Path, corpus_tmp: Path) -> int:
    """Point index documents at the installed copies of the corpus files (same name and sha256), so a
    later ``slmrag ingest`` of the installed corpus sees them as unchanged instead of adding duplicates."""
    if not corpus_tmp.is_dir():
        return 0
    by_key: dict[tuple[str, str], Path] = {}
    for f in corpus_tmp.rglob("*"):
        if f.is_file():
            by_key.setdefault((f.name, file_sha256(f)), corpus_final / f.relative_to(corpus_tmp))
    return IndexStore(index_tmp).relink_documents(by_key)


def _stream_overhead() -> int:
    return STREAM_OVERHEAD_BYTES


class _BoundedStream(io.RawIOBase):
    """A read-only, seekable view of the (decompressed) tar stream that refuses to go past ``limit``."""

    def __init__(self, raw, limit: int, archive: Path):
        self.raw = raw
        self.limit = limit
        self.archive = archive

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _over(self) -> ArchiveError:
        return ArchiveError(f"{self.archive}: the archive inflates to more than {self.limit} bytes; refused, "
                            "nothing was installed.")

    def read(self, size: int = -1) -> bytes:
        room = self.limit - self.raw.tell()
        if room < 0:
            raise self._over()
        want = room + 1 if size is None or size < 0 else min(size, room + 1)
        data = self.raw.read(want)
        if self.raw.tell() > self.limit:
            raise self._over()
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0 and pos > self.limit:
            raise self._over()
        return self.raw.seek(pos, whence)

    def tell(self) -> int:
        return self.raw.tell()


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, limit: int) -> tuple[str, int]:
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, 0o644)
    h = hashlib.sha256()
    n = 0
    src = tar.extractfile(member)
    with os.fdopen(fd, "wb") as out:
        while True:
            block = src.read(1 << 20)
            if not block:
                break
            n += len(block)
            if n > limit:
                break
            h.update(block)
            out.write(block)
    return h.hexdigest(), n


def install_pack(archive: str | Path, *, force: bool = False, max_file_bytes: int = MAX_FILE_BYTES,
                 max_total_bytes: int = MAX_TOTAL_BYTES) -> InstallResult:
    """Verify and install a pack archive into ``packs_dir()`` (and its index into ``index_root()``)."""
    archive = Path(archive).expanduser().resolve()
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such file; give the path of a pack archive (.tar.gz).")
    if archive.stat().st_size > max_total_bytes + _stream_overhead():
        raise ArchiveError(f"{archive}: {archive.stat().st_size} bytes is over the archive size limit; "
                           "nothing was installed.")
    with archive.open("rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    raw = gzip.open(archive, "rb") if gzipped else archive.open("rb")
    try:
        # Decompressed bytes are bounded too, so a small archive cannot inflate without limit (tar headers,
        # pax records and members are all read through this stream).
        tar = tarfile.open(fileobj=_BoundedStream(raw, max_total_bytes + _stream_overhead(), archive), mode="r:")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raw.close()
        raise ArchiveError(f"{archive}: not a readable pack archive (.tar.gz) ({exc}).") from exc
    pack_tmp: Path | None = None
    index_tmp: Path | None = None
    try:
        with tar:
            # 1. Headers only: every member is checked before a single byte is written.
            members: dict[str, tarfile.TarInfo] = {}
            total = 0
            try:
                for count, member in enumerate(tar, 1):
                    if count > MAX_MEMBERS:
                        raise _refuse(archive, member.name, f"more than {MAX_MEMBERS} members")
                    name = _check_name(archive, member.name)
                    _check_kind(archive, name, member)
                    try:  # the standard library's own safety filter, as a second opinion
                        tarfile.data_filter(member, str(packs_dir()))
                    except tarfile.FilterError as exc:
                        raise _refuse(archive, name, f"unsafe member ({exc})") from exc
                    if member.isdir():
                        continue
                    _check_place(archive, name)
                    _check_suffix(archive, name)
                    if name in members:
                        raise _refuse(archive, name, "appears twice in the archive")
                    if member.size > max_file_bytes:
                        raise _refuse(archive, name, f"{member.size} bytes is over the per-file limit of {max_file_bytes}")
                    total += member.size
                    if total > max_total_bytes:
                        raise _refuse(archive, name, f"the archive's files add up to more than the limit of "
                                                     f"{max_total_bytes} bytes")
                    members[name] = member
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                raise ArchiveError(f"{archive}: the archive is damaged or truncated ({exc}); nothing was installed.") from exc

            # 2. The manifest must list exactly the archive's files, with matching sizes.
            if MANIFEST not in members:
                raise ArchiveError(f"{archive}: no {MANIFEST}; this is not a slmrag pack archive "
                                   "(make one with: slmrag packs export NAME FILE). Nothing was installed.")
            manifest = _read_manifest(archive, tar, members[MANIFEST])
            listed: dict[str, dict] = {}
            for entry in manifest["files"]:
                path = _check_name(archive, entry["path"])
                if path in listed or path == MANIFEST:
                    raise _refuse(archive, MANIFEST, f"lists '{path}' twice (or lists itself)")
                listed[path] = entry
            files = {n: m for n, m in members.items() if n != MANIFEST}
            for name in sorted(set(files) - set(listed)):
                raise _refuse(archive, name, f"not listed in {MANIFEST}")
            for name in sorted(set(listed) - set(files)):
                raise _refuse(archive, name, f"listed in {MANIFEST} but missing from the archive")
            for name, member in files.items():
                if member.size != listed[name]["size"]:
                    raise _refuse(archive, name, f"size {member.size} does not match the manifest's {listed[name]['size']}")
            if f"{PACK_PREFIX}/{PACK_FILE}" not in files:
                raise _refuse(archive, f"{PACK_PREFIX}/{PACK_FILE}", "missing; a pack archive needs pack.yaml")

            # 3. Extract into temporary folders next to the destinations, verifying every checksum.
            pack_tmp = _mkdtemp_in(packs_dir(), ".install-")
            has_index = any(n.startswith(INDEX_PREFIX + "/") for n in files)
            if has_index:
                index_tmp = _mkdtemp_in(index_root(), ".install-")
            staged_pack = pack_tmp / "pack"
            staged_index = index_tmp / "index" if index_tmp else None
            staged_pack.mkdir()
            if staged_index is not None:
                staged_index.mkdir()
            for name in files:  # archive order: the decompressed stream is read forwards, once
                top, _, rest = name.partition("/")
                base = staged_pack if top == PACK_PREFIX else staged_index
                target = base.joinpath(*rest.split("/"))
                if not _inside(target, base):
                    raise _refuse(archive, name, "path escapes the install folder")
                try:
                    digest, n = _write_member(tar, files[name], target, files[name].size)
                except (tarfile.TarError, EOFError, zlib.error) as exc:
                    raise ArchiveError(f"{archive}: damaged while reading '{name}' ({exc}); nothing was installed.") from exc
                except OSError as exc:
                    raise _refuse(archive, name, f"cannot be written ({exc.strerror or exc}); it clashes with "
                                                 "another member's path") from exc
                if n != listed[name]["size"] or digest != listed[name]["sha256"]:
                    raise _refuse(archive, name, "checksum mismatch (sha256 differs from the manifest; the archive "
                                                 "is corrupt or was modified)")

        # 4. Validate what was extracted, exactly as slmrag will load it.
        try:
            pack = load_pack_dir(staged_pack)
        except ConfigError as exc:
            where = str(exc).replace(str(staged_pack) + os.sep, f"{PACK_PREFIX}/")  # name files as in the archive
            raise ArchiveError(f"{archive}: the pack inside is not valid, nothing was installed:\n{where}") from exc
        name = validate_pack_name(pack.name)
        if manifest.get("name") not in (None, name):
            raise _refuse(archive, MANIFEST, f"names pack '{manifest.get('name')}' but pack.yaml names '{name}'")
        if not _inside(pack.corpus_path, staged_pack):
            raise _refuse(archive, f"{PACK_PREFIX}/{PACK_FILE}",
                          f"corpus_dir '{pack.config.corpus_dir}' points outside the pack folder")
        target = packs_dir() / name
        index_target = index_root() / name
        notes: list[str] = []
        existing = _pack_exists(name)
        if existing is not None and not force:
            how = ("pass --force to replace it" if _inside(existing, packs_dir()) else
                   f"pass --force to install it anyway into {packs_dir()}, where it takes precedence")
            raise ArchiveError(f"A pack named '{name}' already exists at {existing}; {how}. Nothing was installed.")
        pack.corpus_path.mkdir(parents=True, exist_ok=True)  # an empty corpus folder is not archived
        if staged_index is not None:
            vectors = [p.name for p in staged_index.iterdir() if p.name.startswith("vectors.")]
            built_with = _validate_index(archive, staged_index, vectors)
            if built_with and built_with != pack.config.embedder.model:
                raise _refuse(archive, f"{INDEX_PREFIX}/", f"the index was built with embedder '{built_with}' but the "
                                                           f"pack uses '{pack.config.embedder.model}'")
            if (index_target.exists() or index_target.is_symlink()) and not force:
                raise ArchiveError(f"An index for '{name}' already exists at {index_target}; pass --force to "
                                   "replace it with the archive's index. Nothing was installed.")
            relinked = _relink_documents(staged_index, target / pack.config.corpus_dir,
                                         staged_pack / pack.config.corpus_dir)
            if relinked:
                notes.append(f"{relinked} indexed documents point at the installed corpus")
        elif index_target.exists():
            notes.append(f"kept the existing index at {index_target}; delete it if it belongs to another pack")

        # 5. Move into place: rename is atomic; a replaced folder is kept aside until both moves succeed.
        replaced = False
        aside: list[tuple[Path, Path]] = []
        moved: list[Path] = []
        try:
            for staged, final, tmpdir in ((staged_pack, target, pack_tmp), (staged_index, index_target, index_tmp)):
                if staged is None:
                    continue
                if final.exists() or final.is_symlink():
                    old = tmpdir / "previous"
                    os.rename(final, old)
                    aside.append((old, final))
                    replaced = True
                os.rename(staged, final)
                moved.append(final)
        except OSError as exc:
            for final in moved:
                with contextlib.suppress(OSError):
                    shutil.rmtree(final)
            for old, final in aside:
                with contextlib.suppress(OSError):
                    os.rename(old, final)
            raise ArchiveError(f"{archive}: could not move the pack into place ({exc}); nothing was installed.") from exc
        return InstallResult(name, target, index_target if staged_index is not None else None, len(files),
                             replaced, notes)
    finally:
        raw.close()
        for tmpdir in (pack_tmp, index_tmp):
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)

