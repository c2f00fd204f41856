//! Row-level change messages for registered resource tables. A relcache invalidation says only
//! "this table changed", and every set over it would be resolved again — at 100 new sessions per
//! second that is 100 resolutions of a 5,000-session set per second in every backend. So a change
//! to a resource table's rows is announced by what it touched instead: the ids of the rows, their
//! parents, their owners, and whether a public row was involved. A set depends on the keys it read
//! (the parents whose children it listed, the ids it probed), and only a message for one of those
//! keys re-resolves it: a new session under project 7 does nothing to a caller scoped elsewhere.
//!
//! The messages travel as relcache invalidations of made-up relation ids (`KEY_BASE | slot | hash`):
//! PostgreSQL's own machinery carries them to every backend at commit, to a standby after replay,
//! and back to the sender at its next command (and on rollback), in order with everything else.
//! A made-up id that happens to name a real relation only makes PostgreSQL rebuild that entry.
//! Receivers keep the recent keys in a ring; a backend that fell behind it treats everything as
//! changed.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::hash::Hasher;

use pgrx::prelude::*;

use crate::pg::errors::AuthzResult;
use crate::pg::privileged::{self, Rights};

/// Made-up relation ids at and above this carry a change key (slot in bits 20..28, hash below).
const KEY_BASE: u32 = 0xF000_0000;
const HASH_BITS: u32 = 20;
const HASH_MASK: u32 = (1 << HASH_BITS) - 1;

/// What a key names.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum KeyKind {
    /// A row's own id.
    Id = b'i',
    /// A row's parent id (the row's parent's children changed).
    Parent = b'p',
    /// A row's owner.
    Owner = b'o',
    /// A public row (its value is empty).
    Public = b'u',
}

/// A table's slot: the top bits of its keys, so that a receiver knows which table a key is about.
pub fn slot(table: pg_sys::Oid) -> u32 {
    table.to_u32().wrapping_mul(0x9E37_79B1) >> 24
}

/// A key: the same number in every backend for the same table, kind and value.
pub fn key(table: pg_sys::Oid, kind: KeyKind, value: &[u8]) -> u32 {
    let mut h = rustc_hash::FxHasher::default();
    h.write_u8(kind as u8);
    h.write(value);
    (slot(table) << HASH_BITS) | (h.finish() as u32 & HASH_MASK)
}

pub fn slot_of(key: u32) -> u32 {
    key >> HASH_BITS
}

/// Is this relcache invalidation a change key? (Real relations are checked first by the caller.)
pub fn is_key(relid: u32) -> bool {
    relid >= KEY_BASE
}

const RING: usize = 8192;

thread_local! {
    /// (sequence number, key) of the most recent keys received, oldest first.
    static RECEIVED: RefCell<(u64, VecDeque<(u64, u32)>)> = RefCell::new((0, VecDeque::with_capacity(RING)));
}

/// A change key arrived (called from the relcache callback).
pub fn received(relid: u32) {
    RECEIVED.with(|r| {
        let mut r = r.borrow_mut();
        r.0 += 1;
        let seq = r.0;
        if r.1.len() == RING {
            r.1.pop_front();
        }
        r.1.push_back((seq, relid.wrapping_sub(KEY_BASE)));
    });
}

/// The sequence number of the last key received.
pub fn sequence() -> u64 {
    RECEIVED.with(|r| r.borrow().0)
}

/// The keys received after `since`, or None when some of them have already left the ring.
pub fn since(since: u64) -> Option<Vec<u32>> {
    RECEIVED.with(|r| {
        let r = r.borrow();
        if r.0 == since {
            return Some(Vec::new());
        }
        match r.1.front() {
            Some((first, _)) if *first <= since + 1 => {
                Some(r.1.iter().filter(|(seq, _)| *seq > since).map(|(_, k)| *k).collect())
            }
            _ => None,
        }
    })
}

