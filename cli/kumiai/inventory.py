"""Load and check an inventory directory: consortium.yaml and towns/<id>.yaml.

Every problem is collected, not only the first, and each names the file, the field path and what is allowed.
Nothing here writes anything.
"""

from __future__ import annotations

import os
import reprlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kumiai.errors import InputError, Problem
from kumiai.models import Consortium, Site, Town, TownDefaults

# What a message quotes of the input: bounded, because the input may be huge or nested hundreds of levels deep.
_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, 60, 60


def shown(value: Any) -> str:
    """A short repr of an input value for a message."""
    return _repr.repr(value)


_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping gives the same key twice. Plain YAML keeps the last silently; a spec must not."""

    def __init__(self, key: Any, node: yaml.Node) -> None:
        super().__init__(problem=f"duplicate key {shown(key)}", problem_mark=node.start_mark)
        self.key = key


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` may be overridden by the keys beside it
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable: the base constructor reports it
            if duplicate:
                raise DuplicateKeyError(key, key_node)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


CONSORTIUM_FILE = "consortium.yaml"
TOWNS_DIR = "towns"


@dataclass(frozen=True)
class Inventory:
    """A validated consortium description."""

    root: Path
    consortium: Consortium
    towns: dict[str, Town]

    @property
    def primary_site(self) -> Site:
        return self.consortium.primary_site

    @property
    def dr_site(self) -> Site:
        return self.consortium.dr_site

    def town(self, town_id: str) -> Town:
        """The town with this id, or an input error that lists the known ids."""
        try:
            return self.towns[town_id]
        except KeyError:
            known = ", ".join(self.towns) or "(none)"
            raise InputError(
                Problem(str(self.root / TOWNS_DIR), "id", f"no town {town_id!r} in this inventory; known: {known}")
            ) from None

    def placement(self, town: Town) -> tuple[Site, Site]:
        """(site serving the town now, site holding its standby)."""
        if town.placement is None:
            return self.primary_site, self.dr_site
        return self.consortium.site(town.placement.primary), self.consortium.site(town.placement.dr)


def field_path(loc: Iterable[int | str]) -> str:
    """('systems', 0, 'segment') -> 'systems[0].segment'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _explain(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    kind = err["type"]
    msg = str(err["msg"])
    if kind == "missing":
        return "required field is missing"
    if kind == "int_type":
        return f"must be a whole number, written without quotes (got {shown(err.get('input'))})"
    if kind == "extra_forbidden":
        parent: Any = model
        for part in err["loc"][:-1]:
            if isinstance(part, str) and parent is not None:
                field = parent.model_fields.get(part) if hasattr(parent, "model_fields") else None
                ann = field.annotation if field else None
                parent = _model_of(ann)
        allowed = ", ".join(parent.model_fields) if parent is not None else "see the documentation"
        return f"unknown field; allowed fields are: {allowed}"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind not in ("value_error", "assertion_error") and "input" in err and not isinstance(err["input"], dict):
        msg += f" (got {shown(err['input'])})"
    return msg


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `Protection | None` or `list[System]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def problems_of(
    file: str, exc: ValidationError, model: type[BaseModel], *, skip: Callable[[Mapping[str, Any]], bool] | None = None
) -> list[Problem]:
    return [
        Problem(file, field_path(e["loc"]) or "(document)", _explain(e, model))
        for e in exc.errors()
        if skip is None or not skip(e)
    ]


def _defaultable_missing(err: Mapping[str, Any]) -> bool:
    """A field the consortium's defaults could have supplied is missing (used when those defaults are unreadable)."""
    return err["type"] == "missing" and bool(err["loc"]) and err["loc"][0] in TownDefaults.model_fields


def read_yaml(path: Path, display: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Parse one YAML file that must hold a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None, [Problem(display, "(document)", "is not UTF-8 text")]
    except OSError as exc:
        return None, [Problem(display, "(document)", f"cannot be read: {exc.strerror}")]
    try:
        data = yaml.load(text, Loader=_Loader)
    except DuplicateKeyError as exc:
        assert exc.problem_mark is not None
        line = exc.problem_mark.line + 1
        return None, [Problem(display, str(exc.key), f"is given twice (again at line {line}); give each field once")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)  # e.g. "expected a single document in the stream"
        if context:
            problem = f"{context}, {problem}"
        return None, [Problem(display, "(document)", f"YAML syntax error{where}: {problem}")]
    except Exception as exc:  # PyYAML's constructors raise plain errors on untrusted text
        # An explicit tag the value does not fit, e.g. `!!int id`, `!!int ` (IndexError) or `!!timestamp 2026-13-45`.
        return None, [Problem(display, "(document)", f"a value does not fit its YAML tag: {exc}")]
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        return None, [Problem(display, "(document)", f"must be a mapping of fields, but is {kind}")]
    return data, []


def _with_defaults(data: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(data)
    for key, value in defaults.items():
        if value is None:
            continue
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = {**value, **merged[key]}
    return merged


def _display(path: Path) -> str:
    # The file itself is not resolved: a symbolic link is named, not the file it points to.
    try:
        return str((path.parent.resolve() / path.name).relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_consortium(root: Path) -> tuple[Consortium | None, list[Problem]]:
    file = root / CONSORTIUM_FILE
    display = _display(file)
    if file.is_symlink():
        return None, [_symlink_problem(file)]
    if not file.is_file():
        return None, [Problem(display, "(document)", "file is missing: every inventory has a consortium.yaml")]
    data, problems = read_yaml(file, display)
    if data is None:
        return None, problems
    try:
        return Consortium.model_validate(data), []
    except ValidationError as exc:
        return None, problems_of(display, exc, Consortium)


def parse_town_file(path: Path) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The mapping a town file holds, unchecked (see load_town)."""
    return read_yaml(path, _display(path))


def load_town(
    path: Path, consortium: Consortium | None, *, data: dict[str, Any] | None = None
) -> tuple[Town | None, list[Problem]]:
    """Validate one town file (or already-parsed data for it) against the consortium's catalogue."""
    display = _display(path)
    if data is None:
        data, problems = parse_town_file(path)
        if data is None:
            return None, problems
    defaults = consortium.defaults.model_dump(mode="json", exclude_none=True) if consortium else {}
    catalogue = consortium.catalogue() if consortium else None
    problems = []
    stem_problem = (
        Problem(display, "id", f"must equal the file name {path.stem!r}, got {shown(data.get('id'))}")
        if isinstance(data.get("id"), str) and data["id"] != path.stem
        else None
    )
    try:
        town = Town.model_validate(_with_defaults(data, defaults), context={"catalogue": catalogue})
    except ValidationError as exc:
        # Without a readable consortium.yaml its defaults are unknown: a field they could supply is not a problem
        # of this file.
        skip = _defaultable_missing if consortium is None else None
        found = problems_of(display, exc, Town, skip=skip)
        if stem_problem and not any(p.field == "id" for p in found):
            found.append(stem_problem)
        return None, found
    if town.id != path.stem:
        problems.append(Problem(display, "id", f"must equal the file name {path.stem!r}, got {town.id!r}"))
    if consortium and town.placement:
        site_ids = [s.id for s in consortium.sites]
        for role in ("primary", "dr"):
            ref = getattr(town.placement, role)
            if ref not in site_ids:
                problems.append(
                    Problem(
                        display,
                        f"placement.{role}",
                        f"unknown site {ref!r}; sites are: {', '.join(site_ids)}",
                    )
                )
    return (None if problems else town), problems


def town_files(root: Path) -> list[Path]:
    """Every town file, symbolic links included (load_inventory refuses them)."""
    towns_dir = root / TOWNS_DIR
    if not towns_dir.is_dir():
        return []
    with os.scandir(towns_dir) as entries:
        # The directory entry tells a link from a file without a stat call per file.
        return sorted(
            towns_dir / e.name
            for e in entries
            if e.name.endswith((".yaml", ".yml")) and (e.is_symlink() or e.is_file(follow_symlinks=False))
        )


def _symlink_problem(path: Path) -> Problem:
    return Problem(
        _display(path),
        "(document)",
        "is a symbolic link; inventory files must be regular files (a link could make kumiai read, and quote in its "
        "messages, any file on the machine)",
    )


TownLoader = Callable[[Path, Consortium | None], tuple[Town | None, list[Problem]]]


def load_inventory(root: Path | str, *, town_loader: TownLoader | None = None) -> Inventory:
    """Load and check an inventory. Raises InputError listing every problem found.

    `town_loader` replaces `load_town` for each regular town file (e.g. a cache of parsed files that still
    validates each, see kumiai.towncache); symbolic links and the checks across files stay here."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            Problem(
                _display(root),
                "(inventory)",
                "is not a directory; pass --inventory PATH to a directory holding consortium.yaml and towns/",
            )
        )
    consortium, problems = load_consortium(root)
    towns: dict[str, Town] = {}
    # Owners are kept as paths and shown only in a message (resolving every path costs a re-plan of 1,741 towns
    # 0.1 s).
    code_owner: dict[str, Path] = {}
    id_owner: dict[str, Path] = {}
    for path in town_files(root):
        if path.is_symlink():
            problems.append(_symlink_problem(path))
            continue
        town, town_problems = (town_loader or load_town)(path, consortium)
        problems.extend(town_problems)
        if town is None:
            continue
        if town.id in id_owner:
            problems.append(
                Problem(_display(path), "id", f"duplicate id {town.id!r}, also in {_display(id_owner[town.id])}")
            )
            continue
        if town.code in code_owner:
            problems.append(
                Problem(
                    _display(path), "code", f"duplicate code {town.code}, also in {_display(code_owner[town.code])}"
                )
            )
        id_owner[town.id] = path
        code_owner.setdefault(town.code, path)
        towns[town.id] = town
    if problems:
        raise InputError(sorted(problems))
    assert consortium is not None  # no problems means the consortium loaded
    return Inventory(root=root, consortium=consortium, towns=towns)
