//! Resource rows read by index probes. A resolution or a decision reads only the rows it needs —
//! the subtrees under a caller's grants, the rows a rule names, the ancestors of those rows —
//! never a whole type (at 1,000,000 sessions that was 300 ms for every new connection and after
//! every new session row anywhere).
//!
//! Rows are kept per backend and per resource type (`Level`), with what is known to be complete
//! (a parent's children, the public rows, a user's owned rows, everything), until the type's table
//! changes (its data generation, src/pg/cache.rs). Every read runs as the table's owner.

use std::cell::RefCell;
use std::collections::HashSet;

use rustc_hash::FxHashMap;
use std::rc::Rc;

use pgrx::prelude::*;

use crate::pg::cache;
use crate::pg::changes::{self, KeyKind};
use crate::pg::db;
use crate::pg::errors::{AuthzError, AuthzResult};
use crate::pg::privileged::{self, Rights};
use crate::policy::model::{require_resource_table, ResourceType};

/// One stored resource row, as far as authorization cares.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub parent: Option<String>,
    /// Its own public flag (ancestors' flags are read from their own rows).
    pub public: bool,
    pub owner: Option<String>,
}

/// How a column's values are compared with text from the policy (scope ids, exact patterns, parent
/// ids): through the column's own type, so the table's index answers, after checking in Rust that
/// the text can be a value of that type (a malformed id matches nothing instead of raising).
#[derive(Debug, Clone, Copy, PartialEq)]
enum ColumnKind {
    Int8,
    Int4,
    Int2,
    Uuid,
    Text,
    /// Any other type: compared as text (no index).
    Other,
}

impl ColumnKind {
    fn of(table: pg_sys::Oid, column: &str) -> ColumnKind {
        let Ok(name) = std::ffi::CString::new(column) else { return ColumnKind::Other };
        // SAFETY: syscache lookups by relation oid and column name; plain values are returned.
        let type_oid = unsafe {
            let attnum = pg_sys::get_attnum(table, name.as_ptr());
            if attnum == pg_sys::InvalidAttrNumber as i16 {
                return ColumnKind::Other;
            }
            pg_sys::get_atttype(table, attnum)
        };
        match type_oid {
            pg_sys::INT8OID => ColumnKind::Int8,
            pg_sys::INT4OID => ColumnKind::Int4,
            pg_sys::INT2OID => ColumnKind::Int2,
            pg_sys::UUIDOID => ColumnKind::Uuid,
            pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID => ColumnKind::Text,
            _ => ColumnKind::Other,
        }
    }

    /// Could `text` be a value of this type? (The stored text of a match is compared exactly later.)
    fn admits(self, text: &str) -> bool {
        match self {
            ColumnKind::Int8 => text.parse::<i64>().is_ok(),
            ColumnKind::Int4 => text.parse::<i32>().is_ok(),
            ColumnKind::Int2 => text.parse::<i16>().is_ok(),
            ColumnKind::Uuid => crate::pg::text::looks_like_uuid(text),
            ColumnKind::Text | ColumnKind::Other => true,
        }
    }

    /// `column = ANY($n)` for a text[] parameter, in a form an index on the column can answer.
    fn any_of(self, column: &str, param: usize) -> String {
        let array = match self {
            ColumnKind::Int8 => "pg_catalog.int8",
            ColumnKind::Int4 => "pg_catalog.int4",
            ColumnKind::Int2 => "pg_catalog.int2",
            ColumnKind::Uuid => "pg_catalog.uuid",
            ColumnKind::Text => return format!("{column} OPERATOR(pg_catalog.=) ANY (${param}::pg_catalog.text[])"),
            ColumnKind::Other => {
                return format!("{column}::pg_catalog.text OPERATOR(pg_catalog.=) ANY (${param}::pg_catalog.text[])")
            }
        };
        format!("{column} OPERATOR(pg_catalog.=) ANY (${param}::pg_catalog.text[]::{array}[])")
    }
}

