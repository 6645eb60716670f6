//! The embedded job store: SQLite (bundled) in the data directory,
//! `salve.db`. Zero services to start.
//!
//! # Concurrency
//! Every write is one `BEGIN IMMEDIATE` transaction that reads the row it
//! changes and checks the state it expects (compare and set). WAL mode,
//! `synchronous = FULL`: a transition is durable when the call returns. A
//! busy database is waited for (up to [`BUSY_TIMEOUT`]).
//!
//! # Group commit
//! The frequent writes (submissions, transitions, decisions, the outbox)
//! of the threads of one process share commits: each waits in a queue;
//! whoever holds the connection next runs every write queued, each in its
//! own savepoint (a write that fails is undone alone and told so), then
//! commits once, with one `fsync` for all, and tells each writer its
//! result only then. Each write is still atomic, checked against the
//! state it expects, and durable when its call returns; running jobs
//! together no longer waits for one `fsync` per write, one after the
//! other. Reads have a connection of their own, so they do not wait
//! behind a group's `fsync` either.
//!
//! # Size
//! Over 600 lines: every SQL statement of the store is in this one file,
//! so that each transaction can be reviewed whole; about 100 lines are the
//! schema.
//!
//! # Migrations
//! `PRAGMA user_version` is the schema version; [`MIGRATIONS`] are applied
//! in order, each in its own transaction. A database written by a newer
//! salve is refused, not guessed at.

use super::{
    Changes, InstalledArtifact, JobRecord, JobState, JobStore, Listing, NewJob, OutboxEvent, StoreError,
    StoredApproval, StoredLease, StoredPlan, Transition, VoteCheck,
};
use crate::approval::Approval;
use crate::policy::Decision;
use crate::time::Timestamp;
use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long a write waits for another process's transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema, one migration per version.
pub const MIGRATIONS: &[&str] = &[
    // 1: jobs, transitions, nonces, plans, approvals, leases, artifacts, outbox.
    "CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        agent TEXT NOT NULL,
        job_hash TEXT NOT NULL,
        envelope TEXT NOT NULL,
        request TEXT NOT NULL,
        playbook TEXT NOT NULL,
        playbook_version TEXT NOT NULL,
        digest TEXT NOT NULL,
        environment TEXT NOT NULL,
        system TEXT NOT NULL,
        decision TEXT,
        plan_hash TEXT,
        outcome TEXT,
        expires_at INTEGER NOT NULL,
        submitted_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX jobs_by_state ON jobs (state, updated_at);
    CREATE TABLE transitions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job TEXT NOT NULL REFERENCES jobs (id),
        from_state TEXT,
        to_state TEXT NOT NULL,
        at INTEGER NOT NULL,
        reason TEXT NOT NULL
    ) STRICT;
    CREATE INDEX transitions_by_job ON transitions (job, seq);
    CREATE INDEX transitions_by_state ON transitions (to_state, at);
    CREATE TABLE nonces (
        agent TEXT NOT NULL,
        nonce TEXT NOT NULL,
        job TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (agent, nonce)
    ) STRICT;
    CREATE TABLE plans (
        job TEXT NOT NULL REFERENCES jobs (id),
        hash TEXT NOT NULL,
        changes TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (job, hash)
    ) STRICT;
    CREATE TABLE approvals (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job TEXT NOT NULL REFERENCES jobs (id),
        key_id TEXT NOT NULL,
        vote TEXT NOT NULL,
        plan_hash TEXT NOT NULL,
        approval TEXT NOT NULL,
        at INTEGER NOT NULL,
        void TEXT
    ) STRICT;
    CREATE UNIQUE INDEX approvals_once ON approvals (job, key_id) WHERE void IS NULL;
    CREATE TABLE leases (
        id TEXT PRIMARY KEY,
        job TEXT NOT NULL,
        credential TEXT NOT NULL,
        kind TEXT NOT NULL,
        expires_at TEXT,
        leased_at INTEGER NOT NULL,
        revoked_at INTEGER
    ) STRICT;
    CREATE INDEX leases_by_job ON leases (job);
    CREATE TABLE artifacts (
        digest TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        path TEXT NOT NULL,
        installed_at INTEGER NOT NULL,
        UNIQUE (name, version)
    ) STRICT;
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job TEXT,
        action TEXT NOT NULL,
        at INTEGER NOT NULL,
        detail TEXT NOT NULL
    ) STRICT;",
    // 2: what a worker running several jobs takes next (`takeable`), read
    // from the index alone.
    "CREATE INDEX jobs_to_take ON jobs (state, submitted_at, id, system);",
    // 3: listings newest first, of every job and of one agent's; the
    // nonces that may be forgotten, without a scan of them all.
    "CREATE INDEX jobs_by_submission ON jobs (submitted_at, id);
    CREATE INDEX jobs_by_agent ON jobs (agent, submitted_at, id);
    CREATE INDEX nonces_by_expiry ON nonces (expires_at);",
];

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => StoreError::Busy,
            _ => StoreError::Sqlite(e),
        }
    }
}

