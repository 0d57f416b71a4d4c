"""Syncing YAML mappings into the store: a plan (what would change) and its application.

Rules:

* Only rows with ``origin = yaml`` are created, updated and deleted; rows created in SQL
  (``origin = sql``) are never touched, and a YAML mapping may not take the name of one.
* A row is rewritten only when its YAML changed since it was last applied: ``config_hash``
  holds the digest of the configuration columns as last applied, so an operator's SQL edit
  of a YAML mapping (a larger ``batch_size``, say) stays until that mapping's YAML changes.
  ``force=True`` also rewrites rows whose columns drifted from their YAML.
* ``enabled`` is written only when the YAML value changed since the last apply. The last
  applied YAML value is kept in ``config_hash`` (``DIGEST:1`` / ``DIGEST:0``), so
  ``UPDATE ... SET enabled = false`` survives re-applying unchanged YAML.
* :func:`apply_config` plans and applies in one store transaction under the store-wide lock
  (``Store.exclusive``): replicas applying at once take turns, and each plans against what
  the one before it wrote, so none creates a mapping twice or undoes another's change; an
  apply that fails half-way leaves the store as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from router.abc import Store
from router.config.loader import RouterConfig
from router.config.rows import CONFIG_COLUMNS, row_from_mapping, split_config_hash
from router.errors import ConfigError, ConfigErrors, Location
from router.models import DeletedMapping, MappingConfig, MappingRow, Origin
from router.secrets import Secret, redact, redact_value

logger = logging.getLogger(__name__)

_SECRET_WORDS = ("password", "secret", "token", "credential", "api_key", "access_key")


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One column (or one key of a JSON column, ``source_config.path``) before and after."""

    field: str
    before: Any
    after: Any
    secret: bool = False

    def render(self) -> str:
        if self.secret:
            return f"{self.field} *** -> ***"
        return f"{self.field} {_show(self.before)} -> {_show(self.after)}"


@dataclass(frozen=True, slots=True)
class PlannedCreate:
    mapping: MappingConfig
    row: MappingRow
    resumes: DeletedMapping | None = None
    """The deleted mapping of this name whose uuid, checkpoints and stats it takes back."""


@dataclass(frozen=True, slots=True)
class PlannedUpdate:
    mapping: MappingConfig
    row: MappingRow
    """The new configuration, with the stored uuid; ``enabled`` as it is to be stored."""
    changes: tuple[FieldChange, ...]
    enabled: bool | None = None
    """The new ``enabled`` when YAML changed it (or first set it); None leaves it alone."""


@dataclass(frozen=True, slots=True)
class PlannedDelete:
    row: MappingRow


@dataclass(frozen=True, slots=True)
class ApplyPlan:
    """What applying a configuration would do to the store."""

    creates: tuple[PlannedCreate, ...] = ()
    updates: tuple[PlannedUpdate, ...] = ()
    deletes: tuple[PlannedDelete, ...] = ()
    unchanged: tuple[str, ...] = field(default=())
    """Names of YAML mappings already up to date."""
    retention: float = 0.0
    """Seconds deleted mappings keep their checkpoints (``router.deleted_mapping_retention``);
    0: deletes drop them."""
    purge_before: datetime | None = None
    """Deleted mappings older than this are forgotten when the plan is applied."""

    @property
    def is_empty(self) -> bool:
        return not (self.creates or self.updates or self.deletes)

    def render(self) -> str:
        """A readable diff, one line per mapping, for ``router apply --dry-run``."""
        if self.is_empty:
            return "no changes"
        lines: list[str] = []
        for c in self.creates:
            m = c.mapping
            state = "" if m.enabled else ", disabled"
            if c.resumes is not None:
                state += (
                    ", resumes the checkpoints it had when it was deleted at "
                    f"{c.resumes.deleted_at.isoformat(timespec='seconds')}"
                )
            lines.append(f"+ create {m.name} ({m.source.type} -> {m.function}{state})")
        for u in self.updates:
            what = "; ".join(ch.render() for ch in u.changes)
            if not what and u.enabled is not None:
                what = f"YAML enabled {_show(u.enabled)} (already {_show(u.enabled)})"
            what = what or "no column changed (hash only)"
            lines.append(f"~ update {u.row.name}: {what}")
        lines.extend(
            f"- delete {d.row.name} ({d.row.source_type} -> {d.row.function_name})"
            for d in self.deletes
        )
        return redact("\n".join(lines))


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86_400), ("hours", 3_600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} seconds"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return repr(redact(value))
    return redact(str(redact_value(value)))


def _secret_keys(mapping: MappingConfig) -> set[str]:
    settings = mapping.source.settings
    out: set[str] = set()
    for name, info in type(settings).model_fields.items():
        keys = {name} | ({info.alias} if info.alias else set())
        if (
            "Secret" in str(info.annotation)
            or isinstance(getattr(settings, name, None), Secret)
            or any(word in name.lower() for word in _SECRET_WORDS)
        ):
            out |= keys
    return out


def _diff(old: MappingRow, new: MappingRow, secret_keys: set[str]) -> list[FieldChange]:
    changes: list[FieldChange] = []
    for column in CONFIG_COLUMNS:
        before, after = getattr(old, column), getattr(new, column)
        if column == "source_config" and isinstance(before, Mapping) and isinstance(after, Mapping):
            for key in sorted(set(before) | set(after), key=str):
                b, a = before.get(key), after.get(key)
                if b != a:
                    changes.append(FieldChange(f"source.{key}", b, a, key in secret_keys))
            continue
        if _normal(before) != _normal(after):
            name = {"function_name": "function", "source_type": "source.type"}.get(column, column)
            changes.append(FieldChange(name, before, after))
    return changes