/// The rows of one resource type read so far, and what is known to be complete.
#[derive(Default)]
pub struct Level {
    stamp: u64,
    /// The last change key applied (src/pg/changes.rs).
    seq: u64,
    table: Option<pg_sys::Oid>,
    rows: Vec<Row>,
    /// Rows by the change key of their id (a key drops the rows it may name).
    by_key: FxHashMap<u32, Vec<u32>>,
    index: FxHashMap<String, u32>,
    /// Rows by parent id (a parent's children are answered from here once `expanded`).
    children: FxHashMap<String, Vec<u32>>,
    /// Ids probed and not found.
    missing: HashSet<String>,
    /// Parent ids whose children (rows of this type) are all loaded.
    expanded: HashSet<String>,
    all: bool,
    /// Change keys received since every row was read: `all` still answers for every id, parent,
    /// owner and public flag whose key is not among them (those are read again one by one).
    uncertain: HashSet<u32>,
    public: bool,
    owned_by: HashSet<String>,
    count: Option<usize>,
    bytes: usize,
}

impl Level {
    pub fn get(&self, id: &str) -> Option<&Row> {
        self.index.get(id).and_then(|&i| self.rows.get(i as usize))
    }

    /// The rows still current (a change key drops a row from the index, not from `rows`).
    fn live(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().enumerate().filter(|(i, r)| self.index.get(&r.id) == Some(&(*i as u32))).map(|(_, r)| r)
    }

    fn key(&self, kind: KeyKind, value: &str) -> u32 {
        changes::key(self.table.unwrap_or(pg_sys::InvalidOid), kind, value.as_bytes())
    }

    /// Does the complete read answer for this key (no change to it arrived since)?
    fn whole_answers(&self, kind: KeyKind, value: &str) -> bool {
        self.all && !self.uncertain.contains(&self.key(kind, value))
    }

    /// Forget what a changed row may have made stale: rows with that id, the children lists of
    /// that parent, owned rows of that owner, the public rows; any change leaves "every row"
    /// incomplete.
    fn apply(&mut self, keys: &[u32]) {
        let Some(table) = self.table else { return };
        let slot = changes::slot(table);
        let keys: HashSet<u32> = keys.iter().copied().filter(|k| changes::slot_of(*k) == slot).collect();
        if keys.is_empty() {
            return;
        }
        if self.all {
            self.uncertain.extend(keys.iter().copied());
            if self.uncertain.len() > MAX_UNCERTAIN {
                self.all = false;
                self.uncertain.clear();
            }
        }
        self.count = None;
        if keys.contains(&changes::key(table, KeyKind::Public, b"")) {
            self.public = false;
        }
        for k in &keys {
            for i in self.by_key.remove(k).unwrap_or_default() {
                if let Some(id) = self.rows.get(i as usize).map(|r| r.id.clone()) {
                    if self.index.get(&id) == Some(&i) {
                        self.index.remove(&id);
                    }
                }
            }
        }
        let stale = |level: &Level, kind: KeyKind, v: &String| keys.contains(&level.key(kind, v));
        let expanded: HashSet<String> =
            self.expanded.iter().filter(|p| !stale(self, KeyKind::Parent, p)).cloned().collect();
        let missing: HashSet<String> = self.missing.iter().filter(|i| !stale(self, KeyKind::Id, i)).cloned().collect();
        let owned_by: HashSet<String> =
            self.owned_by.iter().filter(|o| !stale(self, KeyKind::Owner, o)).cloned().collect();
        self.expanded = expanded;
        self.missing = missing;
        self.owned_by = owned_by;
    }

    fn add(&mut self, row: Row) {
        if self.index.contains_key(&row.id) {
            // Duplicate ids in a table without a key: the first row read speaks for the id.
            return;
        }
        let k = self.key(KeyKind::Id, &row.id);
        self.by_key.entry(k).or_default().push(self.rows.len() as u32);
        if let Some(parent) = &row.parent {
            self.children.entry(parent.clone()).or_default().push(self.rows.len() as u32);
        }
        self.bytes += 96
            + 2 * row.id.len()
            + row.parent.as_ref().map_or(0, String::len)
            + row.owner.as_ref().map_or(0, String::len);
        self.missing.remove(&row.id);
        self.index.insert(row.id.clone(), self.rows.len() as u32);
        self.rows.push(row);
    }
}