/// Most refused submissions kept in the outbox until a worker relays them.
pub const MAX_PENDING_REFUSALS: i64 = 1000;

impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.unix_ms()))
    }
}

impl FromSql for Timestamp {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Timestamp> {
        i64::column_result(value).map(Timestamp::from_unix_ms)
    }
}

/// The SQLite job store of one data directory.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Writes waiting for the next group commit.
    queued: Mutex<Vec<Queued>>,
    /// The reads' own connections (WAL: each sees what was committed when
    /// it began), so that a read does not wait behind a group's `fsync`,
    /// nor, mostly, behind another read.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

/// Runs one statement, prepared once per connection.
fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Reads one row, with a statement prepared once per connection.
fn query_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// How many statements each connection keeps prepared (more than the
/// store has, so that none is prepared again).
const STATEMENTS: usize = 64;

/// How many read-only connections a store keeps.
const READERS: usize = 4;

/// What broke a group commit: the error that ended its transaction, or
/// that left a write neither kept nor undone. Then nothing of the group is
/// committed, and every writer of it is told that error.
type Broken = Option<rusqlite::Error>;
/// A write waiting for a group commit. Run in the committer's transaction
/// (or told why there is none, and not run), it says what to tell its
/// caller once the commit is known.
type Queued = Box<dyn for<'t> FnOnce(Result<&Transaction<'t>, &rusqlite::Error>, &mut Broken) -> Reply + Send>;
/// Tells a writer its result, given how the commit went.
type Reply = Box<dyn FnOnce(Result<(), &rusqlite::Error>) + Send>;
/// What a writer hears: its result, or the panic of its own write (which
/// may have run on another thread), to be resumed on its own.
type Answer<T> = std::thread::Result<Result<T, StoreError>>;

fn sqlite_error(code: std::ffi::c_int, message: Option<String>) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), message)
}

/// A copy of `e` for each writer of a group (rusqlite's errors are not
/// `Clone`); its code, hence [`StoreError::Busy`], is kept.
fn copied(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => rusqlite::Error::SqliteFailure(*code, message.clone()),
        other => sqlite_error(rusqlite::ffi::SQLITE_ERROR, Some(other.to_string())),
    }
}

/// A write's error as the group's: its SQLite code kept where it has one.
fn as_sqlite(e: &StoreError) -> rusqlite::Error {
    match e {
        StoreError::Sqlite(e) => copied(e),
        StoreError::Busy => sqlite_error(rusqlite::ffi::SQLITE_BUSY, None),
        other => sqlite_error(rusqlite::ffi::SQLITE_ERROR, Some(other.to_string())),
    }
}

/// Runs one write of a group in its own savepoint: undone alone if it
/// fails or panics. When SQLite ends the whole transaction inside it (a
/// full disk, an I/O error, a conflict clause that rolls back), or the
/// savepoint cannot be released or undone, the group is `broken`.
fn in_savepoint<T>(
    tx: &Transaction<'_>,
    broken: &mut Broken,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Answer<T> {
    if let Err(e) = tx.execute_batch("SAVEPOINT one_write") {
        *broken = Some(copied(&e));
        return Ok(Err(e.into()));
    }
    let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(tx)));
    if tx.is_autocommit() {
        let e = match &value {
            Ok(Err(e)) => as_sqlite(e),
            _ => sqlite_error(rusqlite::ffi::SQLITE_ERROR, Some("the transaction ended inside a write".into())),
        };
        let told = copied(&e);
        *broken = Some(e);
        return value.map(|_| Err(told.into()));
    }
    let ended = match &value {
        Ok(Ok(_)) => tx.execute_batch("RELEASE one_write"),
        _ => tx.execute_batch("ROLLBACK TO one_write; RELEASE one_write"),
    };
    if let Err(e) = ended {
        *broken = Some(copied(&e));
        return value.map(|_| Err(e.into()));
    }
    value
}

