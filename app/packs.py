"""Domain packs: discovery, loading and validation.

A pack is a folder with ``pack.yaml`` (validated by :class:`app.settings.PackConfig`), prompt templates
and a starter corpus. Packs are found in the packs folder (:func:`packs_dir`), among the built-in packs
(:func:`builtin_packs_dir`: ``domains/`` of a checkout, or the copy inside the wheel), in the folders listed in
``SLMRAG_PACKS_PATH``, and in Python packages that register the ``slmrag.packs`` entry point group (the
entry point's value names a package whose folder holds pack folders, e.g. ``mypkg.packs``; the folder is
located with importlib.resources, nothing in it is imported or executed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from app.env import checkout_root, data_dir
from app.errors import ConfigError, PackNotFound
from app.prompts import PromptSet, load_prompts
from app.settings import PackConfig

PACK_FILE = "pack.yaml"
ENTRY_POINT_GROUP = "slmrag.packs"


def builtin_packs_dir() -> Path:
    """The built-in packs (medical, legal, finance): ``domains/`` of a checkout, else the copy the wheel
    ships inside the ``app`` package (pyproject.toml maps ``domains/`` to ``app/domains``)."""
    root = checkout_root()
    return root / "domains" if root else Path(__file__).resolve().parent / "domains"


def packs_dir() -> Path:
    """The folder new and installed packs are written to: ``$SLMRAG_PACKS_DIR``, else ``domains/`` of a
    checkout, else the user's data folder (an installed package is no place to write)."""
    value = os.environ.get("SLMRAG_PACKS_DIR")
    if value:
        return Path(value).expanduser().resolve()
    root = checkout_root()
    return root / "domains" if root else data_dir() / "packs"


def index_root() -> Path:
    """The folder that holds one index folder per pack: ``$SLMRAG_INDEX_DIR``, else ``indexes/`` of a
    checkout, else the user's data folder."""
    value = os.environ.get("SLMRAG_INDEX_DIR")
    if value:
        return Path(value).expanduser().resolve()
    root = checkout_root()
    return root / "indexes" if root else data_dir() / "indexes"


def _search_dirs() -> list[Path]:
    dirs = [packs_dir(), builtin_packs_dir()]
    for part in os.environ.get("SLMRAG_PACKS_PATH", "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part).expanduser().resolve())
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        # Only the *location* of the package is used; ``ep.load()`` would run its code, which a pack must
        # never need. find_spec does import parent packages, so the entry point should name a plain data
        # package (an empty __init__.py).
        try:
            dirs.append(Path(str(resources.files(ep.value))))
        except (ModuleNotFoundError, TypeError):
            continue
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


@dataclass
class Pack:
    config: PackConfig
    path: Path
    prompts: PromptSet
    index_dir_override: Path | None = field(default=None, repr=False)
    expansions: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def index_dir(self) -> Path:
        if self.index_dir_override is not None:
            return self.index_dir_override
        return index_root() / self.name

    @property
    def corpus_path(self) -> Path:
        return (self.path / self.config.corpus_dir).resolve()

    @property
    def disclaimer(self) -> str:
        return self.prompts.disclaimer.strip()

    def with_index_dir(self, index_dir: Path | str | None) -> "Pack":
        if index_dir is None:
            return self
        return Pack(self.config, self.path, self.prompts, Path(index_dir).expanduser().resolve(), self.expansions)


def format_validation_error(exc: ValidationError, file: Path) -> str:
    lines = [f"{file} is not a valid pack:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  - {loc}: {err['msg']}")
    return "\n".join(lines)


def load_pack_dir(path: Path) -> Pack:
    """Load and fully validate one pack folder; raises ConfigError naming the file and field."""
    path = Path(path).expanduser().resolve()
    file = path / PACK_FILE
    if not file.is_file():
        raise ConfigError(f"{path} has no {PACK_FILE}; a pack folder needs one (see README, 'Pack format').")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of settings, got {type(raw).__name__}")
    try:
        config = PackConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, file)) from exc
    prompts = load_prompts(path, config.prompts.model_dump())
    expansions = load_expansions(path, config.retrieval.expansions) if config.retrieval.expansions else {}
    return Pack(config=config, path=path, prompts=prompts, expansions=expansions)


MAX_EXPANSIONS = 2000


def load_expansions(pack_dir: Path, rel: str) -> dict[str, str]:
    """The pack's query-expansion table (``retrieval.expansions``): a YAML mapping of phrase -> words."""
    file = (pack_dir / rel).resolve()
    where = f"{pack_dir / PACK_FILE}: retrieval.expansions"
    if not file.is_relative_to(pack_dir):
        raise ConfigError(f"{where}: '{rel}' points outside the pack folder; give a path inside it.")
    if not file.is_file():
        raise ConfigError(f"{where}: file not found: {file}")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ConfigError(f"{file}: must be a mapping of phrase: words (both text), e.g. 'quick ratio: current "
                          "assets current liabilities'.")
    if len(raw) > MAX_EXPANSIONS:
        raise ConfigError(f"{file}: {len(raw)} entries, over the limit of {MAX_EXPANSIONS}.")
    return {" ".join(k.lower().split()): " ".join(v.split()) for k, v in raw.items() if k.strip() and v.strip()}


def discover() -> dict[str, Path]:
    """Map pack name -> folder, first found wins (user packs shadow built-in ones of the same name)."""
    found: dict[str, Path] = {}
    for root in _search_dirs():
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if (child / PACK_FILE).is_file():
                try:
                    raw = yaml.safe_load((child / PACK_FILE).read_text(encoding="utf-8"))
                    name = raw.get("name") if isinstance(raw, dict) else None
                except (yaml.YAMLError, OSError, UnicodeDecodeError):
                    name = None
                found.setdefault(str(name or child.name), child)
    return found


def list_packs() -> list[str]:
    return sorted(discover())


def writable_pack(pack: Pack) -> Pack:
    """``pack``, if slmrag may change its folder (train its adapter or filter, store a threshold).

    A built-in pack of an installed wheel lives inside the package: changing it there would be lost on the
    next upgrade (or fail for want of permission), so the user is told to make an own copy first.
    """
    if checkout_root() is None and pack.path.is_relative_to(builtin_packs_dir().resolve()):
        raise ConfigError(
            f"'{pack.name}' is a built-in pack of the installed slmrag ({pack.path}) and is not changed in "
            f"place. Make your own copy and use it instead: slmrag packs new my-{pack.name} --from {pack.name} "
            "--with-corpus"
        )
    return pack


def load_pack(name_or_path: str | Path, index_dir: Path | str | None = None) -> Pack:
    candidate = Path(name_or_path).expanduser()
    if (candidate / PACK_FILE).is_file():
        return load_pack_dir(candidate).with_index_dir(index_dir)
    available = discover()
    if str(name_or_path) not in available:
        names = ", ".join(sorted(available)) or "(none)"
        raise PackNotFound(
            f"No pack named '{name_or_path}'. Available packs: {names}. "
            f"Create one with: slmrag packs new {name_or_path} --from medical"
        )
    return load_pack_dir(available[str(name_or_path)]).with_index_dir(index_dir)