/// Beyond this many change keys since a complete read, the read no longer answers for anything.
const MAX_UNCERTAIN: usize = 4096;

/// Beyond this many rows a type's cached rows start over (memory per backend stays bounded; what
/// is dropped is only read again).
const MAX_ROWS_PER_TYPE: usize = 200_000;

thread_local! {
    static LEVELS: RefCell<FxHashMap<String, Level>> = RefCell::new(FxHashMap::default());
}

/// Approximate bytes held by the cached resource rows of this backend.
pub fn cached_bytes() -> usize {
    LEVELS.with(|l| l.borrow().values().map(|v| v.bytes).sum())
}

/// Cached resource rows of this backend.
pub fn cached_rows() -> usize {
    LEVELS.with(|l| l.borrow().values().map(|v| v.index.len()).sum())
}

/// Start over for types holding more than MAX_ROWS_PER_TYPE rows (called where a resolution or
/// decision begins, never between a load and its use).
pub fn trim() {
    LEVELS.with(|l| l.borrow_mut().retain(|_, level| level.rows.len() <= MAX_ROWS_PER_TYPE));
}

thread_local! {
    /// Stored-or-not questions answered by probes, per data stamp of the type they were about.
    static STORED_PROBES: std::cell::Cell<(u64, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// After this many single-row probes under one data stamp, read the whole type once instead (a
/// full scan of the resource table itself asks for every row).
const PROBES_BEFORE_FULL_READ: u32 = 1000;

/// Is a row with this id stored in the type's table?
pub fn is_stored(rt: &ResourceType, id: &str) -> AuthzResult<bool> {
    let stamp = cache::data_stamp(rt.table);
    let probes = STORED_PROBES.with(|p| {
        let (at, n) = p.get();
        let n = if at == stamp { n.saturating_add(1) } else { 1 };
        p.set((stamp, n));
        n
    });
    if probes > PROBES_BEFORE_FULL_READ && !with_level(rt, |l| l.all) {
        load_all(rt)?;
    } else {
        // After a complete read this probes only ids a change key names.
        load_ids(rt, &[id.to_string()])?;
    }
    Ok(with_level(rt, |l| l.get(id).is_some()))
}

/// Run `f` on the type's level, emptied first if its table changed since it was read.
fn with_level<T>(rt: &ResourceType, f: impl FnOnce(&mut Level) -> T) -> T {
    let stamp = cache::data_stamp(rt.table);
    let seq = changes::sequence();
    let sync = |level: &mut Level| {
        if level.stamp != stamp || level.table != rt.table {
            *level = Level { stamp, seq, table: rt.table, ..Level::default() };
        } else if level.seq != seq {
            match changes::since(level.seq) {
                Some(keys) => level.apply(&keys),
                None => *level = Level { stamp, table: rt.table, ..Level::default() },
            }
            level.seq = seq;
        }
    };
    LEVELS.with(|l| {
        let mut levels = l.borrow_mut();
        match levels.get_mut(&rt.name) {
            Some(level) => {
                sync(level);
                f(level)
            }
            None => {
                let level = levels.entry(rt.name.clone()).or_default();
                sync(level);
                f(level)
            }
        }
    })
}

/// What a resolution read, by change key: a key it holds (or any key of a table it read whole)
/// makes it stale.
#[derive(Default, Debug)]
pub struct Reads {
    keys: HashSet<u32>,
    whole_tables: HashSet<u32>,
    /// The change sequence up to which it is known current (moved forward by `still_current`).
    seq: std::cell::Cell<u64>,
}

impl Reads {
    /// Has no change key arrived since the reading that names anything it read? Keys that did
    /// not are skipped from then on.
    pub fn still_current(&self) -> bool {
        let now = changes::sequence();
        if self.seq.get() == now {
            return true;
        }
        match changes::since(self.seq.get()) {
            Some(keys)
                if !keys.iter().any(|k| self.keys.contains(k) || self.whole_tables.contains(&changes::slot_of(*k))) =>
            {
                self.seq.set(now);
                true
            }
            _ => false,
        }
    }

    /// Approximate bytes.
    pub fn bytes(&self) -> usize {
        64 + 8 * (self.keys.len() + self.whole_tables.len())
    }
}

thread_local! {
    static READS: RefCell<Option<Reads>> = const { RefCell::new(None) };
}

/// Run `f`, noting what it reads.
pub fn recording<T>(f: impl FnOnce() -> T) -> (T, Reads) {
    struct Restore(Option<Reads>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            READS.with(|r| *r.borrow_mut() = previous);
        }
    }
    let start = Reads { seq: std::cell::Cell::new(changes::sequence()), ..Reads::default() };
    let previous = READS.with(|r| r.borrow_mut().replace(start));
    let guard = Restore(previous);
    let out = f();
    let reads = READS.with(|r| r.borrow_mut().take()).unwrap_or_default();
    drop(guard);
    (out, reads)
}

fn note(rt: &ResourceType, kind: KeyKind, values: &[String]) {
    let Some(table) = rt.table else { return };
    READS.with(|r| {
        if let Some(reads) = r.borrow_mut().as_mut() {
            reads.keys.extend(values.iter().map(|v| changes::key(table, kind, v.as_bytes())));
        }
    });
}

/// Note that every row of the type was read (any change to its table makes the reader stale).
pub fn note_whole(rt: &ResourceType) {
    let Some(table) = rt.table else { return };
    READS.with(|r| {
        if let Some(reads) = r.borrow_mut().as_mut() {
            reads.whole_tables.insert(changes::slot(table));
        }
    });
}

/// Read access to a type's rows as loaded so far.
pub fn row(rt: &ResourceType, id: &str) -> Option<Row> {
    with_level(rt, |l| l.get(id).cloned())
}

/// Is a row with this id loaded (after `load_ids`: is it stored)?
pub fn known(rt: &ResourceType, id: &str) -> bool {
    with_level(rt, |l| l.index.contains_key(id))
}

/// Which rows of a type to read.
enum Select<'a> {
    Ids(&'a [String]),
    ChildrenOf(&'a [String]),
    All,
    Public,
    OwnedBy(&'a str),
}

/// Read rows of `rt` as its table's owner.
/// The rights a resource table's rows are read with: its owner's (exempt from its own FORCE ROW
/// LEVEL SECURITY, and nothing the owner wrote runs with more), except for a Citus table read on
/// other nodes. There the read runs in sessions Citus opens as the current role, where no exemption
/// travels: a FORCE'd table owned by its (non-superuser) owner would be filtered for an identity
/// that connection does not have. Such a table is read as superuser — as long as every column read
/// has a built-in type, so that the only code it runs (the casts to text, the comparisons) is
/// PostgreSQL's own.
fn reading_rights(rt: &ResourceType) -> Rights {
    let Some(table) = rt.table else { return Rights::Superuser };
    let columns = [&rt.id_column, &rt.parent_column, &rt.public_column, &rt.owner_column];
    let built_in = columns.iter().filter_map(|c| c.as_ref()).all(|c| {
        let Ok(name) = std::ffi::CString::new(c.as_str()) else { return false };
        // SAFETY: catalog lookups by relation oid and a NUL-terminated column name.
        unsafe {
            let attnum = pg_sys::get_attnum(table, name.as_ptr());
            attnum > 0 && pg_sys::get_atttype(table, attnum).to_u32() < pg_sys::FirstNormalObjectId
        }
    });
    if built_in && crate::pg::citus::is_citus_table(table) && !crate::pg::citus::has_local_placement(table) {
        Rights::Superuser
    } else {
        Rights::OwnerOf(table)
    }
}

fn read(rt: &ResourceType, select: Select<'_>) -> AuthzResult<Vec<Row>> {
    let (Some(table), Some(id_column)) = (rt.table, rt.id_column.as_ref()) else {
        return Err(AuthzError::invalid(format!("resource type \"{}\" has no table", rt.name))
            .detail("Its permissions can be checked with authz.check() but its ids cannot be listed."));
    };
    let table_name = db::qualified_name(table).map_err(|e| {
        AuthzError::config(format!("the table of resource type \"{}\" is gone", rt.name)).detail(e.message)
    })?;
    require_resource_table(table).map_err(|e| {
        AuthzError::config(format!("cannot read the ids of resource type \"{}\"", rt.name)).detail(e.message)
    })?;
    let id = db::quote_ident(id_column);
    let parent_expr = match &rt.parent_column {
        Some(c) => format!("{}::pg_catalog.text", db::quote_ident(c)),
        None => "NULL::pg_catalog.text".into(),
    };
    let public_expr = match &rt.public_column {
        Some(c) => format!("coalesce({}, false)", db::quote_ident(c)),
        None => "false".into(),
    };
    let owner_expr = match &rt.owner_column {
        Some(c) => format!("{}::pg_catalog.text", db::quote_ident(c)),
        None => "NULL::pg_catalog.text".into(),
    };
    let mut args: Vec<Vec<String>> = Vec::new();
    let mut text_arg: Option<String> = None;
    let condition = match &select {
        Select::Ids(ids) => {
            let kind = ColumnKind::of(table, id_column);
            let admitted: Vec<String> = ids.iter().filter(|i| kind.admits(i)).cloned().collect();
            if admitted.is_empty() {
                return Ok(Vec::new());
            }
            args.push(admitted);
            kind.any_of(&id, 1)
        }
        Select::ChildrenOf(parents) => {
            let Some(parent_column) = &rt.parent_column else { return Ok(Vec::new()) };
            let kind = ColumnKind::of(table, parent_column);
            let admitted: Vec<String> = parents.iter().filter(|i| kind.admits(i)).cloned().collect();
            if admitted.is_empty() {
                return Ok(Vec::new());
            }
            args.push(admitted);
            kind.any_of(&db::quote_ident(parent_column), 1)
        }
        Select::All => "true".into(),
        Select::Public => match &rt.public_column {
            Some(c) => format!("{} IS TRUE", db::quote_ident(c)),
            None => return Ok(Vec::new()),
        },
        Select::OwnedBy(user) => match &rt.owner_column {
            Some(c) => {
                let kind = ColumnKind::of(table, c);
                if !kind.admits(user) {
                    return Ok(Vec::new());
                }
                text_arg = Some(user.to_string());
                match kind {
                    ColumnKind::Text => format!("{} OPERATOR(pg_catalog.=) $1::pg_catalog.text", db::quote_ident(c)),
                    _ => format!("{}::pg_catalog.text OPERATOR(pg_catalog.=) $1::pg_catalog.text", db::quote_ident(c)),
                }
            }
            None => return Ok(Vec::new()),
        },
    };
    let query = format!(
        "SELECT {id}::pg_catalog.text, {parent_expr}, {public_expr}, {owner_expr} FROM {table_name}
         WHERE {id} IS NOT NULL AND {condition}"
    );
    let rows: Vec<Row> = privileged::run(reading_rights(rt), || {
        Spi::connect(|client| {
            let params: Vec<pgrx::datum::DatumWithOid> = match (args.pop(), &text_arg) {
                (Some(a), _) => vec![a.into()],
                (None, Some(t)) => vec![t.as_str().into()],
                (None, None) => Vec::new(),
            };
            let mut rows = Vec::new();
            for row in client.select(query.as_str(), None, &params)? {
                rows.push(Row {
                    id: row.get::<String>(1)?.unwrap_or_default(),
                    parent: row.get::<String>(2)?,
                    public: row.get::<bool>(3)?.unwrap_or(false),
                    owner: row.get::<String>(4)?,
                });
            }
            Ok::<_, pgrx::spi::SpiError>(rows)
        })
    })
    .map_err(|e| {
        AuthzError::config(format!("cannot read the ids of resource type \"{}\"", rt.name)).detail(e.message)
    })?;
    // A cast can make different texts equal ('007' and '7' as bigint): keep what was asked for.
    Ok(match select {
        Select::Ids(ids) => {
            let asked: HashSet<&str> = ids.iter().map(String::as_str).collect();
            rows.into_iter().filter(|r| asked.contains(r.id.as_str())).collect()
        }
        Select::ChildrenOf(parents) => {
            let asked: HashSet<&str> = parents.iter().map(String::as_str).collect();
            rows.into_iter().filter(|r| r.parent.as_deref().is_some_and(|p| asked.contains(p))).collect()
        }
        _ => rows,
    })
}

/// Load the rows with these ids (those not yet known either way).
pub fn load_ids(rt: &ResourceType, ids: &[String]) -> AuthzResult<()> {
    note(rt, KeyKind::Id, ids);
    let wanted: Vec<String> = with_level(rt, |l| {
        let mut seen = HashSet::new();
        ids.iter()
            .filter(|i| {
                !l.index.contains_key(*i)
                    && !l.missing.contains(*i)
                    && !l.whole_answers(KeyKind::Id, i)
                    && seen.insert(*i)
            })
            .cloned()
            .collect()
    });
    if wanted.is_empty() {
        return Ok(());
    }
    let rows = read(rt, Select::Ids(&wanted))?;
    with_level(rt, |l| {
        for r in rows {
            l.add(r);
        }
        for w in wanted {
            if !l.index.contains_key(&w) {
                l.missing.insert(w);
            }
        }
    });
    Ok(())
}

/// Load the rows of `rt` whose parent is one of `parents`; returns their ids.
pub fn load_children(rt: &ResourceType, parents: &[String]) -> AuthzResult<Vec<String>> {
    note(rt, KeyKind::Parent, parents);
    let wanted: Vec<String> = with_level(rt, |l| {
        let mut seen = HashSet::new();
        parents
            .iter()
            .filter(|p| !l.expanded.contains(*p) && !l.whole_answers(KeyKind::Parent, p) && seen.insert(*p))
            .cloned()
            .collect()
    });
    if !wanted.is_empty() {
        let rows = read(rt, Select::ChildrenOf(&wanted))?;
        with_level(rt, |l| {
            for r in rows {
                l.add(r);
            }
            l.expanded.extend(wanted);
        });
    }
    Ok(with_level(rt, |l| {
        let mut out = Vec::new();
        for p in parents {
            for &i in l.children.get(p).into_iter().flatten() {
                if let Some(r) = l.rows.get(i as usize) {
                    if l.index.get(&r.id) == Some(&i) {
                        out.push(r.id.clone());
                    }
                }
            }
        }
        out
    }))
}

/// Every row of the type (a rule with a pattern on a type's ids must see them all).
pub fn load_all(rt: &ResourceType) -> AuthzResult<Vec<String>> {
    note_whole(rt);
    if !with_level(rt, |l| l.all && l.uncertain.is_empty()) {
        let rows = read(rt, Select::All)?;
        with_level(rt, |l| {
            // A complete read replaces everything known of the type.
            *l = Level { stamp: l.stamp, seq: l.seq, table: l.table, ..Level::default() };
            for r in rows {
                l.add(r);
            }
            l.all = true;
        });
    }
    Ok(with_level(rt, |l| l.live().map(|r| r.id.clone()).collect()))
}

/// The rows flagged public (their own flag).
pub fn load_public(rt: &ResourceType) -> AuthzResult<Vec<String>> {
    if rt.public_column.is_none() {
        return Ok(Vec::new());
    }
    note(rt, KeyKind::Public, &[String::new()]);
    if !with_level(rt, |l| l.public || l.whole_answers(KeyKind::Public, "")) {
        let rows = read(rt, Select::Public)?;
        with_level(rt, |l| {
            for r in rows {
                l.add(r);
            }
            l.public = true;
        });
    }
    Ok(with_level(rt, |l| l.live().filter(|r| r.public).map(|r| r.id.clone()).collect()))
}

/// The rows whose owner column names `user`.
pub fn load_owned(rt: &ResourceType, user: &str) -> AuthzResult<Vec<String>> {
    if rt.owner_column.is_none() {
        return Ok(Vec::new());
    }
    note(rt, KeyKind::Owner, &[user.to_string()]);
    if !with_level(rt, |l| l.owned_by.contains(user) || l.whole_answers(KeyKind::Owner, user)) {
        let rows = read(rt, Select::OwnedBy(user))?;
        with_level(rt, |l| {
            for r in rows {
                l.add(r);
            }
            l.owned_by.insert(user.to_string());
        });
    }
    Ok(with_level(rt, |l| l.live().filter(|r| r.owner.as_deref() == Some(user)).map(|r| r.id.clone()).collect()))
}

/// The ids of the chain's first type under the given ids of `chain[level]` (themselves, at level 0).
pub fn descend(chain: &[Rc<ResourceType>], level: usize, ids: Vec<String>) -> AuthzResult<Vec<String>> {
    let mut current = ids;
    for l in (0..level).rev() {
        if current.is_empty() {
            break;
        }
        current = load_children(&chain[l], &current)?;
    }
    Ok(current)
}

/// Load the ancestors of the given rows of `chain[0]`, level by level.
pub fn load_ancestors(chain: &[Rc<ResourceType>], ids: &[String]) -> AuthzResult<()> {
    let mut current: Vec<String> = ids.to_vec();
    for l in 0..chain.len().saturating_sub(1) {
        let parents: Vec<String> = with_level(&chain[l], |lv| {
            current.iter().filter_map(|i| lv.get(i).and_then(|r| r.parent.clone())).collect()
        });
        if parents.is_empty() {
            break;
        }
        load_ids(&chain[l + 1], &parents)?;
        current = parents;
    }
    Ok(())
}

/// The stored row of `chain[0]` with this id and its ancestors' rows, nearest first (loaded).
pub fn ancestry(chain: &[Rc<ResourceType>], start_level: usize, id: &str) -> AuthzResult<Vec<(String, Row)>> {
    let mut out = Vec::new();
    let mut next = Some(id.to_string());
    for rt in &chain[start_level..] {
        let Some(id) = next.take() else { break };
        load_ids(rt, std::slice::from_ref(&id))?;
        let Some(row) = row(rt, &id) else { break };
        next = row.parent.clone();
        out.push((rt.name.clone(), row));
    }
    Ok(out)
}

/// Evaluate with the chain's loaded rows at hand (level `l` of the slice is `chain[l]`).
pub fn with_chain<T>(chain: &[Rc<ResourceType>], f: impl FnOnce(&[&Level]) -> T) -> T {
    for rt in chain {
        with_level(rt, |_| ());
    }
    LEVELS.with(|l| {
        let levels = l.borrow();
        let empty = Level::default();
        let refs: Vec<&Level> = chain.iter().map(|rt| levels.get(&rt.name).unwrap_or(&empty)).collect();
        f(&refs)
    })
}

/// The number of rows of a type: exact when every row is loaded, else the planner's estimate
/// (pg_class.reltuples), else — for a table never analyzed — counted once per data generation.
pub fn type_size(rt: &ResourceType) -> AuthzResult<usize> {
    let Some(table) = rt.table else { return Ok(0) };
    if let Some(n) = with_level(rt, |l| if l.all && l.uncertain.is_empty() { Some(l.index.len()) } else { l.count }) {
        return Ok(n);
    }
    // SAFETY: a syscache lookup by oid; only the fixed part of the pg_class tuple is read and the
    // tuple is released before returning.
    let reltuples = unsafe {
        let tuple =
            pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as i32, pg_sys::Datum::from(table.to_u32()));
        if tuple.is_null() {
            return Ok(0);
        }
        let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple);
        let tuples = (*form).reltuples;
        pg_sys::ReleaseSysCache(tuple);
        tuples
    };
    let n = if reltuples >= 0.0 {
        reltuples as usize
    } else {
        let table_name = db::qualified_name(table)?;
        // Read-only SPI (Spi::get_one would not be): this may run in a parallel worker.
        let query = format!("SELECT pg_catalog.count(*) FROM {table_name}");
        privileged::run(reading_rights(rt), || db::select_one::<i64>(&query, &[]))?.unwrap_or(0) as usize
    };
    with_level(rt, |l| l.count = Some(n));
    Ok(n)
}