def _normal(value: Any) -> Any:
    # SQL gives 5.0 back for 5, and [] / {} where we wrote NULL in some drivers.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value in ([], {}):
        return None
    return value


async def plan_apply(config: RouterConfig, store: Store, *, force: bool = False) -> ApplyPlan:
    """Compare ``config`` with the store. Raises :class:`ConfigErrors` when a YAML mapping
    has the name of a mapping created in SQL."""
    rows = await store.list_mappings()
    by_name = {row.name: row for row in rows}
    retention = config.settings.deleted_mapping_retention
    horizon = datetime.now(UTC) - timedelta(seconds=retention)
    deleted = {
        gone.name: gone
        for gone in (await store.list_deleted_mappings() if retention > 0 else [])
        if gone.deleted_at >= horizon
    }
    errors: list[ConfigError] = []
    creates: list[PlannedCreate] = []
    updates: list[PlannedUpdate] = []
    unchanged: list[str] = []
    for mapping in config.mappings:
        mapping = replace(mapping, origin=Origin.YAML)
        old = by_name.get(mapping.name)
        if old is None:
            gone = deleted.get(mapping.name)
            if gone is not None and gone.source_type == mapping.source.type:
                # Removed from the YAML and declared again: the same mapping, which resumes
                # where it stopped instead of reading (or delivering) everything again.
                row = row_from_mapping(replace(mapping, uuid=gone.uuid))
                creates.append(PlannedCreate(mapping, row, gone))
            else:
                creates.append(PlannedCreate(mapping, row_from_mapping(mapping)))
            continue
        if old.origin != Origin.YAML:
            where = config.locations.get(mapping.name, Location(path="mappings"))
            errors.append(
                ConfigError(
                    f"a mapping named {mapping.name!r} was created in SQL (origin={old.origin}); "
                    "rename this one, or delete the SQL one first",
                    where,
                )
            )
            continue
        new = row_from_mapping(replace(mapping, uuid=old.uuid))
        new_digest, new_enabled = split_config_hash(new.config_hash)
        old_digest, old_enabled = split_config_hash(old.config_hash)
        changes: list[FieldChange] = []
        config_changed = new_digest != old_digest
        if config_changed or force:
            changes = _diff(old, new, _secret_keys(mapping))
            config_changed = config_changed or bool(changes)
        write_enabled: bool | None = None
        if old_enabled != new_enabled:
            write_enabled = mapping.enabled
            if old.enabled != mapping.enabled:
                changes.append(FieldChange("enabled", old.enabled, mapping.enabled))
        if not config_changed and write_enabled is None:
            unchanged.append(mapping.name)
            continue
        new.enabled = old.enabled if write_enabled is None else write_enabled
        updates.append(PlannedUpdate(mapping, new, tuple(changes), write_enabled))
    if errors:
        raise ConfigErrors(errors)
    names = {m.name for m in config.mappings}
    deletes = tuple(
        PlannedDelete(row) for row in rows if row.origin == Origin.YAML and row.name not in names
    )
    return ApplyPlan(
        tuple(creates),
        tuple(updates),
        deletes,
        tuple(unchanged),
        retention=retention,
        purge_before=horizon,
    )


async def apply_plan(plan: ApplyPlan, store: Store) -> None:
    """Write ``plan`` to the store: deletes, then updates, then creates. Deleted mappings
    keep their checkpoints for ``plan.retention`` seconds; older ones are forgotten."""
    if plan.purge_before is not None:
        for name in await store.purge_deleted_mappings(plan.purge_before):
            logger.info("forgot the checkpoints of mapping %s, deleted from the YAML", name)
    for d in plan.deletes:
        if plan.retention > 0:
            await store.retire_mapping(d.row.uuid)
            kept = (
                f"; its checkpoints are kept for {_duration(plan.retention)}, "
                "for a mapping of this name declared again"
            )
        else:
            await store.delete_mapping(d.row.uuid)
            kept = ""
        logger.warning(
            "deleted mapping %s (%s -> %s): it is no longer in the YAML%s",
            d.row.name,
            d.row.source_type,
            d.row.function_name,
            kept,
        )
    for u in plan.updates:
        await store.update_mapping(u.row)
        if u.enabled is not None:
            await store.set_enabled(u.row.uuid, u.enabled)
        logger.info("updated mapping %s", u.row.name)
    await store.create_mappings([c.row for c in plan.creates])
    for c in plan.creates:
        if c.resumes is not None:
            logger.info("created mapping %s again: it resumes from its checkpoints", c.row.name)
        else:
            logger.info("created mapping %s", c.row.name)


async def apply_config(
    config: RouterConfig, store: Store, *, force: bool = False, dry_run: bool = False
) -> ApplyPlan:
    """Plan ``config`` against the store and apply it, as one store transaction under the
    store-wide lock; returns the plan. ``dry_run`` plans only (under the lock, writing
    nothing)."""
    async with store.exclusive("applying the configuration"):
        plan = await plan_apply(config, store, force=force)
        if not dry_run:
            await apply_plan(plan, store)
    return plan
