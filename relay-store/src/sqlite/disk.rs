//! Room on the disk that holds an SQLite store: the free-space floor below
//! which inserts are refused, and the reserve file that lets
//! acknowledgements through when the disk fills anyway.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Default [`DiskGuard::min_free_bytes`]: 256 MiB.
pub const DEFAULT_MIN_FREE_DISK_BYTES: u64 = 256 << 20;
/// Default [`DiskGuard::reserve_bytes`]: 4 MiB, one cycle of the WAL at
/// SQLite's default checkpoint threshold (1,000 pages of 4 KiB).
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = 4 << 20;
/// Default [`DiskGuard::refresh`]: a second.
pub const DEFAULT_DISK_REFRESH: Duration = Duration::from_secs(1);

/// Extra bytes charged to every insert besides twice its body: the pages
/// of its row, its index entries and the usage counters.
const INSERT_OVERHEAD: u64 = 16 << 10;

/// Where the free space of a filesystem is read from.
pub trait FreeSpace: Send + Sync + std::fmt::Debug {
    /// Bytes the process may still write on the filesystem holding `path`.
    fn free_bytes(&self, path: &Path) -> io::Result<u64>;
}

/// [`FreeSpace`] by `statvfs(3)`: the blocks available to unprivileged
/// users times the fragment size (as `df` shows it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Statvfs;

