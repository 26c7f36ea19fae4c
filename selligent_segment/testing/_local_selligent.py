"""The :class:`LocalSelligent` class: a Selligent ``data/load`` stand-in's tables, records,
waits and controls.

One job: keep the state of one stand-in (the declared lists, the rows upserted into each,
recorded requests, counters, valid and revoked API keys, the fault injector) and let a test
start and stop it, control it, read the rows back and wait on it. The socket side is
``_selligent_server.py``, what to answer ``_selligent_rules.py`` and ``_faults.py``.

Guarantees: every record and upsert is made under one condition's lock, before the request
is answered; accessors return copies taken under that lock; every wait is on that condition
(no polling), bounded by its timeout; API keys are in no repr.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import attrs

from selligent_segment.testing._faults import FaultKind, FaultPlan
from selligent_segment.testing._selligent_rules import LoadRequest, SelligentColumn, SelligentList
from selligent_segment.testing._selligent_server import SelligentServer, serve_selligent
from selligent_segment.testing._stand_in import StandIn

__all__ = ["LocalSelligent", "RecordedLoad"]


@attrs.frozen
class RecordedLoad:
    """One ``data/load`` request as received and answered (status 0 = connection dropped).

    ``n_rows`` counts the body's data rows, ``n_failed`` those in ``invalid_records``
    (``invalid`` holds them); ``fields`` / ``key_fields`` are as the query sent them (empty
    when the request was refused before they were read); ``fault`` is the injected fault
    kind that answered it, if any; ``received_at`` is ``time.monotonic()``.
    """

    api_key: str | None = attrs.field(repr=False)
    organization: str
    list: str
    status: int
    received_at: float
    n_rows: int = 0
    n_failed: int = 0
    fields: tuple[str, ...] = ()
    key_fields: tuple[str, ...] = ()
    invalid: tuple[Mapping[str, Any], ...] = attrs.field(default=(), repr=False)
    fault: FaultKind | None = None


_Row: TypeAlias = dict[str, str]


class _Table:
    """The rows of one list, and an index per set of key fields used to upsert into it or
    read it by.

    An index maps a key's values to the rows holding them, in insertion order (the first
    is the one an upsert updates and :meth:`LocalSelligent.row` returns); :meth:`update`
    moves a row in every index whose fields it changes, so an index always agrees with
    the rows."""

    __slots__ = ("indexes", "positions", "rows")

    def __init__(self) -> None:
        self.rows: list[_Row] = []
        self.positions: dict[int, int] = {}  # id(row) -> its place in rows (never removed)
        self.indexes: dict[tuple[str, ...], dict[tuple[str, ...], list[_Row]]] = {}

    def index(self, key_fields: tuple[str, ...]) -> dict[tuple[str, ...], list[_Row]]:
        index = self.indexes.get(key_fields)
        if index is None:
            index = {}
            for row in self.rows:
                key = _key(row, key_fields)
                if key is not None:
                    index.setdefault(key, []).append(row)
            self.indexes[key_fields] = index
        return index

    def first(self, key_fields: tuple[str, ...], key: tuple[str, ...]) -> _Row | None:
        """The first row (in insertion order) whose ``key_fields`` hold ``key``, or None."""
        found = self.index(key_fields).get(key)
        return found[0] if found else None

    def insert(self, row: _Row) -> None:
        self.positions[id(row)] = len(self.rows)
        self.rows.append(row)
        for fields, index in self.indexes.items():
            key = _key(row, fields)
            if key is not None:
                index.setdefault(key, []).append(row)  # the last row: at the end

    def update(self, row: _Row, values: Iterable[tuple[str, str]]) -> None:
        """Set ``values`` in ``row``, moving it in every index whose key it changes."""
        changed = {name: value for name, value in values if row.get(name) != value}
        if not changed:
            return
        moving = [
            (fields, index, _key(row, fields))
            for fields, index in self.indexes.items()
            if not changed.keys().isdisjoint(fields)
        ]
        row.update(changed)
        for fields, index, old in moving:
            if old is not None:
                holders = index[old]
                del holders[next(i for i, held in enumerate(holders) if held is row)]
                if not holders:
                    del index[old]
            new = _key(row, fields)
            if new is not None:
                bisect.insort(index.setdefault(new, []), row, key=lambda r: self.positions[id(r)])


def _key(row: _Row, fields: tuple[str, ...]) -> tuple[str, ...] | None:
    """The values of ``fields`` in ``row``, or None when it lacks one."""
    try:
        return tuple([row[f] for f in fields])
    except KeyError:
        return None


class LocalSelligent(StandIn):
    """Selligent Marketing Cloud's ``data/load`` on a real loopback socket; thread-safe records.

    It serves ``POST /Portal/Api/organizations/{org}/lists/{list}/data/load`` and applies
    the documented rules, so loader code can be exercised over real sockets:

    - ``X-ApiKey: key:secret``: with ``api_keys`` given only those are accepted, else any
      ``key:secret``; a missing, unknown or revoked key is answered ``401``.
    - With ``organization`` given, another organization is ``404 NotFound``; with ``lists``
      given, an undeclared list is ``404 NotFound`` and a field it does not declare is
      ``400 ValidationFailed`` (without ``lists`` any list and any Text column is accepted).
    - ``keyFields`` is required; ``fields`` gives the column order (else the body's first
      row is the header); ``data_import_option`` (``InsertAndUpdate``, ``OnlyInsert``,
      ``OnlyUpdate``) and ``deduplication`` (``ImportLastMatch``, ``ImportFirstMatch``) are
      honoured. The body is an array of arrays of strings.
    - Each row is checked against its list's declared columns (type, maximum length, a
      value count equal to the fields', non-empty key values); failing rows are answered in
      ``invalid_records`` of a ``200`` (``PartiallySucceeded``, or ``Failed`` when none
      passed) while the others are upserted by key: an existing row is updated with the
      columns sent (others kept), a new one inserted.

    Faults (:class:`~selligent_segment.testing.Fault`, ``FaultPlan`` keyed by API key,
    :meth:`set_faults`, :meth:`outage`) answer before these rules: a status in Selligent's
    words (a ``429`` with ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
    ``X-RateLimit-Reset``), a dropped connection, or a stall (``Fault.latency`` or a
    ``delay``). Besides the load it answers ``GET /_stats``, ``GET /_rows?list=NAME``,
    ``POST /_reset`` and ``POST /_faults`` (as LocalSegment's).

    Read the rows back with :meth:`rows` and :meth:`row`; wait with :meth:`wait_for_rows`
    and :meth:`wait_for_requests`. For benchmarks, ``record_requests=False`` keeps no
    request records and ``store_rows=False`` keeps only each row's key (the counters, the
    insert/update split and :meth:`wait_for_rows` stay exact; :meth:`rows` returns empty
    rows). API keys never appear in a repr or an exception text.
    """

    _name = "LocalSelligent"
    _keys_argument = "api_keys"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Iterable[str] | None = None,
        organization: str | None = None,
        lists: Iterable[SelligentList]
        | Mapping[str, Iterable[SelligentColumn | str]]
        | None = None,
        faults: FaultPlan | None = None,
        latency: float = 0.0,
        record_requests: bool = True,
        store_rows: bool = True,
    ) -> None:
        super().__init__(host=host, port=port, keys=api_keys, faults=faults, latency=latency)
        self._organization = organization
        self._record_requests = bool(record_requests)
        self._store_rows = bool(store_rows)
        self._lists: dict[str, SelligentList] | None = None
        if lists is not None:
            self._lists = {}
            items = (
                [SelligentList(name, tuple(cols)) for name, cols in lists.items()]
                if isinstance(lists, Mapping)
                else list(lists)
            )
            for spec in items:
                self._lists[spec.name] = spec
        self._tables: dict[str, _Table] = {}
        self._requests: list[RecordedLoad] = []
        self._n_rows_received = 0
        self._n_inserted = self._n_updated = self._n_failed = self._n_duplicates = 0
        self._n_stored = 0

    def _serve(self) -> SelligentServer:
        return serve_selligent(self._host, self._port, self)

    # -- lifecycle (StandIn), URLs ---------------------------------------------------------

    def load_url(self, organization: str, list_name: str) -> str:
        """The full ``data/load`` URL of ``list_name`` (without the query)."""
        return f"{self.url}/Portal/Api/organizations/{organization}/lists/{list_name}/data/load"

    # -- keys, lists ----------------------------------------------------------------------

    def add_api_key(self, key: str) -> None:
        """Accept ``key`` (``key:secret``) from now on (also un-revokes it)."""
        self._add_key(key)

    def revoke_api_key(self, key: str) -> None:
        """Answer 401 to ``key`` from now on (even when any key is accepted)."""
        self._revoke_key(key)

    def _key_ok(self, key: str | None) -> bool:
        name, sep, secret = (key or "").partition(":")
        if not sep or not name or not secret:
            return False
        return super()._key_ok(key)

    def _organization_ok(self, organization: str) -> bool:
        return self._organization is None or organization == self._organization

    def declare_list(self, name: str, columns: Iterable[SelligentColumn | str]) -> None:
        """Declare (or redeclare) list ``name`` with ``columns``; from then on undeclared
        lists are answered 404."""
        spec = SelligentList(name, tuple(columns))
        with self._cond:
            if self._lists is None:
                self._lists = {}
            self._lists[name] = spec

    def _declared(self, name: str) -> SelligentList | bool:
        """The list's declaration; True when lists are not declared; False when unknown."""
        with self._cond:
            if self._lists is None:
                return True
            return self._lists.get(name, False)

    # -- reading back ---------------------------------------------------------------------

    def rows(self, list_name: str) -> list[dict[str, str]]:
        """Every row of ``list_name`` in insertion order (copies; [] for an unknown list)."""
        with self._cond:
            table = self._tables.get(list_name)
            return [] if table is None else [dict(row) for row in table.rows]

    def row(self, list_name: str, **key: str) -> dict[str, str] | None:
        """The row of ``list_name`` whose columns equal ``key`` (a copy; the first inserted
        when several do), or None."""
        with self._cond:
            table = self._tables.get(list_name)
            if table is None:
                return None
            fields = tuple(key)
            found = table.first(fields, tuple(key[f] for f in fields))
            return None if found is None else dict(found)

    @property
    def requests(self) -> list[RecordedLoad]:
        """Every load request in the order answered (copy; empty without record_requests)."""
        with self._cond:
            return list(self._requests)

    def stats(self) -> dict[str, int]:
        """Counters, as served by ``GET /_stats``: ``requests``, ``rows_received``,
        ``inserted``, ``updated``, ``failed``, ``duplicates``, ``rows`` (stored); O(1)."""
        with self._cond:
            return {
                "requests": self._n_requests,
                "rows_received": self._n_rows_received,
                "inserted": self._n_inserted,
                "updated": self._n_updated,
                "failed": self._n_failed,
                "duplicates": self._n_duplicates,
                "rows": self._n_stored,
            }

    def clear(self) -> None:
        """Forget all rows, records and counters (lists, faults and keys are kept)."""
        with self._cond:
            self._tables.clear()
            self._requests.clear()
            self._n_requests = self._n_arrived = self._n_rows_received = 0
            self._n_inserted = self._n_updated = self._n_failed = self._n_duplicates = 0
            self._n_stored = 0
            self._cond.notify_all()

    def wait_for_rows(
        self, count: int, list_name: str | None = None, timeout: float = 10.0
    ) -> bool:
        """Block until at least ``count`` rows are stored (in ``list_name``, or in all
        lists); False on timeout."""

        def enough() -> bool:
            if list_name is None:
                return self._n_stored >= count
            table = self._tables.get(list_name)
            return table is not None and len(table.rows) >= count

        with self._cond:
            return self._cond.wait_for(enough, timeout)

    # -- what the server records (_selligent_server.py) ---------------------------------

    def _upsert(
        self, list_name: str, request: LoadRequest, valid: Sequence[list[str]]
    ) -> tuple[int, int, int]:
        """Upsert the valid rows; (inserted, updated, duplicates within the request)."""
        fields, key_fields = request.fields, request.key_fields
        positions = [fields.index(k) for k in key_fields]
        chosen: dict[tuple[str, ...], list[str]] = {}
        duplicates = 0
        first_match = request.first_match
        for row in valid:
            key = tuple([row[p] for p in positions])
            if key in chosen:
                duplicates += 1
                if first_match:
                    continue
            chosen[key] = row
        inserted = updated = 0
        store = self._store_rows
        with self._cond:
            table = self._tables.get(list_name)
            if table is None:
                table = self._tables[list_name] = _Table()
            index = table.index(key_fields)  # an update never changes these fields
            for key, row in chosen.items():
                holders = index.get(key)
                if holders is None:
                    if request.option != "OnlyUpdate":
                        table.insert(
                            dict(zip(fields, row, strict=True))
                            if store
                            else dict(zip(key_fields, key, strict=True))
                        )
                        inserted += 1
                elif request.option != "OnlyInsert":
                    if store:
                        table.update(holders[0], zip(fields, row, strict=True))
                    updated += 1
            self._n_inserted += inserted
            self._n_updated += updated
            self._n_duplicates += duplicates
            self._n_stored += inserted
            self._cond.notify_all()
        return inserted, updated, duplicates

    def _record(
        self,
        key: str | None,
        organization: str,
        list_name: str,
        status: int,
        received_at: float,
        fault: FaultKind | None = None,
        *,
        n_rows: int = 0,
        n_failed: int = 0,
        invalid: Sequence[Mapping[str, Any]] = (),
        fields: tuple[str, ...] = (),
        key_fields: tuple[str, ...] = (),
    ) -> None:
        """Record one answered (or dropped, ``status`` 0) request, before it is answered."""
        with self._cond:
            self._n_requests += 1
            self._n_rows_received += n_rows
            self._n_failed += n_failed
            if self._record_requests:
                self._requests.append(
                    RecordedLoad(
                        api_key=key,
                        organization=organization,
                        list=list_name,
                        status=status,
                        received_at=received_at,
                        n_rows=n_rows,
                        n_failed=n_failed,
                        fields=fields,
                        key_fields=key_fields,
                        invalid=tuple(invalid),
                        fault=fault,
                    )
                )
            self._cond.notify_all()