/// Queue one key for every backend (delivered at commit).
fn announce(key: u32) {
    // SAFETY: a zeroed heap tuple whose data is a pg_class form with only `oid` and `relisshared`
    // set — the two fields CacheInvalidateRelcacheByTuple reads — allocated, used and freed here.
    unsafe {
        let header = std::mem::size_of::<pg_sys::HeapTupleHeaderData>();
        let total = header + std::mem::size_of::<pg_sys::FormData_pg_class>();
        let data = pg_sys::palloc0(total) as *mut pg_sys::HeapTupleHeaderData;
        (*data).t_hoff = header as u8;
        let form = (data as *mut u8).add(header) as *mut pg_sys::FormData_pg_class;
        (*form).oid = pg_sys::Oid::from(KEY_BASE | key);
        (*form).relisshared = false;
        let mut tuple: pg_sys::HeapTupleData = std::mem::zeroed();
        tuple.t_len = total as u32;
        tuple.t_data = data;
        pg_sys::CacheInvalidateRelcacheByTuple(&mut tuple);
        pg_sys::pfree(data.cast());
    }
}

/// A resource table's registered columns (one entry per type registered on it).
#[derive(Default, Clone)]
struct Columns {
    id: String,
    parent: Option<String>,
    public: Option<String>,
    owner: Option<String>,
}

/// What a statement announced for one table so far.
struct StatementKeys {
    statement: (u32, u32, u32, u32),
    columns: std::rc::Rc<Vec<Columns>>,
    sent: HashSet<u32>,
    whole: bool,
}

thread_local! {
    static STATEMENT: RefCell<Option<StatementKeys>> = const { RefCell::new(None) };
    /// Registered columns by table, read once per policy generation (registrations are policy).
    static REGISTERED: RefCell<(u64, rustc_hash::FxHashMap<u32, std::rc::Rc<Vec<Columns>>>)> = RefCell::new((0, Default::default()));
}

/// Beyond this many keys in one statement and table, the whole table is announced instead (a
/// bulk load must not flood the invalidation queue).
const MAX_KEYS_PER_STATEMENT: usize = 64;

/// How a changed row of a registered resource table is announced.
pub enum Announce {
    /// Done: its keys were queued (or the table's statement already went whole).
    Keys,
    /// Announce the whole table (not a registered resource table, too many keys, a partition).
    WholeTable,
}