/// A writer's result from its answer; its own write's panic, resumed.
fn told<T>(answer: Answer<T>) -> Result<T, StoreError> {
    answer.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn parse_state(text: &str) -> Result<JobState, StoreError> {
    text.parse().map_err(|e: String| corrupt("state", e))
}

const JOB_COLUMNS: &str = "id, state, agent, job_hash, envelope, request, playbook, playbook_version, digest, \
                           environment, system, decision, plan_hash, outcome, expires_at, submitted_at, updated_at";

type JobRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
);

fn read_job_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
        row.get(11)?,
        row.get(12)?,
        row.get(13)?,
        row.get(14)?,
        row.get(15)?,
        row.get(16)?,
    ))
}

fn job_from_row(row: JobRow) -> Result<JobRecord, StoreError> {
    let (id, state, agent, job_hash, envelope, request, playbook, playbook_version, digest, environment, system) =
        (row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10);
    Ok(JobRecord {
        state: parse_state(&state)?,
        envelope: serde_json::from_str(&envelope).map_err(|e| corrupt("envelope", e))?,
        request: serde_json::from_str(&request).map_err(|e| corrupt("request", e))?,
        decision: row.11.as_deref().map(serde_json::from_str).transpose().map_err(|e| corrupt("decision", e))?,
        plan_hash: row.12,
        outcome: row.13.as_deref().map(serde_json::from_str).transpose().map_err(|e| corrupt("outcome", e))?,
        // An expiry is kept in whole seconds; every other time in ms.
        expires_at: Timestamp::from_unix_secs(row.14),
        submitted_at: Timestamp::from_unix_ms(row.15),
        updated_at: Timestamp::from_unix_ms(row.16),
        id,
        agent,
        job_hash,
        playbook,
        playbook_version,
        digest,
        environment,
        system,
    })
}

fn get_job(tx: &Connection, id: &str) -> Result<Option<JobRecord>, StoreError> {
    let row = query_row(tx, &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), [id], read_job_row).optional()?;
    row.map(job_from_row).transpose()
}

fn insert_outbox(tx: &Transaction<'_>, events: &[OutboxEvent]) -> Result<(), StoreError> {
    for event in events {
        execute(
            tx,
            "INSERT INTO outbox (job, action, at, detail) VALUES (?1, ?2, ?3, ?4)",
            params![event.job, event.action.name(), event.at, event.detail.to_string()],
        )?;
    }
    Ok(())
}

