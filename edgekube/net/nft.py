"""The nftables table of edgekube: one `inet edgekube` table, written in atomic transactions.

Everything edgekube puts in the kernel's packet path lives in one table (the service proxy's
chains and maps, host ports, masquerading, and later NetworkPolicy), written the way upstream's
nftables kube-proxy writes through knftables: a transaction is one `nft -f -` batch, which the
kernel applies whole or not at all, so a reader of the table (a packet) never sees half a change.

Three layers:

- Declarations (`Hook`, `Chain`, `NamedSet`, `Element`, `Piece`): frozen records of what should
  be in the table. A `Piece` is what one object of the cluster (a Service, a Pod with host ports,
  a NetworkPolicy) contributes: its own chains and sets, and elements in shared maps.
- `Transaction` turns operations into nft's script language, in an order that makes any batch
  valid whatever order its operations were added in: element deletes and flushes first, then one
  table block that declares chains and sets and adds rules and elements (nft creates a block's
  objects before its rules), and deletes of whole objects last (after the rules that referred to
  them were flushed).
- `Fragment` is one owner's part of the table, kept in step incrementally. Its owner `put`s the
  piece of each object that changed; `sync()` compares the new pieces with what it last wrote and
  sends only the difference: new chains added, changed chains flushed and rewritten, map
  elements deleted and added one by one. A full sync (at boot, after a failed batch, and now and
  then) rewrites every chain and map of the fragment in ONE batch: `add` + `flush` + contents, so
  the table goes from the old rules to the new ones atomically and established connections (whose
  NAT lives in conntrack, not in the rules) never notice. Objects of the fragment that the kernel
  holds but nobody wants any more are found by listing the table and are removed.

Ownership, so that several fragments share the table: a fragment owns the names its `owns`
predicate accepts and never touches others (the proxy's names are upstream's: `services`,
`service-...`, `endpoint-...`; NetworkPolicy takes names of its own, e.g. `policy-...`). Base
chains are never shared: each fragment hooks its own (two base chains on one hook are ordered by
their priority), so one fragment's full sync cannot flush another's jumps.

Two kernel rules shape the diffs. A map element's value cannot be changed in place (`add element`
of an existing key with another value is EEXIST), so a changed element is deleted and added in
the same batch. And a chain a verdict map element pointed to cannot always be deleted in the same
batch as the element (kernels before 6.2 notice the lost reference only later): a chain that is
no longer wanted is flushed at once and deleted by a later batch, after `STALE_DELAY` seconds (as
upstream does).

Contested elements: two owners may want the same key (two Services naming the same external IP
and port). The table can hold one; the claim of the lowest `rank` wins (the older object) and
the others wait; when the winner goes, the next claim is written.

`nft` runs as an asyncio subprocess with a timeout; its errors name the failing line of the batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)

FAMILY = "inet"
TABLE = "edgekube"
STALE_DELAY = 1.0  # seconds between flushing an unwanted chain and deleting it
_COMMENT = "edgekube: services, host ports, masquerading (do not edit: rewritten on every change)"



class NftError(Exception):
    """nft refused a batch, timed out, or is missing; the message says which and why."""


class Unavailable(NftError):
    """This machine cannot run edgekube's nftables table (no `nft`, no nf_tables in the kernel,
    no CAP_NET_ADMIN). Raised at boot, with what to do about it."""


@dataclasses.dataclass(frozen=True)
class Hook:
    """A base chain's attachment: `type` filter or nat, a netfilter `hook`, a numeric priority
    (numbers, not names: nft 1.0 only knows `dstnat` on the prerouting hook)."""

    type: str
    hook: str
    priority: int

    def spec(self) -> str:
        return f"type {self.type} hook {self.hook} priority {self.priority} ;"


@dataclasses.dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[str, ...] = ()
    hook: Hook | None = None
    comment: str = ""


@dataclasses.dataclass(frozen=True)
class NamedSet:
    """A named set, or a map when `value` is set (`verdict` for a verdict map).

    `dynamic` sets are filled by the packet path itself (`update @set { ip saddr }`, session
    affinity): the writer declares them and never flushes or fills them."""

    name: str
    key: str  # nft type, e.g. `ipv4_addr . inet_proto . inet_service`
    value: str = ""
    flags: tuple[str, ...] = ()
    timeout: int = 0  # seconds; 0: none
    dynamic: bool = False
    comment: str = ""

    @property
    def kind(self) -> str:
        return "map" if self.value else "set"

    def spec(self) -> str:
        parts = [f"type {self.key}" + (f" : {self.value}" if self.value else "") + " ;"]
        if self.flags:
            parts.append(f"flags {','.join(self.flags)} ;")
        if self.timeout:
            parts.append(f"timeout {self.timeout}s ;")
        if self.comment:
            parts.append(f"comment {_quote(self.comment)} ;")
        return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class Element:
    """One element of a named set (`value` empty) or map."""

    set: str
    key: str
    value: str = ""


@dataclasses.dataclass(frozen=True)
class Piece:
    """What one owner (a Service, a Pod, the fixed skeleton) puts in the table. `rank` orders
    contested elements: the lowest rank keeps a key that two pieces want."""

    chains: tuple[Chain, ...] = ()
    sets: tuple[NamedSet, ...] = ()
    elements: tuple[Element, ...] = ()
    rank: str = ""


EMPTY = Piece()


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'").replace("\\", "/") + '"'


class Transaction:
    """Operations on one table, serialised as an `nft -f` script in a valid order.

    The script is: flushes and deletes that prepare a redeclaration; element deletes; flushes;
    then ONE `table ... { }` block declaring every chain (with its rules) and set (with the
    elements to add) of the batch, which is nft's own listing format: the cheapest for nft to
    read (no `add rule inet edgekube <chain>` repeated per line), and nft creates the block's
    objects before its rules, so declarations need no order among themselves; then elements
    added to sets the batch does not declare; then deletes of whole objects."""

    def __init__(self, *, family: str = FAMILY, table: str = TABLE) -> None:
        self.family = family
        self.table = table
        self._where = f"{family} {table}"
        self._prepare: list[str] = []
        self._element_dels: dict[str, list[str]] = {}
        self._flushes: list[str] = []
        self._comment = False
        self._chains: dict[str, list[str]] = {}  # chain -> its block's lines (declaration, then rules)
        self._sets: dict[str, NamedSet] = {}
        self._element_adds: dict[str, list[str]] = {}  # set name -> elements to add
        self._deletes: list[str] = []

    def __bool__(self) -> bool:
        return bool(self._prepare or self._element_dels or self._flushes or self._comment or self._chains
                    or self._sets or self._element_adds or self._deletes)

    def add_table(self) -> None:
        self._comment = True

    def add_chain(self, chain: Chain) -> None:
        head = self._chains.setdefault(chain.name, [])
        if chain.hook is not None:
            head.insert(0, chain.hook.spec())
        if chain.comment:
            head.insert(0, f"comment {_quote(chain.comment)}")

    def flush_chain(self, name: str, *, prepare: bool = False) -> None:
        (self._prepare if prepare else self._flushes).append(f"flush chain {self._where} {name}")

    def add_rules(self, chain: Chain) -> None:
        self._chains.setdefault(chain.name, []).extend(chain.rules)

    def delete_chain(self, name: str, *, prepare: bool = False) -> None:
        (self._prepare if prepare else self._deletes).append(f"delete chain {self._where} {name}")

    def add_set(self, s: NamedSet) -> None:
        self._sets[s.name] = s

    def flush_set(self, s: NamedSet) -> None:
        self._flushes.append(f"flush {s.kind} {self._where} {s.name}")

    def delete_set(self, name: str, *, kind: str, prepare: bool = False) -> None:
        (self._prepare if prepare else self._deletes).append(f"delete {kind} {self._where} {name}")

    def add_element(self, e: Element) -> None:
        self._element_adds.setdefault(e.set, []).append(f"{e.key} : {e.value}" if e.value else e.key)

    def delete_element(self, set_name: str, key: str) -> None:
        self._element_dels.setdefault(set_name, []).append(key)

    def text(self) -> str:
        lines = list(self._prepare)
        lines += [f"delete element {self._where} {name} {{ {', '.join(keys)} }}"
                  for name, keys in self._element_dels.items()]
        lines += self._flushes
        block: list[str] = [f"comment {_quote(_COMMENT)}"] if self._comment else []
        for name, s in self._sets.items():
            block += [f"{s.kind} {name} {{", s.spec()]
            if name in self._element_adds:
                block.append(f"elements = {{ {', '.join(self._element_adds[name])} }}")
            block.append("}")
        for name, body in self._chains.items():
            block += [f"chain {name} {{", *body, "}"]
        if block:
            lines += [f"table {self._where} {{", *block, "}"]
        lines += [f"add element {self._where} {name} {{ {', '.join(items)} }}"
                  for name, items in self._element_adds.items() if name not in self._sets]
        lines += self._deletes
        return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class Existing:
    """What the kernel's table holds, by name (no rules, no elements): chains with their hook
    (None for a regular chain), and sets and maps with their key (and value) types."""

    chains: dict[str, Hook | None]
    sets: dict[str, tuple[str, str]]  # name -> (key type, value type or "")


class Nft:
    """Runs the `nft` program: batches through stdin, listings as JSON."""

    def __init__(self, argv: Sequence[str] = ("nft",), *, timeout: float = 30.0) -> None:
        self.argv = list(argv)
        self.timeout = timeout

    def find(self) -> str:
        path = shutil.which(self.argv[0])
        if path is None:
            raise Unavailable(f"the service proxy needs the `nft` program ({self.argv[0]} is not on PATH): "
                              "install nftables, or start edgekube with `--disable network`")
        return path

    async def run(self, args: Sequence[str], *, script: str | None = None) -> str:
        """`nft ARGS` (with `script` on stdin): its stdout, or NftError with its complaint."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, *args, stdin=asyncio.subprocess.PIPE if script is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError:
            self.find()
            raise
        try:
            out, err = await asyncio.wait_for(proc.communicate(script.encode() if script is not None else None),
                                              self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise NftError(f"nft {' '.join(args)} did not finish within {self.timeout:.0f}s") from None
        if proc.returncode != 0:
            raise NftError(f"nft {' '.join(args)} failed (exit {proc.returncode}): {_explain(err.decode(errors='replace'))}")
        return out.decode(errors="replace")


def _explain(stderr: str) -> str:
    """nft's complaint, kept short: its first error and the batch line it points at."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return " | ".join(lines[:3])[:2000] or "no message"


class Table:
    """The one table: batches are applied one at a time (an asyncio lock), so fragments that
    share the table never interleave a listing and the batch planned from it."""

    def __init__(self, nft: Nft, *, family: str = FAMILY, name: str = TABLE) -> None:
        self.nft = nft
        self.family = family
        self.name = name
        self.lock = asyncio.Lock()

    def transaction(self) -> Transaction:
        return Transaction(family=self.family, table=self.name)

    async def apply(self, tx: Transaction) -> None:
        if tx:
            await self.run(tx.text())

    async def run(self, script: str) -> None:
        """One batch: applied whole, or NftError and nothing changed."""
        await self.nft.run(["-f", "-"], script=script)

    async def existing(self) -> Existing:
        """The chains, sets and maps of this table (empty when the table does not exist)."""
        listings = await asyncio.gather(*(self.nft.run(["-j", "-t", "list", what, self.family])
                                          for what in ("chains", "sets", "maps")))
        chains: dict[str, Hook | None] = {}
        sets: dict[str, tuple[str, str]] = {}
        for text in listings:
            for item in _items(text):
                for kind, body in item.items():
                    if not isinstance(body, dict) or body.get("table") != self.name:
                        continue
                    if kind == "chain":
                        hook = None
                        if body.get("hook"):
                            hook = Hook(str(body.get("type")), str(body["hook"]), int(body.get("prio", 0)))
                        chains[str(body["name"])] = hook
                    elif kind in ("set", "map"):
                        sets[str(body["name"])] = (_type_text(body.get("type")), _type_text(body.get("map")))
        return Existing(chains=chains, sets=sets)


def _items(text: str) -> list[dict[str, Any]]:
    if not text.strip():
        return []
    data = json.loads(text)
    items = data.get("nftables", []) if isinstance(data, dict) else []
    return [i for i in items if isinstance(i, dict)]


def _type_text(value: object) -> str:
    if isinstance(value, list):
        return " . ".join(str(v) for v in value)
    return str(value) if value else ""


@dataclasses.dataclass
class SyncStats:
    """What the last `Fragment.sync` did."""

    full: bool = False
    seconds: float = 0.0  # the whole sync
    listing: float = 0.0  # of which reading the table's names (full syncs)
    batch: float = 0.0  # of which nft applying the batch
    script_bytes: int = 0
    chains_written: int = 0
    elements_changed: int = 0


class Fragment:
    """One owner's part of the table, written incrementally (see the module doc)."""

    def __init__(self, table: Table, *, owns: Callable[[str], bool], name: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self.owns = owns
        self.name = name
        self._clock = clock
        self._pieces: dict[str, Piece] = {}  # desired
        self._dirty: set[str] = set()
        self._chain_owner: dict[str, str] = {}
        self._set_owner: dict[str, str] = {}
        self._claims: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}  # (set, key) -> piece -> (rank, value)
        # What the kernel holds (as far as this fragment knows):
        self._applied: dict[str, Piece] = {}
        self._chains: dict[str, Chain] = {}
        self._sets: dict[str, NamedSet] = {}
        self._elements: dict[tuple[str, str], str] = {}
        self._stale: dict[str, float] = {}  # flushed chains waiting to be deleted -> when flushed
        self.need_full = True
        self.last = SyncStats()

    # --- desired state ---------------------------------------------------------------------

    def put(self, key: str, piece: Piece | None) -> None:
        """The piece of object `key` from now on (None: it has none any more)."""
        old = self._pieces.get(key)
        new = piece if piece is not None and (piece.chains or piece.sets or piece.elements) else None
        if old == new:
            return
        for c in new.chains if new else ():
            owner = self._chain_owner.get(c.name)
            if owner is not None and owner != key:
                raise ValueError(f"{self.name}: chain {c.name} of {key!r} is already {owner!r}'s")
        for s in new.sets if new else ():
            owner = self._set_owner.get(s.name)
            if owner is not None and owner != key:
                raise ValueError(f"{self.name}: set {s.name} of {key!r} is already {owner!r}'s")
        if old is not None:
            for c in old.chains:
                self._chain_owner.pop(c.name, None)
            for s in old.sets:
                self._set_owner.pop(s.name, None)
            for e in old.elements:
                claims = self._claims.get((e.set, e.key))
                if claims is not None:
                    claims.pop(key, None)
                    if not claims:
                        del self._claims[(e.set, e.key)]
        if new is None:
            self._pieces.pop(key, None)
        else:
            self._pieces[key] = new
            for c in new.chains:
                self._chain_owner[c.name] = key
            for s in new.sets:
                self._set_owner[s.name] = key
            for e in new.elements:
                self._claims.setdefault((e.set, e.key), {})[key] = (new.rank, e.value)
        self._dirty.add(key)

    def keys(self) -> list[str]:
        return list(self._pieces)

    def piece(self, key: str) -> Piece | None:
        return self._pieces.get(key)

    def _winner(self, ident: tuple[str, str]) -> str | None:
        claims = self._claims.get(ident)
        if not claims:
            return None
        _, (_, value) = min(claims.items(), key=lambda kv: (kv[1][0], kv[0]))
        return value

    @property
    def pending(self) -> bool:
        return bool(self._dirty) or self.need_full

    def stale_due(self) -> float | None:
        """Seconds until the oldest flushed chain may be deleted (None: none waits)."""
        if not self._stale:
            return None
        return max(0.0, min(self._stale.values()) + STALE_DELAY - self._clock())

    # --- writing ------------------------------------------------------------------------------

    async def sync(self, *, full: bool = False) -> SyncStats:
        """Write what changed since the last sync (everything when `full`, or when the last
        batch failed). On failure the next sync is a full one."""
        async with self.table.lock:
            start = self._clock()
            await self._delete_stale()
            full = full or self.need_full
            if full:
                existing = await self.table.existing()
                listed = self._clock()
                tx, commit, stats = self._plan_full(existing)
                stats.listing = listed - start
            else:
                tx, commit, stats = self._plan_changes()
            script = tx.text() if tx else ""
            stats.script_bytes = len(script)
            applying = self._clock()
            try:
                if script:
                    await self.table.run(script)
            except NftError:
                self.need_full = True
                raise
            commit()
            stats.batch = self._clock() - applying
            stats.seconds = self._clock() - start
            self.last = stats
            return stats

    async def _delete_stale(self) -> None:
        now = self._clock()
        due = [name for name, when in self._stale.items() if now - when >= STALE_DELAY]
        if not due:
            return
        tx = self.table.transaction()
        for name in due:
            tx.delete_chain(name)
        try:
            await self.table.apply(tx)
        except NftError as exc:
            # Harmless (an empty chain nothing jumps to); a full sync finds it again.
            log.warning("%s: deleting %d unused chains failed (a full sync will retry): %s", self.name, len(due), exc)
            self.need_full = True
            return
        for name in due:
            self._stale.pop(name, None)
            self._chains.pop(name, None)

    def _plan_full(self, existing: Existing) -> tuple[Transaction, Callable[[], None], SyncStats]:
        tx = self.table.transaction()
        tx.add_table()
        stats = SyncStats(full=True)
        chains = {c.name: c for p in self._pieces.values() for c in p.chains}
        sets = {s.name: s for p in self._pieces.values() for s in p.sets}
        # Declarations the kernel holds differently (an upgrade changed a hook or a type) are
        # removed first, after emptying every chain of ours so nothing refers to them.
        redo_chains = [n for n, c in chains.items() if n in existing.chains and existing.chains[n] != c.hook]
        redo_sets = [n for n, s in sets.items() if n in existing.sets and not s.dynamic
                     and existing.sets[n] != (s.key, s.value)]
        if redo_chains or redo_sets:
            for name in existing.chains:
                if self.owns(name):
                    tx.flush_chain(name, prepare=True)
            for name in redo_chains:
                tx.delete_chain(name, prepare=True)
            for name in redo_sets:
                tx.delete_set(name, kind="map" if existing.sets[name][1] else "set", prepare=True)
        # A flush only where the kernel holds the object already (the listing says so; the batch
        # is atomic, so nothing can add it in between): a boot into an empty kernel sends none.
        for c in chains.values():
            tx.add_chain(c)
            if c.name in existing.chains and c.name not in redo_chains:
                tx.flush_chain(c.name)
            tx.add_rules(c)
            stats.chains_written += 1
        for s in sets.values():
            tx.add_set(s)
            if not s.dynamic and s.name in existing.sets and s.name not in redo_sets:
                tx.flush_set(s)
        elements: dict[tuple[str, str], str] = {}
        for ident in self._claims:
            value = self._winner(ident)
            if value is not None:
                elements[ident] = value
                tx.add_element(Element(ident[0], ident[1], value))
        stats.elements_changed = len(elements)
        now = self._clock()
        stale = {}
        for name in existing.chains:
            if self.owns(name) and name not in chains:
                tx.flush_chain(name)
                stale[name] = self._stale.get(name, now)
        for name, (_, value) in existing.sets.items():
            if self.owns(name) and name not in sets:
                tx.delete_set(name, kind="map" if value else "set")

        def commit() -> None:
            self._applied = dict(self._pieces)
            self._chains = dict(chains)
            self._chains.update({n: Chain(n) for n in stale})
            self._sets = dict(sets)
            self._elements = elements
            self._stale = stale
            self._dirty.clear()
            self.need_full = False

        return tx, commit, stats

    def _plan_changes(self) -> tuple[Transaction, Callable[[], None], SyncStats]:
        tx = self.table.transaction()
        stats = SyncStats()
        dirty = set(self._dirty)
        chains_after: dict[str, Chain] = {}
        sets_after: dict[str, NamedSet | None] = {}
        flushed: list[str] = []
        touched: set[tuple[str, str]] = set()
        for key in dirty:
            old = self._applied.get(key, EMPTY)
            new = self._pieces.get(key, EMPTY)
            wanted = {c.name for c in new.chains}
            for c in new.chains:
                current = self._chains.get(c.name)
                if current is None:
                    tx.add_chain(c)
                    tx.add_rules(c)
                elif current.hook != c.hook:
                    self.need_full = True  # a base chain changing its hook: only a full sync redoes that
                    continue
                elif current.rules != c.rules or c.name in self._stale:
                    tx.flush_chain(c.name)
                    tx.add_rules(c)
                else:
                    continue
                chains_after[c.name] = c
                stats.chains_written += 1
            for c in old.chains:
                if c.name not in wanted and self._chain_owner.get(c.name) is None:
                    tx.flush_chain(c.name)
                    flushed.append(c.name)
            new_sets = {s.name: s for s in new.sets}
            for s in new.sets:
                if s.name not in self._sets:
                    tx.add_set(s)
                    sets_after[s.name] = s
            for s in old.sets:
                if s.name not in new_sets and self._set_owner.get(s.name) is None:
                    tx.delete_set(s.name, kind=s.kind)
                    sets_after[s.name] = None
            touched.update((e.set, e.key) for e in old.elements)
            touched.update((e.set, e.key) for e in new.elements)
        elements_after: dict[tuple[str, str], str | None] = {}
        for ident in touched:
            value = self._winner(ident)
            held = self._elements.get(ident)
            if value == held:
                continue
            if held is not None:
                tx.delete_element(ident[0], ident[1])
            if value is not None:
                tx.add_element(Element(ident[0], ident[1], value))
            elements_after[ident] = value
        stats.elements_changed = len(elements_after)

        def commit() -> None:
            now = self._clock()
            for key in dirty:
                if key in self._pieces:
                    self._applied[key] = self._pieces[key]
                else:
                    self._applied.pop(key, None)
            for name, c in chains_after.items():
                self._chains[name] = c
                self._stale.pop(name, None)
            for name in flushed:
                self._chains[name] = Chain(name)
                self._stale[name] = now
            for name, s in sets_after.items():
                if s is None:
                    self._sets.pop(name, None)
                else:
                    self._sets[name] = s
            for ident, value in elements_after.items():
                if value is None:
                    self._elements.pop(ident, None)
                else:
                    self._elements[ident] = value
            self._dirty.difference_update(dirty)

        return tx, commit, stats


async def probe(nft: Nft, lines: Iterable[tuple[str, str]]) -> None:
    """Ask the kernel, without changing anything (`nft -c`), whether it takes every feature the
    table uses: `lines` are (feature, nft statement) pairs run against a scratch table. Raises
    Unavailable naming what is missing."""
    nft.find()
    try:
        await nft.run(["--version"])
    except NftError as exc:
        raise Unavailable(f"the `nft` program does not run: {exc}") from None
    scratch = f"{TABLE}-probe"
    head = [f"add table {FAMILY} {scratch}"]
    features = list(lines)
    script = "\n".join(head + [stmt.replace("@T", f"{FAMILY} {scratch}") for _, stmt in features]) + "\n"
    try:
        await nft.run(["-c", "-f", "-"], script=script)
    except NftError as exc:
        text = str(exc)
        missing = [name for i, (name, _) in enumerate(features, start=len(head) + 1) if f":{i}:" in text]
        if "Operation not permitted" in text:
            why = "edgekube lacks CAP_NET_ADMIN (run it as root)"
        elif missing:
            why = f"the kernel does not support {', '.join(missing)}"
        else:
            why = "the kernel refused a test batch"
        raise Unavailable(f"nftables cannot run the service proxy here: {why} ({text}); "
                          "use a kernel with nf_tables, nft_nat, nft_ct, nft_numgen, nft_fib and nft_reject "
                          "(built in or as modules), or start edgekube with `--disable network`") from None