impl FreeSpace for Statvfs {
    fn free_bytes(&self, path: &Path) -> io::Result<u64> {
        let st = rustix::fs::statvfs(path)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// How an [`SqliteStore`](super::SqliteStore) keeps room on its disk.
///
/// - Inserts are refused ([`InsertOutcome::DiskLow`]) while the free space
///   (of the filesystem, plus the pages SQLite has freed inside the
///   database file and reuses before growing it), less what inserts since
///   the last reading may have used, would fall below `min_free_bytes`.
/// - A reserve file of `reserve_bytes` (`<database>-reserve`) is created
///   when the store opens. When a write finds the disk full, it is deleted
///   and the writes other than inserts are tried again, so that
///   acknowledgements (which need room for WAL frames) go through and the
///   queue can drain. While it is missing, inserts are refused; it comes
///   back once the filesystem has `min_free_bytes` beside it (checkpointing
///   and truncating the WAL first when that makes the room).
///
/// Implementation note: free space is read at most once per `refresh`,
/// before a group-commit batch, so an insert costs no system call; each
/// admitted insert is charged twice its size plus 16 KiB (its WAL frames,
/// then its database pages) until the next reading. The database's free
/// pages count as free because the file never shrinks: without them, a
/// disk filled once would refuse inserts for good after the queue drained.
///
/// [`InsertOutcome::DiskLow`]: relay_core::store::InsertOutcome::DiskLow
#[derive(Debug, Clone)]
pub struct DiskGuard {
    /// Free bytes below which inserts are refused; with 0, they are
    /// refused only after a write found the disk full, until the reserve
    /// is back.
    pub min_free_bytes: u64,
    /// Size of the reserve file; 0 keeps none.
    pub reserve_bytes: u64,
    /// Longest time a free-space reading is used.
    pub refresh: Duration,
    /// Where free space is read from.
    pub free_space: Arc<dyn FreeSpace>,
    /// How large the WAL may grow before a checkpoint, and what it is cut
    /// back to ([`wal_bytes_for`](super::wal_bytes_for)).
    pub wal_bytes: u64,
}

impl DiskGuard {
    /// A floor of `min_free_bytes`, with the default reserve, refresh and
    /// [`Statvfs`].
    pub fn new(min_free_bytes: u64) -> Self {
        Self {
            min_free_bytes,
            reserve_bytes: DEFAULT_DISK_RESERVE_BYTES,
            refresh: DEFAULT_DISK_REFRESH,
            free_space: Arc::new(Statvfs),
            wal_bytes: super::DEFAULT_WAL_BYTES,
        }
    }

    /// This guard with the WAL bounded to `bytes`.
    pub fn with_wal_bytes(mut self, bytes: u64) -> Self {
        self.wal_bytes = bytes;
        self
    }
}

impl Default for DiskGuard {
    fn default() -> Self {
        Self::new(DEFAULT_MIN_FREE_DISK_BYTES)
    }
}

/// The writer thread's view of its disk; see [`DiskGuard`].
#[derive(Debug)]
pub(super) struct Disk {
    guard: DiskGuard,
    database: PathBuf,
    reserve: PathBuf,
    page_size: u64,
    /// Whether the reserve file is in place (always, without a reserve).
    held: bool,
    /// Free bytes at the last reading, the database's free pages included.
    free: Option<u64>,
    /// What inserts admitted since then may have used.
    charged: u64,
    read_at: Option<Instant>,
    /// A write found the disk full since the last reading.
    full: bool,
    /// Whether inserts were refused at the last reading (logged on change).
    refusing: bool,
}

impl Disk {
    /// The guard of the database at `database`, read at once through
    /// `conn` (creating the reserve file if there is room).
    pub(super) fn open(database: &Path, guard: DiskGuard, conn: &Connection) -> Self {
        let reserve = beside(database, "-reserve");
        let held = guard.reserve_bytes == 0
            || std::fs::metadata(&reserve).is_ok_and(|m| m.len() >= guard.reserve_bytes);
        let page_size = conn
            .pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(4096);
        let mut disk = Self {
            guard,
            database: database.to_path_buf(),
            reserve,
            page_size,
            held,
            free: None,
            charged: 0,
            read_at: None,
            full: false,
            refusing: false,
        };
        disk.refresh(conn, Instant::now());
        disk
    }

    /// Reads the free space again if the last reading is older than the
    /// guard's `refresh`, creating the reserve file if it is missing and
    /// there is room; outside any transaction of `conn`.
    pub(super) fn refresh(&mut self, conn: &Connection, now: Instant) {
        if self
            .read_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.guard.refresh)
        {
            return;
        }
        self.read_at = Some(now);
        self.charged = 0;
        self.full = false;
        // Unknown is not low: a write that finds the disk full is still
        // refused.
        let Some(fs_free) = self.fs_free() else {
            self.free = None;
            return;
        };
        let fs_free = if self.held {
            fs_free
        } else {
            self.take_reserve(conn, fs_free)
        };
        let freelist = conn
            .pragma_query_value(None, "freelist_count", |r| r.get::<_, i64>(0))
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        self.free = Some(fs_free.saturating_add(freelist.saturating_mul(self.page_size)));
        self.note(self.admits(0));
    }

    fn fs_free(&self) -> Option<u64> {
        self.guard
            .free_space
            .free_bytes(&self.database)
            .inspect_err(|e| {
                tracing::warn!(error = %e, path = %self.database.display(), "cannot read free disk space");
            })
            .ok()
    }

    /// Creates the missing reserve file if the filesystem has room for it
    /// beside the floor; returns the free space after that.
    fn take_reserve(&mut self, conn: &Connection, mut fs_free: u64) -> u64 {
        let size = self.guard.reserve_bytes;
        let needed = self.guard.min_free_bytes.saturating_add(size);
        if fs_free < needed {
            // A WAL that grew while the disk filled may hold the room; its
            // frames are in the database once checkpointed. Truncated only
            // when that makes room, since a WAL that has to grow again
            // needs free space.
            let wal = wal_path(&self.database);
            let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
            if fs_free.saturating_add(wal_len) < needed {
                return fs_free;
            }
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::debug!(error = %e, "cannot truncate the WAL");
            }
            match self.fs_free() {
                Some(free) if free >= needed => fs_free = free,
                Some(free) => return free,
                None => return fs_free,
            }
        }
        match write_reserve(&self.reserve, size) {
            Ok(()) => {
                self.held = true;
                tracing::info!(path = %self.reserve.display(), bytes = size, "created the disk reserve");
                fs_free - size
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.reserve);
                tracing::warn!(error = %e, path = %self.reserve.display(), "cannot create the disk reserve");
                fs_free
            }
        }
    }

    /// Logs a change between accepting and refusing inserts.
    fn note(&mut self, admitting: bool) {
        if admitting != self.refusing {
            return;
        }
        self.refusing = !admitting;
        if admitting {
            tracing::info!(free = ?self.free, "disk space is back: accepting transactions");
        } else {
            tracing::warn!(
                free = ?self.free,
                charged = self.charged,
                min_free = self.guard.min_free_bytes,
                reserve_held = self.held,
                "disk space is short: refusing new transactions"
            );
        }
    }

    /// Whether an insert of `len` bytes may go ahead; if so, charges it.
    pub(super) fn admit(&mut self, len: u64) -> bool {
        let admitted = self.admits(len);
        if admitted {
            self.charged = self.charged.saturating_add(cost(len));
        } else {
            // Back to accepting is logged by a reading, not by a small
            // insert that fits where a large one did not.
            self.note(false);
        }
        admitted
    }

    fn admits(&self, len: u64) -> bool {
        if self.full || !self.held {
            return false;
        }
        let Some(free) = self.free else {
            return true;
        };
        let needed = self
            .guard
            .min_free_bytes
            .saturating_add(self.charged)
            .saturating_add(cost(len));
        free >= needed
    }

    /// A write found the disk full: gives the reserve's space back (for the
    /// writes to try again) and refuses inserts until the next reading.
    /// Returns whether there was a reserve to give.
    pub(super) fn hit_full(&mut self, now: Instant) -> bool {
        self.full = true;
        // The caller logs this refusal.
        self.refusing = true;
        self.read_at = Some(now);
        if !self.held || self.guard.reserve_bytes == 0 {
            return false;
        }
        self.held = false;
        match std::fs::remove_file(&self.reserve) {
            Ok(()) => {
                tracing::warn!(path = %self.reserve.display(), "the disk is full: released the disk reserve");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, path = %self.reserve.display(), "the disk is full and the disk reserve cannot be released");
                false
            }
        }
    }
}

/// `database` with `suffix` appended to its name, as SQLite names its
/// `-wal` file.
fn beside(database: &Path, suffix: &str) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn wal_path(database: &Path) -> PathBuf {
    beside(database, "-wal")
}

/// What an insert of `len` bytes may take from the disk before the next
/// checkpoint: its WAL frames, then its pages in the database file.
fn cost(len: u64) -> u64 {
    len.saturating_mul(2).saturating_add(INSERT_OVERHEAD)
}

/// Writes the reserve file: `size` bytes that no filesystem can compress
/// or leave sparse, on disk before it returns.
fn write_reserve(path: &Path, size: u64) -> io::Result<()> {
    let mut chunk = vec![0u8; 64 << 10];
    // xorshift64: cheap bytes without a pattern to compress.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in chunk.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    let mut file = File::create(path)?;
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_all()
}