fn expected_names(states: &[JobState]) -> String {
    states.iter().map(|s| s.name()).collect::<Vec<_>>().join(" or ")
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, and migrates it.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = crate::data_dir::DataDir::new(data_dir).store();
        let open_err = |source| StoreError::Open { path: path.clone(), source };
        let io_err = |e: std::io::Error| open_err(rusqlite::Error::ToSqlConversionFailure(Box::new(e)));
        {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            // Jobs carry evidence and grants: the store is readable by the
            // runner's user only, from the moment it exists (SQLite gives
            // its -wal and -shm files the same mode).
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir).map_err(io_err)?;
            // Only when it does not exist yet: closing any descriptor of
            // a database file drops every POSIX lock this process holds on
            // it, including those of a connection already open.
            match std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        let mut conn = Connection::open(&path).map_err(open_err)?;
        {
            use std::os::unix::fs::PermissionsExt;
            // Also for a store created by an older salve, or copied in (a
            // store owned by another user is left as it is).
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        SqliteStore::migrate(&mut conn, &path)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                reader.busy_timeout(BUSY_TIMEOUT)?;
                reader.set_prepared_statement_cache_capacity(STATEMENTS);
                Ok(Mutex::new(reader))
            })
            .collect::<Result<_, rusqlite::Error>>()
            .map_err(open_err)?;
        Ok(SqliteStore {
            path,
            conn: Mutex::new(conn),
            queued: Mutex::default(),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        loop {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let version: i64 = query_row(&tx, "PRAGMA user_version", [], |r| r.get(0))?;
            if version > known {
                return Err(StoreError::TooNew { path: path.to_path_buf(), found: version, known });
            }
            if version == known {
                return Ok(());
            }
            tx.execute_batch(MIGRATIONS[version as usize])?;
            tx.pragma_update(None, "user_version", version + 1)?;
            tx.commit()?;
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read-only connection: the first free one, from the next in turn;
    /// or, all busy, the next in turn once free.
    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            match self.readers[(first + i) % self.readers.len()].try_lock() {
                Ok(reader) => return reader,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.readers[first % self.readers.len()].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction of its own; commits
    /// if it returns `Ok`. For the rare writes (votes, installs, leases).
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `f` as one write of a group commit (see the module's docs):
    /// atomic on its own, and durable when this returns `Ok`.
    pub(super) fn write_grouped<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = std::sync::mpsc::sync_channel::<Answer<T>>(1);
        let queued: Queued = Box::new(move |tx, broken| {
            let value = match tx {
                Ok(tx) => in_savepoint(tx, broken, f),
                Err(e) => Ok(Err(copied(e).into())),
            };
            Box::new(move |committed| {
                let value = match (committed, value) {
                    (Err(e), Ok(_)) => Ok(Err(copied(e).into())),
                    (_, value) => value,
                };
                let _ = answer.send(value);
            })
        });
        self.queued.lock().unwrap_or_else(|p| p.into_inner()).push(queued);
        let conn = self.conn();
        // The last holder of the connection may have committed this write.
        if let Ok(answer) = answered.try_recv() {
            return told(answer);
        }
        let group = std::mem::take(&mut *self.queued.lock().unwrap_or_else(|p| p.into_inner()));
        SqliteStore::commit_group(conn, group);
        match answered.recv() {
            Ok(answer) => told(answer),
            Err(_) => Err(StoreError::Corrupt("a write of a group commit was dropped unanswered (a salve bug)".into())),
        }
    }

    /// Runs every write of `group` in one transaction and commits it, then
    /// tells each writer. Once the group is broken, the writes after are
    /// not run, nothing is committed, and every writer is told why.
    fn commit_group(mut conn: std::sync::MutexGuard<'_, Connection>, group: Vec<Queued>) {
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                for queued in group {
                    queued(Err(&e), &mut None)(Err(&e));
                }
                return;
            }
        };
        let mut broken: Broken = None;
        let mut replies = Vec::with_capacity(group.len());
        for queued in group {
            let reply = match &broken {
                None => queued(Ok(&tx), &mut broken),
                Some(e) => queued(Err(&copied(e)), &mut None),
            };
            replies.push(reply);
        }
        let committed = match broken {
            Some(e) => {
                // Rolled back (when SQLite has not already ended it).
                drop(tx);
                Err(e)
            }
            None => tx.commit(),
        };
        for reply in replies {
            reply(committed.as_ref().map(drop));
        }
    }

    /// How many writes wait for the next group commit.
    #[cfg(test)]
    pub(super) fn queued_len(&self) -> usize {
        self.queued.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn transition_in(
        tx: &Transaction<'_>,
        id: &str,
        expected: &[JobState],
        to: JobState,
        reason: &str,
        changes: &Changes<'_>,
        outbox: &[OutboxEvent],
    ) -> Result<JobRecord, StoreError> {
        let now = Timestamp::now();
        let job = get_job(tx, id)?.ok_or_else(|| StoreError::UnknownJob { id: id.into() })?;
        // A final state is final: no caller's `expected` can undo it.
        if job.state.is_final() || !expected.contains(&job.state) {
            return Err(StoreError::Conflict { id: id.into(), state: job.state, expected: expected_names(expected) });
        }
        if !job.state.may_move_to(to) {
            return Err(StoreError::IllegalMove { id: id.into(), from: job.state, to });
        }
        if let Some(decision) = changes.decision {
            let text = serde_json::to_string(decision).map_err(|e| corrupt("decision", e))?;
            execute(tx, "UPDATE jobs SET decision = ?2 WHERE id = ?1", params![id, text])?;
        }
        if let Some((hash, plan)) = changes.plan {
            execute(
                tx,
                "INSERT OR REPLACE INTO plans (job, hash, changes, at) VALUES (?1, ?2, ?3, ?4)",
                params![id, hash, plan.to_string(), now],
            )?;
            execute(tx, "UPDATE jobs SET plan_hash = ?2 WHERE id = ?1", params![id, hash])?;
        }
        if let Some(outcome) = changes.outcome {
            execute(tx, "UPDATE jobs SET outcome = ?2 WHERE id = ?1", params![id, outcome.to_string()])?;
        }
        if let Some(why) = changes.void_approvals {
            execute(tx, "UPDATE approvals SET void = ?2 WHERE job = ?1 AND void IS NULL", params![id, why])?;
        }
        execute(tx, "UPDATE jobs SET state = ?2, updated_at = ?3 WHERE id = ?1", params![id, to.name(), now])?;
        execute(
            tx,
            "INSERT INTO transitions (job, from_state, to_state, at, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, job.state.name(), to.name(), now, reason],
        )?;
        insert_outbox(tx, outbox)?;
        get_job(tx, id)?.ok_or_else(|| StoreError::UnknownJob { id: id.into() })
    }

    fn approvals_in(conn: &Connection, id: &str) -> Result<Vec<StoredApproval>, StoreError> {
        let mut statement =
            conn.prepare_cached("SELECT approval, at, void FROM approvals WHERE job = ?1 ORDER BY seq")?;
        let rows = statement.query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Timestamp>(1)?, r.get::<_, Option<String>>(2)?))
        })?;
        rows.map(|row| {
            let (text, at, void) = row?;
            let approval = serde_json::from_str(&text).map_err(|e| corrupt("approval", e))?;
            Ok(StoredApproval { approval, at, void })
        })
        .collect()
    }
}

