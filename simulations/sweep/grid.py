"""A grid file, parsed and validated into the cells of a sweep (:class:`Sweep`, :func:`load_grid`).

A grid file has up to six tables (see ``simulations/grids/`` for ready ones)::

    [sweep]                 # optional: name, description, cpus-per-client, cell-timeout (seconds, 0 = none)
    [base]                  # settings every cell shares (any RunConfig key)
    [grid]                  # key = [values, ...]; the cells are the product of all lists
    [[cells]]               # extra cells over [base]: label, runner ("simulate" | "flower-dp"), settings;
                            # list values expand, so `seed = [0, 1, 2]` gives three cells
    [[skip]]                # a rule: skip grid cells whose settings match every key (value or list of values)
    [audit]                 # optional: after the cells, one leakage audit (``fedcompress audit`` settings;
                            # an empty table takes the defaults) into DIR/audit/, shown by the report

Meaningless combinations collapse: with ``dp = "none"`` every privacy setting returns to its default, with
``dp = "sample"`` the client-level ones do, and cells that become identical run once. Every cell is validated
by ``RunConfig`` (and by its runner, :func:`~simulations.sweep.cell.check_runner_config`) before anything runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError
from simulations.sweep.cell import RUNNERS, check_runner_config
from simulations.sweep.records import cell_id

__all__ = ["AUDIT_DIR", "Cell", "Sweep", "load_grid"]

_TABLES = ("sweep", "base", "grid", "cells", "skip", "audit")
AUDIT_DIR = "audit"
_SWEEP_KEYS = {"name": str, "description": str, "cpus-per-client": float, "cell-timeout": float}
_PRIVATE_KEYS = (
    "dp-noise",
    "pre-noise",
    "target-epsilon",
    "noise-multiplier",
    "clip-norm",
    "delta",
    "accountant",
    "max-epsilon",
    "dp-randomness",
)
_CLIENT_LEVEL_KEYS = ("dp-noise", "pre-noise")
_SWEEP_OWNED = ("out-dir", "resume")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One federation of a sweep: its stable id, a readable label, the runner and the validated settings."""

    id: str
    label: str
    runner: str
    config: RunConfig

    def as_mapping(self) -> dict[str, Any]:
        """JSON-safe form (what ``cell.json`` and the store hold)."""
        return {"id": self.id, "label": self.label, "runner": self.runner, "config": self.config.to_dict()}


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A parsed grid file: its cells in run order and the options from ``[sweep]``."""

    name: str
    description: str
    cells: tuple[Cell, ...]
    cpus_per_client: float = 1.0
    cell_timeout: float = 0.0
    skipped_by_rule: int = 0
    collapsed: int = 0
    audit: Mapping[str, Any] | None = None  # validated ``[audit]`` settings (kebab-case), or no audit


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _table(data: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise _fail(where, f"[{name}] must be a table of key = value")
    return dict(value)


def _check_setting_keys(values: Mapping[str, Any], where: str) -> None:
    known = set(RunConfig.keys())
    for key in values:
        name = str(key).replace("_", "-")
        if name in _SWEEP_OWNED:
            raise _fail(where, f"setting {key!r} is chosen by the sweep (one folder per cell); remove it")
        if name not in known:
            raise _fail(where, f"unknown setting {key!r}; allowed settings: {', '.join(RunConfig.keys())}")


def _sweep_options(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    options = _table(data, "sweep", where)
    for key, value in options.items():
        if key not in _SWEEP_KEYS:
            raise _fail(where, f"unknown [sweep] key {key!r}; allowed: {', '.join(_SWEEP_KEYS)}")
        kind = _SWEEP_KEYS[key]
        if kind is float and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise _fail(where, f"[sweep] {key!r} must be a number >= 0, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise _fail(where, f"[sweep] {key!r} must be a string, got {value!r}")
    return options


def _axes(values: Mapping[str, Any], where: str, *, lists_only: bool) -> list[tuple[str, list[Any]]]:
    axes = []
    for key, value in values.items():
        if isinstance(value, list):
            if not value:
                raise _fail(where, f"{key!r} has an empty list of values")
            axes.append((key, value))
        elif lists_only:
            raise _fail(where, f"[grid] {key!r} must be a list of values, got {value!r}")
        else:
            axes.append((key, [value]))
    return axes


def _same(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return bool(a == b)


def _matches(rule: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    for key, wanted in rule.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if not any(_same(settings[key.replace("_", "-")], option) for option in options):
            return False
    return True


def _canonical(cfg: RunConfig) -> RunConfig:
    """Return privacy settings that cannot matter for this cell to their defaults (so duplicates collapse)."""
    defaults = RunConfig().to_dict()
    irrelevant = _PRIVATE_KEYS if cfg.dp == "none" else _CLIENT_LEVEL_KEYS if cfg.dp == "sample" else ()
    return cfg.replace(**{k.replace("-", "_"): defaults[k] for k in irrelevant})


def _label(axes: Sequence[tuple[str, Any]], cfg: RunConfig) -> str:
    dropped = _PRIVATE_KEYS if cfg.dp == "none" else _CLIENT_LEVEL_KEYS if cfg.dp == "sample" else ()
    parts = []
    for key, _ in axes:
        name = key.replace("_", "-")
        if name == "seed" or name in dropped:
            continue
        value = cfg.to_dict()[name]
        parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts) or "base"


def _build(settings: Mapping[str, Any], where: str) -> RunConfig:
    try:
        return RunConfig.from_mapping(settings)
    except ConfigError as e:
        raise _fail(where, str(e)) from e


def _grid_cells(
    data: Mapping[str, Any],
    base: dict[str, Any],
    overrides: Mapping[str, Any],
    where: str,
) -> tuple[list[tuple[str, str, RunConfig]], int]:
    grid = _table(data, "grid", where)
    _check_setting_keys(grid, f"{where} [grid]")
    rules = data.get("skip", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) and r for r in rules):
        raise _fail(where, "[[skip]] must be a list of non-empty tables")
    for number, rule in enumerate(rules, start=1):
        _check_setting_keys(rule, f"{where} [[skip]] #{number}")
    axes = _axes(grid, f"{where} [grid]", lists_only=True)
    out: list[tuple[str, str, RunConfig]] = []
    skipped = 0
    if not axes and data.get("cells"):
        return out, 0
    for values in itertools.product(*(v for _, v in axes)):
        point = dict(zip((k for k, _ in axes), values, strict=True))
        desc = ", ".join(f"{k}={v!r}" for k, v in point.items()) or "base"
        cfg = _build({**base, **point, **overrides}, f"{where} [grid] cell ({desc})")
        if any(_matches(rule, cfg.to_dict()) for rule in rules):
            skipped += 1
            continue
        out.append(("simulate", _label(axes, cfg), cfg))
    return out, skipped


def _explicit_cells(
    data: Mapping[str, Any],
    base: dict[str, Any],
    overrides: Mapping[str, Any],
    where: str,
) -> list[tuple[str, str, RunConfig]]:
    cells = data.get("cells", [])
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise _fail(where, "[[cells]] must be a list of tables")
    out: list[tuple[str, str, RunConfig]] = []
    for number, table in enumerate(cells, start=1):
        spec = dict(table)
        label, runner = spec.pop("label", None), spec.pop("runner", "simulate")
        here = f"{where} [[cells]] #{number}" + (f" ({label})" if label else "")
        if runner not in RUNNERS:
            raise _fail(here, f"runner {runner!r} is not allowed; choose one of {RUNNERS}")
        if label is not None and not isinstance(label, str):
            raise _fail(here, f"label must be a string, got {label!r}")
        _check_setting_keys(spec, here)
        axes = _axes(spec, here, lists_only=False)
        for values in itertools.product(*(v for _, v in axes)):
            cfg = _build({**base, **dict(zip((k for k, _ in axes), values, strict=True)), **overrides}, here)
            out.append((runner, label or _label(axes, cfg), cfg))
    return out


def load_grid(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Sweep:
    """Parse and validate a grid file into cells (``overrides`` are ``--set`` items applied to every cell).

    Raises
    ------
    ConfigError
        Naming the file, the table and the key, for anything unknown, mistyped or out of range.
    """
    from fedcompress.audit.settings import AuditConfig

    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read grid file {where!r}: {e}") from e
    for key in data:
        if key not in _TABLES:
            raise _fail(where, f"unknown table {key!r}; allowed: {', '.join(_TABLES)}")
    options = _sweep_options(data, where)
    base = _table(data, "base", where)
    _check_setting_keys(base, f"{where} [base]")
    overrides = dict(overrides or {})
    _check_setting_keys(overrides, "--set")
    planned, skipped = _grid_cells(data, base, overrides, where)
    planned += _explicit_cells(data, base, overrides, where)
    cells: dict[str, Cell] = {}
    for runner, label, cfg in planned:
        cfg = _canonical(cfg)
        try:
            check_runner_config(runner, cfg)
        except ConfigError as e:
            raise _fail(f"{where} cell {label!r}", str(e)) from e
        key = cell_id(runner, cfg.to_dict())
        cells.setdefault(key, Cell(key, label, runner, cfg))
    audit = None
    if "audit" in data:
        try:
            audit = AuditConfig.from_mapping(_table(data, "audit", where)).to_dict()
        except ConfigError as e:
            raise _fail(f"{where} [audit]", str(e)) from e
    return Sweep(
        name=str(options.get("name", Path(path).stem)),
        description=str(options.get("description", "")),
        cells=tuple(cells.values()),
        cpus_per_client=float(options.get("cpus-per-client", 1.0)),
        cell_timeout=float(options.get("cell-timeout", 0.0)),
        skipped_by_rule=skipped,
        collapsed=len(planned) - len(cells),
        audit=audit,
    )