/// The registered columns of a resource table (none: not one).
fn registered_columns(table: pg_sys::Oid) -> AuthzResult<Vec<Columns>> {
    privileged::run(Rights::Superuser, || {
        Spi::connect(|client| {
            let mut out = Vec::new();
            // Absent before the extension's SQL exists in this database (CREATE EXTENSION itself).
            for row in client.select(
                "SELECT id_column::pg_catalog.text, parent_column::pg_catalog.text,
                        public_column::pg_catalog.text, owner_column::pg_catalog.text
                 FROM authz.resource_types WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
                None,
                &[table.into()],
            )? {
                let Some(id) = row.get::<String>(1)? else { continue };
                out.push(Columns { id, parent: row.get(2)?, public: row.get(3)?, owner: row.get(4)? });
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        })
    })
}

/// The text of a column of a row (None for NULL or a dropped column).
unsafe fn value(tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc, column: &str) -> Option<Vec<u8>> {
    let name = std::ffi::CString::new(column).ok()?;
    // SAFETY: `tuple` and `desc` are the trigger's row and its relation's descriptor; the column
    // is looked up by name and its value rendered by the type's output function into palloc'd
    // memory, copied and freed here.
    unsafe {
        let n = pg_sys::SPI_fnumber(desc, name.as_ptr());
        if n <= 0 {
            return None;
        }
        let text = pg_sys::SPI_getvalue(tuple, desc, n);
        if text.is_null() {
            return None;
        }
        let out = std::ffi::CStr::from_ptr(text).to_bytes().to_vec();
        pg_sys::pfree(text.cast());
        Some(out)
    }
}

/// The keys of one row version.
unsafe fn row_keys(table: pg_sys::Oid, tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc, cols: &Columns) -> Vec<u32> {
    let mut keys = Vec::new();
    // SAFETY: as in `value`.
    unsafe {
        if let Some(id) = value(tuple, desc, &cols.id) {
            keys.push(key(table, KeyKind::Id, &id));
        }
        if let Some(parent) = cols.parent.as_deref().and_then(|c| value(tuple, desc, c)) {
            keys.push(key(table, KeyKind::Parent, &parent));
        }
        if let Some(owner) = cols.owner.as_deref().and_then(|c| value(tuple, desc, c)) {
            keys.push(key(table, KeyKind::Owner, &owner));
        }
        if cols.public.as_deref().and_then(|c| value(tuple, desc, c)).as_deref() == Some(b"t".as_slice()) {
            keys.push(key(table, KeyKind::Public, b""));
        }
    }
    keys
}

/// The registered columns' values of a row version, to tell whether an UPDATE touched any.
unsafe fn registered_values(tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc, cols: &Columns) -> Vec<Option<Vec<u8>>> {
    let names = [Some(cols.id.as_str()), cols.parent.as_deref(), cols.public.as_deref(), cols.owner.as_deref()];
    // SAFETY: as in `value`.
    names.iter().map(|c| c.and_then(|c| unsafe { value(tuple, desc, c) })).collect()
}

/// Announce a changed row of `table` by its keys, if it is a registered resource table. `old` and
/// `new` are the row's versions (one of them null for INSERT and DELETE).
pub unsafe fn announce_row(
    table: pg_sys::Oid,
    policy_generation: u64,
    statement: (u32, u32, u32, u32),
    old: pg_sys::HeapTuple,
    new: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
) -> AuthzResult<Announce> {
    let fresh = STATEMENT.with(|s| s.borrow().as_ref().is_none_or(|k| k.statement != statement));
    if fresh {
        let cached = REGISTERED.with(|r| {
            let r = r.borrow();
            (r.0 == policy_generation).then(|| r.1.get(&table.to_u32()).cloned()).flatten()
        });
        let columns = match cached {
            Some(c) => c,
            None => {
                let c = std::rc::Rc::new(registered_columns(table)?);
                REGISTERED.with(|r| {
                    let mut r = r.borrow_mut();
                    if r.0 != policy_generation {
                        *r = (policy_generation, Default::default());
                    }
                    r.1.insert(table.to_u32(), c.clone());
                });
                c
            }
        };
        STATEMENT
            .with(|s| *s.borrow_mut() = Some(StatementKeys { statement, columns, sent: HashSet::new(), whole: false }));
    }
    let (columns, whole) = STATEMENT.with(|s| {
        let s = s.borrow();
        s.as_ref().map(|k| (k.columns.clone(), k.whole)).unwrap_or_default()
    });
    if whole {
        return Ok(Announce::Keys);
    }
    if columns.is_empty() {
        return Ok(Announce::WholeTable);
    }
    let mut keys = Vec::new();
    for cols in columns.iter() {
        // SAFETY: the row versions are the trigger's (null-checked) and `desc` their descriptor.
        unsafe {
            if !old.is_null()
                && !new.is_null()
                && registered_values(old, desc, cols) == registered_values(new, desc, cols)
            {
                // An UPDATE of columns authorization never reads changes nothing it cached.
                continue;
            }
            for tuple in [old, new] {
                if !tuple.is_null() {
                    keys.extend(row_keys(table, tuple, desc, cols));
                }
            }
        }
    }
    let overflow = STATEMENT.with(|s| {
        let mut s = s.borrow_mut();
        let Some(state) = s.as_mut() else { return true };
        let new_keys: Vec<u32> = keys.into_iter().filter(|k| state.sent.insert(*k)).collect();
        if state.sent.len() > MAX_KEYS_PER_STATEMENT {
            state.whole = true;
            return true;
        }
        for k in new_keys {
            announce(k);
        }
        false
    });
    Ok(if overflow { Announce::WholeTable } else { Announce::Keys })
}