impl JobStore for SqliteStore {
    fn submit(
        &self,
        job: &NewJob<'_>,
        decision: &Decision,
        state: JobState,
        reason: &str,
        outbox: &[OutboxEvent],
    ) -> Result<(), StoreError> {
        let now = Timestamp::now();
        // What the write needs, owned: another thread may run it.
        let envelope = serde_json::to_string(job.envelope).map_err(|e| corrupt("envelope", e))?;
        let request = serde_json::to_string(job.request).map_err(|e| corrupt("request", e))?;
        let decision = serde_json::to_string(decision).map_err(|e| corrupt("decision", e))?;
        let own = |s: &str| s.to_string();
        let (id, nonce, agent, job_hash) =
            (own(&job.request.id), own(&job.request.nonce), own(job.agent), own(job.job_hash));
        let (playbook, version, digest) = (own(job.playbook), own(job.playbook_version), own(job.digest));
        let (environment, system) = (own(&job.request.target.environment), own(&job.request.target.system));
        let (expires_at, reason, outbox) = (job.expires_at.unix_secs(), own(reason), outbox.to_vec());
        self.write_grouped(move |tx| {
            let used: Option<String> = tx
                .query_row("SELECT job FROM nonces WHERE agent = ?1 AND nonce = ?2", params![agent, nonce], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(used) = used {
                return Err(StoreError::Replay { agent, nonce, job: used });
            }
            let exists: bool = query_row(tx, "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1)", [&id], |r| r.get(0))?;
            if exists {
                return Err(StoreError::DuplicateJob { id });
            }
            // Nonces of jobs that expired a day ago cannot be replayed (the
            // expiry is checked first): forget them.
            execute(tx, "DELETE FROM nonces WHERE expires_at < ?1", [now.unix_secs() - 86_400])?;
            execute(
                tx,
                "INSERT INTO nonces (agent, nonce, job, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![agent, nonce, id, expires_at],
            )?;
            execute(
                tx,
                &format!("INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL, NULL, ?13, ?14, ?14)"),
                params![
                    id,
                    state.name(),
                    agent,
                    job_hash,
                    envelope,
                    request,
                    playbook,
                    version,
                    digest,
                    environment,
                    system,
                    decision,
                    expires_at,
                    now,
                ],
            )?;
            execute(
                tx,
                "INSERT INTO transitions (job, from_state, to_state, at, reason) VALUES (?1, NULL, ?2, ?3, ?4)",
                params![id, state.name(), now, reason],
            )?;
            insert_outbox(tx, &outbox)
        })
    }

    fn submit_refusal(&self, event: &OutboxEvent) -> Result<(), StoreError> {
        self.write(|tx| {
            // Anyone who can reach the store can be refused: a flood of
            // refusals must not grow it without end while no worker relays.
            let pending: i64 = query_row(tx, "SELECT count(*) FROM outbox WHERE job IS NULL", [], |r| r.get(0))?;
            if pending >= MAX_PENDING_REFUSALS {
                return Err(StoreError::OutboxFull { pending });
            }
            insert_outbox(tx, std::slice::from_ref(event))
        })
    }

    fn record_decision(&self, id: &str, decision: &Decision) -> Result<(), StoreError> {
        let text = serde_json::to_string(decision).map_err(|e| corrupt("decision", e))?;
        // Only while the job is about to run: a job moved meanwhile (a
        // rejection) keeps the decision it ended with.
        let id = id.to_string();
        self.write_grouped(move |tx| {
            execute(tx, "UPDATE jobs SET decision = ?2 WHERE id = ?1 AND state = 'approved'", params![id, text])?;
            Ok(())
        })
    }

    fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        get_job(&self.reader(), id)
    }

