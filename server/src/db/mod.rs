//! Storage: one `sqlx::Any` pool that is either the embedded SQLite file or a Postgres server.
//!
//! The queries are written once, in SQL both backends accept (`$N` parameters, `RETURNING`, booleans,
//! times as Unix milliseconds); only the migrations differ, one folder per backend. One exception: on SQLite
//! the message writer stores messages through a connection of its own, without sqlx ([`sqlite_direct`]).

/// The condition on a `rooms` row under which `$author` may write there: checked in the statement that
/// advances the counter (or remembers the nonce), so that a just-demoted author is refused.
macro_rules! may_write {
    ($author:literal) => {
        concat!("(NOT staff_only OR EXISTS (SELECT 1 FROM users WHERE id = ", $author, " AND is_staff AND is_active))")
    };
}

mod messages;
mod rooms;
mod sessions;
mod sqlite_direct;
mod users;

pub use messages::{History, Message, NewMessage, Page, Stored, StoredMessage};
pub use rooms::{Room, RoomPatch};
pub use users::{NewUser, User, UserPatch};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions, Executor};

use sqlite_direct::SqliteDirect;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// How every connection to the embedded database is set up, the pool's and the message writer's alike.
const SQLITE_SETTINGS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;";

/// The file name of the embedded database inside the data directory.
pub const SQLITE_FILE: &str = "multichat.sqlite3";

/// Which database server a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How the connection pool is sized and how long a query waits for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Connections at most; `None`: 8 for SQLite (one writer at a time anyway), 16 for PostgreSQL.
    pub max_connections: Option<u32>,
    /// How long a query waits for a free connection (or a new one) before failing with 503.
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> PoolOptions {
        PoolOptions { max_connections: None, acquire_timeout: Duration::from_secs(5) }
    }
}

/// Whether connecting failed because the database is not there (yet): down, starting up, or unreachable.
/// Anything else (a wrong password, no such database) will not cure itself by waiting.
pub fn is_unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        // 57P03: "the database system is starting up".
        sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
        _ => false,
    }
}

/// A handle to the database; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// On SQLite, the connection that stores messages (see [`sqlite_direct`]).
    sqlite_direct: Option<Arc<SqliteDirect>>,
}

impl Db {
    /// Connects to `url` (`sqlite://…` or `postgres://…`). A SQLite file is created if missing and put in
    /// WAL mode, so that readers never wait for the writer and a killed process loses no commit.
    pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
        Db::connect_with(url, PoolOptions::default()).await
    }

    /// [`Db::connect`] with the pool sized and timed as `pool` says.
    pub async fn connect_with(url: &str, pool: PoolOptions) -> Result<Db, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(sqlx::Error::Configuration("DATABASE_URL must start with sqlite: or postgres:".into()));
        };
        let options: AnyConnectOptions = url.parse::<AnyConnectOptions>()?.disable_statement_logging();
        let sqlite_direct = match backend {
            Backend::Sqlite => {
                let file = url.parse::<SqliteConnectOptions>()?.get_filename().to_owned();
                Some(Arc::new(SqliteDirect::new(file)))
            }
            Backend::Postgres => None,
        };
        let max_connections = pool.max_connections.unwrap_or(match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        });
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(pool.acquire_timeout)
            // sqlx pings a connection before every hand-out by default. An embedded SQLite connection cannot
            // go stale, and for it the ping is one more trip to its worker thread per query; a Postgres
            // connection can die with its server, so it is still tested.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(SQLITE_SETTINGS).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Db { pool, backend, sqlite_direct })
    }

    /// Opens (creating if needed) the embedded database file inside `data_dir`.
    pub async fn open_sqlite_dir(data_dir: &Path) -> Result<Db, sqlx::Error> {
        std::fs::create_dir_all(data_dir)?;
        Db::connect(&sqlite_url(&data_dir.join(SQLITE_FILE))).await
    }

    /// Applies the migrations of this backend that have not run yet.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await,
        }
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads first cannot upgrade once another connection has
    /// committed (`SQLITE_BUSY_SNAPSHOT`, which the busy timeout does not wait out), and there may be
    /// several writers (the message writer, admin changes, the CLI, a second process).
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Whether this is an embedded SQLite file (one machine) rather than a database server.
    pub fn is_sqlite(&self) -> bool {
        self.backend == Backend::Sqlite
    }

    /// Answers whether the database is reachable (for `/readyz`).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    /// Closes every pooled connection; pending queries finish first.
    pub async fn close(&self) {
        if let Some(direct) = &self.sqlite_direct {
            direct.close();
        }
        self.pool.close().await;
    }
}

/// The `sqlite://` URL of a database file, created on first connect. sqlx percent-decodes the path and
/// stops it at `?`, so those characters are escaped: any data directory works.
pub fn sqlite_url(path: &Path) -> String {
    let path = path.display().to_string().replace('%', "%25").replace('?', "%3F").replace('#', "%23");
    format!("sqlite://{path}?mode=rwc")
}

/// Now, as the Unix milliseconds the tables store.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// Reads a flag column: a boolean from Postgres, an integer 0/1 from SQLite (see the SQLite migration).
fn flag(row: &sqlx::any::AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    use sqlx::Row;
    row.try_get::<bool, _>(column).or_else(|_| row.try_get::<i64, _>(column).map(|v| v != 0))
}

/// True when `err` is a unique-constraint violation (a duplicate username, say) on either backend.
fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[tokio::test]
    async fn the_embedded_database_opens_in_any_directory() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("My Chat? #1 100%");
        let db = Db::open_sqlite_dir(&dir).await.unwrap();
        db.migrate().await.unwrap();
        db.create_room("Lobby", false, false).await.unwrap();
        db.close().await;
        assert!(dir.join(SQLITE_FILE).is_file());
        let again = Db::open_sqlite_dir(&dir).await.unwrap();
        assert_eq!(again.list_rooms(true).await.unwrap().len(), 1, "the same file, reopened");
    }

    /// Sessions and rooms are read beside the pool, on connections kept between reads: each read must see
    /// what the pool committed just before, never an older snapshot.
    #[tokio::test]
    async fn reads_beside_the_pool_see_every_change_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite_dir(dir.path()).await.unwrap();
        db.migrate().await.unwrap();
        let new = NewUser { username: "Ann", username_key: "ann", password_hash: "x", is_staff: true, is_admin: false };
        let ann = db.create_user(new).await.unwrap();
        let room = db.create_room("Staff", true, false).await.unwrap();
        db.create_session("h1", ann.id, now_ms() + 60_000).await.unwrap();

        assert_eq!(db.session_user("h1").await.unwrap().map(|(user, _)| user.id), Some(ann.id));
        assert!(db.enterable_room(room.id, ann.id).await.is_ok());
        db.update_user(ann.id, &UserPatch { is_staff: Some(false), ..UserPatch::default() }).await.unwrap();
        assert!(matches!(db.enterable_room(room.id, ann.id).await, Err(Error::RoomAccessDenied)));
        db.delete_session("h1").await.unwrap();
        assert!(db.session_user("h1").await.unwrap().is_none(), "a session ended elsewhere is gone");
        db.delete_room(room.id).await.unwrap();
        assert!(matches!(db.enterable_room(room.id, ann.id).await, Err(Error::RoomInvalid)));

        db.close().await;
        assert!(db.session_user("h1").await.is_err(), "closed is closed, for these reads too");
    }
}