    fn list(&self, listing: &Listing, limit: u32) -> Result<Vec<JobRecord>, StoreError> {
        // Only the conditions set, so that the query planner can take the
        // index for each (an agent's, or every job's, newest first) and
        // start at the cursor rather than scan to it.
        let mut conditions = Vec::new();
        let mut values: Vec<Box<dyn ToSql>> = Vec::new();
        if let Some(state) = listing.state {
            values.push(Box::new(state.name()));
            conditions.push(format!("state = ?{}", values.len()));
        }
        if let Some(agent) = &listing.agent {
            values.push(Box::new(agent.clone()));
            conditions.push(format!("agent = ?{}", values.len()));
        }
        if let Some(names) = &listing.environments {
            values.push(Box::new(serde_json::to_string(names).map_err(|e| corrupt("environments", e))?));
            conditions.push(format!("environment IN (SELECT value FROM json_each(?{}))", values.len()));
        }
        if let Some(cursor) = &listing.after {
            // Newest first, then by id descending: the cursor is a strict
            // bound on that order, so pages neither repeat nor skip a job.
            values.push(Box::new(cursor.submitted_at));
            values.push(Box::new(cursor.id.clone()));
            let (at, id) = (values.len() - 1, values.len());
            conditions.push(format!("(submitted_at, id) < (?{at}, ?{id})"));
        }
        values.push(Box::new(limit));
        let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        let conn = self.reader();
        let mut statement = conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs {filter} ORDER BY submitted_at DESC, id DESC LIMIT ?{}",
            values.len()
        ))?;
        let rows = statement.query_map(rusqlite::params_from_iter(values.iter()), read_job_row)?;
        rows.map(|row| job_from_row(row?)).collect()
    }

    fn all_in(&self, states: &[JobState], limit: u32) -> Result<Vec<JobRecord>, StoreError> {
        let names: Vec<&str> = states.iter().map(|s| s.name()).collect();
        let conn = self.reader();
        let mut statement = conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN (SELECT value FROM json_each(?1)) \
             ORDER BY updated_at, id LIMIT ?2"
        ))?;
        let rows = statement.query_map(
            params![serde_json::to_string(&names).map_err(|e| corrupt("states", e))?, limit],
            read_job_row,
        )?;
        rows.map(|row| job_from_row(row?)).collect()
    }

    fn takeable(&self, states: &[JobState], busy: &[&str], limit: u32) -> Result<Vec<JobRecord>, StoreError> {
        let names: Vec<&str> = states.iter().map(|s| s.name()).collect();
        let names = serde_json::to_string(&names).map_err(|e| corrupt("states", e))?;
        let busy = serde_json::to_string(busy).map_err(|e| corrupt("systems", e))?;
        let conn = self.reader();
        // Turns are taken among the oldest jobs of free systems only (a
        // bounded look, read from the index), so that taking costs the same
        // however many jobs wait; whole rows are read for the jobs taken.
        let mut statement = conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id IN (SELECT id FROM (SELECT id, submitted_at, \
             ROW_NUMBER() OVER (PARTITION BY system ORDER BY submitted_at, id) AS turn FROM (SELECT id, system, \
             submitted_at FROM jobs WHERE state IN (SELECT value FROM json_each(?1)) \
             AND system NOT IN (SELECT value FROM json_each(?2)) ORDER BY submitted_at, id LIMIT ?4)) \
             WHERE turn = 1 ORDER BY submitted_at, id LIMIT ?3) ORDER BY submitted_at, id"
        ))?;
        let look = limit.saturating_mul(16).max(64);
        let rows = statement.query_map(params![names, busy, limit, look], read_job_row)?;
        rows.map(|row| job_from_row(row?)).collect()
    }

    fn count_in(&self, states: &[JobState]) -> Result<u64, StoreError> {
        let names: Vec<&str> = states.iter().map(|s| s.name()).collect();
        let names = serde_json::to_string(&names).map_err(|e| corrupt("states", e))?;
        let count: i64 = query_row(
            &self.reader(),
            "SELECT COUNT(*) FROM jobs WHERE state IN (SELECT value FROM json_each(?1))",
            params![names],
            |row| row.get(0),
        )?;
        Ok(count as u64)
    }

    fn transition(
        &self,
        id: &str,
        expected: &[JobState],
        to: JobState,
        reason: &str,
        changes: &Changes<'_>,
        outbox: &[OutboxEvent],
    ) -> Result<JobRecord, StoreError> {
        let (id, expected, reason, outbox) = (id.to_string(), expected.to_vec(), reason.to_string(), outbox.to_vec());
        let decision = changes.decision.cloned();
        let plan = changes.plan.map(|(hash, plan)| (hash.to_string(), plan.clone()));
        let outcome = changes.outcome.cloned();
        let void_approvals = changes.void_approvals.map(str::to_string);
        self.write_grouped(move |tx| {
            let changes = Changes {
                decision: decision.as_ref(),
                plan: plan.as_ref().map(|(hash, plan)| (hash.as_str(), plan)),
                outcome: outcome.as_ref(),
                void_approvals: void_approvals.as_deref(),
            };
            SqliteStore::transition_in(tx, &id, &expected, to, &reason, &changes, &outbox)
        })
    }

    fn vote(
        &self,
        id: &str,
        approval: &Approval,
        check: &mut dyn FnMut(&JobRecord, &[StoredApproval]) -> VoteCheck,
        outbox: &[OutboxEvent],
    ) -> Result<Option<JobRecord>, StoreError> {
        self.write(|tx| {
            let job = get_job(tx, id)?.ok_or_else(|| StoreError::UnknownJob { id: id.into() })?;
            let current =
                SqliteStore::approvals_in(tx, id)?.into_iter().filter(|a| a.void.is_none()).collect::<Vec<_>>();
            let next = match check(&job, &current) {
                VoteCheck::Refuse => return Ok(None),
                VoteCheck::Record(next) => next,
            };
            // `check` let this key vote, so a vote it cast before no longer
            // counts (it expired, or its plan moved): it gives way.
            execute(
                tx,
                "UPDATE approvals SET void = 'superseded: it no longer counted when its key voted again' \
                 WHERE job = ?1 AND key_id = ?2 AND void IS NULL",
                params![id, approval.key_id],
            )?;
            execute(
                tx,
                "INSERT INTO approvals (job, key_id, vote, plan_hash, approval, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    approval.key_id,
                    approval.vote.name(),
                    approval.plan_hash,
                    serde_json::to_string(approval).map_err(|e| corrupt("approval", e))?,
                    Timestamp::now()
                ],
            )?;
            match next {
                Some((to, reason)) => {
                    SqliteStore::transition_in(tx, id, &[job.state], to, &reason, &Changes::default(), outbox).map(Some)
                }
                None => {
                    insert_outbox(tx, outbox)?;
                    Ok(Some(job))
                }
            }
        })
    }

    fn approvals(&self, id: &str) -> Result<Vec<StoredApproval>, StoreError> {
        SqliteStore::approvals_in(&self.reader(), id)
    }

    fn history(&self, id: &str) -> Result<Vec<Transition>, StoreError> {
        let conn = self.reader();
        let mut statement = conn
            .prepare_cached("SELECT from_state, to_state, at, reason FROM transitions WHERE job = ?1 ORDER BY seq")?;
        let rows = statement.query_map([id], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Timestamp>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (from, to, at, reason) = row?;
            Ok(Transition { from: from.as_deref().map(parse_state).transpose()?, to: parse_state(&to)?, at, reason })
        })
        .collect()
    }

    fn plan(&self, id: &str, hash: &str) -> Result<Option<StoredPlan>, StoreError> {
        let row = self
            .reader()
            .query_row("SELECT changes, at FROM plans WHERE job = ?1 AND hash = ?2", params![id, hash], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Timestamp>(1)?))
            })
            .optional()?;
        row.map(|(changes, at)| {
            Ok(StoredPlan {
                hash: hash.into(),
                changes: serde_json::from_str(&changes).map_err(|e| corrupt("plan", e))?,
                at,
            })
        })
        .transpose()
    }

    fn applied_since(&self, playbook: &str, environment: &str, since: Timestamp) -> Result<Vec<Timestamp>, StoreError> {
        let conn = self.reader();
        let mut statement = conn.prepare_cached(
            "SELECT t.at FROM transitions t JOIN jobs j ON j.id = t.job \
             WHERE t.to_state = 'applying' AND t.from_state = 'approved' AND t.at >= ?3 \
             AND j.playbook = ?1 AND j.environment = ?2 ORDER BY t.at",
        )?;
        let rows = statement.query_map(params![playbook, environment, since], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn outbox(&self, after: i64) -> Result<Vec<(i64, OutboxEvent)>, StoreError> {
        let conn = self.reader();
        let mut statement =
            conn.prepare_cached("SELECT seq, job, action, at, detail FROM outbox WHERE seq > ?1 ORDER BY seq")?;
        let rows = statement.query_map([after], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Timestamp>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (seq, job, action, at, detail) = row?;
            let detail = serde_json::from_str(&detail).map_err(|e| corrupt("outbox", e))?;
            let action = action.parse().map_err(|e: String| corrupt("outbox", e))?;
            Ok((seq, OutboxEvent { job, action, at, detail }))
        })
        .collect()
    }

    fn outbox_relayed(&self, seq: i64) -> Result<(), StoreError> {
        self.write_grouped(move |tx| {
            execute(tx, "DELETE FROM outbox WHERE seq <= ?1", [seq])?;
            Ok(())
        })
    }

    fn lease(&self, job: &str, lease: &StoredLease) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO leases (id, job, credential, kind, expires_at, leased_at, revoked_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![lease.id, job, lease.credential, lease.kind, lease.expires_at, lease.leased_at, lease.revoked_at],
        )?;
        Ok(())
    }

    fn revoke_leases(&self, job: &str) -> Result<Vec<String>, StoreError> {
        self.write(|tx| {
            let ids: Vec<String> = {
                let mut statement = tx.prepare_cached("SELECT id FROM leases WHERE job = ?1 AND revoked_at IS NULL")?;
                statement.query_map([job], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            execute(
                tx,
                "UPDATE leases SET revoked_at = ?2 WHERE job = ?1 AND revoked_at IS NULL",
                params![job, Timestamp::now()],
            )?;
            Ok::<_, StoreError>(ids)
        })
    }

    fn leases(&self, job: &str) -> Result<Vec<StoredLease>, StoreError> {
        let conn = self.reader();
        let mut statement = conn.prepare_cached(
            "SELECT id, credential, kind, expires_at, leased_at, revoked_at FROM leases WHERE job = ?1 ORDER BY leased_at",
        )?;
        let rows = statement.query_map([job], |r| {
            Ok(StoredLease {
                id: r.get(0)?,
                credential: r.get(1)?,
                kind: r.get(2)?,
                expires_at: r.get(3)?,
                leased_at: r.get(4)?,
                revoked_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn lease_revoked(&self, id: &str) -> Result<bool, StoreError> {
        let revoked: Option<Option<Timestamp>> =
            query_row(&self.reader(), "SELECT revoked_at FROM leases WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        Ok(matches!(revoked, Some(Some(_))))
    }

    fn install(&self, artifact: &InstalledArtifact) -> Result<(), StoreError> {
        self.write(|tx| {
            let taken: Option<String> = tx
                .query_row(
                    "SELECT digest FROM artifacts WHERE name = ?1 AND version = ?2",
                    params![artifact.name, artifact.version],
                    |r| r.get(0),
                )
                .optional()?;
            match taken {
                Some(digest) if digest == artifact.digest => Ok(()),
                Some(digest) => Err(StoreError::VersionTaken {
                    name: artifact.name.clone(),
                    version: artifact.version.clone(),
                    digest,
                }),
                None => {
                    execute(
                        tx,
                        "INSERT INTO artifacts (digest, name, version, path, installed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            artifact.digest,
                            artifact.name,
                            artifact.version,
                            artifact.path.to_string_lossy(),
                            Timestamp::now()
                        ],
                    )?;
                    Ok(())
                }
            }
        })
    }

    fn artifact(
        &self,
        name_version: Option<(&str, &str)>,
        digest: Option<&str>,
    ) -> Result<Option<InstalledArtifact>, StoreError> {
        let conn = self.reader();
        let row = conn
            .query_row(
                "SELECT digest, name, version, path FROM artifacts \
                 WHERE (?1 IS NULL OR (name = ?1 AND version = ?2)) AND (?3 IS NULL OR digest = ?3)",
                params![name_version.map(|n| n.0), name_version.map(|n| n.1), digest],
                |r| {
                    Ok(InstalledArtifact {
                        digest: r.get(0)?,
                        name: r.get(1)?,
                        version: r.get(2)?,
                        path: PathBuf::from(r.get::<_, String>(3)?),
                    })
                },
            )
            .optional()?;
        Ok(row)
    }
}
