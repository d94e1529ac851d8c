//! Call records behind one small interface ([`Store`]), on sqlx with SQLite (a file in
//! the data directory, or in memory for tests). The schema uses only portable types
//! (TEXT, BIGINT) so that the same statements can later run on PostgreSQL and several
//! servers can share one database.

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::records::RecordWrite;
use crate::ServerError;

/// One call leg.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CallRecord {
    /// `CA` + 32 hex digits.
    pub sid: String,
    /// The parent leg's SID (for a leg the server dialed).
    pub parent_sid: Option<String>,
    /// The account.
    pub account_sid: String,
    /// The caller.
    #[sqlx(rename = "from_party")]
    pub from: String,
    /// The callee.
    #[sqlx(rename = "to_party")]
    pub to: String,
    /// `inbound` (to the server) or `outbound-dial`.
    pub direction: String,
    /// `ringing`, `in-progress`, `completed`, `busy`, `no-answer`, `canceled`, `failed`.
    pub status: String,
    /// Milliseconds since the epoch.
    pub start_time: i64,
    /// When it was answered.
    pub answer_time: Option<i64>,
    /// When it ended.
    pub end_time: Option<i64>,
    /// Seconds from answer to end.
    pub duration: Option<i64>,
    /// Why it ended (a catalogue code and text, or `hangup-by-caller`/`-callee`).
    pub end_cause: Option<String>,
}

/// A push binding: where to reach an identity's device when it is not registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct Binding {
    /// `BS` + 32 hex digits.
    pub sid: String,
    /// The identity.
    pub identity: String,
    /// `apn`, `fcm` or `webhook`.
    pub binding_type: String,
    /// The device token the gateway delivers to.
    pub address: String,
    /// A generic push gateway's URL (`http://` or `https://`), POSTed the `twi_*`
    /// payload; empty when a credential sends through APNs or FCM.
    pub gateway_url: String,
    /// Milliseconds since the epoch.
    pub created: i64,
    /// The push credential (`CR…`) that sends through APNs or FCM; none for a generic
    /// gateway.
    #[serde(default)]
    pub credential_sid: Option<String>,
}

/// A push credential, as Twilio's `/Credentials` has them: how to reach APNs (a token
/// key) or FCM (a service account).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Credential {
    /// `CR` + 32 hex digits.
    pub sid: String,
    /// The account's SID.
    pub account_sid: String,
    /// `apn` or `fcm`.
    pub credential_type: String,
    /// A name for people.
    pub friendly_name: String,
    /// APNs: the sandbox (development) host instead of production.
    pub sandbox: bool,
    /// The key material as JSON: APNs `{"private_key", "key_id", "team_id",
    /// "bundle_id"}`; FCM the service account's JSON key.
    pub secret: String,
    /// Milliseconds since the epoch.
    pub created: i64,
}

/// What became of one push to a provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PushResult {
    /// `NO` + 32 hex digits.
    pub sid: String,
    /// The binding pushed to.
    pub binding_sid: String,
    /// `apn`, `fcm` or `gateway`.
    pub provider: String,
    /// `delivered`, `removed` (the provider said the device is gone: the binding was
    /// deleted), `throttled` or `failed` (after the retries), or `refused`.
    pub outcome: String,
    /// The provider's last HTTP status (0 when none came).
    pub status: i64,
    /// The provider's reason (`Unregistered`, `UNREGISTERED`, `TooManyRequests`, ...).
    pub reason: String,
    /// How many requests it took.
    pub attempts: i64,
    /// Milliseconds since the epoch.
    pub at: i64,
}

/// A subscription to a call leg's messages: each message the leg's client sends is
/// POSTed (a form) to the callback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Subscription {
    /// `ZY` + 32 hex digits.
    pub sid: String,
    /// The account.
    pub account_sid: String,
    /// The call leg whose messages are delivered.
    pub call_sid: String,
    /// The `http://` or `https://` URL POSTed each message.
    pub callback: String,
    /// Milliseconds since the epoch.
    pub created: i64,
}

/// One insights event an SDK posted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct InsightsRecord {
    /// `IE` + 32 hex digits.
    pub sid: String,
    /// The account.
    pub account_sid: String,
    /// The posting client's identity (from its access token).
    pub identity: String,
    /// The call the event belongs to.
    pub call_sid: Option<String>,
    /// The event's group (`connection`, `settings`, ...).
    #[sqlx(rename = "event_group")]
    pub group: String,
    /// The event's name within its group.
    pub name: String,
    /// `debug`, `info`, `warning` or `error`.
    pub level: String,
    /// When the SDK saw it, in milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The event's detail as JSON text.
    pub payload: String,
    /// When the server stored it.
    pub received: i64,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The tables, in portable SQL (TEXT and BIGINT only).
const SCHEMA: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS calls (
        sid TEXT PRIMARY KEY,
        parent_sid TEXT,
        account_sid TEXT NOT NULL,
        from_party TEXT NOT NULL,
        to_party TEXT NOT NULL,
        direction TEXT NOT NULL,
        status TEXT NOT NULL,
        start_time BIGINT NOT NULL,
        answer_time BIGINT,
        end_time BIGINT,
        duration BIGINT,
        end_cause TEXT
    )",
    "CREATE TABLE IF NOT EXISTS bindings (
        sid TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        binding_type TEXT NOT NULL,
        address TEXT NOT NULL,
        gateway_url TEXT NOT NULL,
        created BIGINT NOT NULL,
        credential_sid TEXT
    )",
    "CREATE TABLE IF NOT EXISTS credentials (
        sid TEXT PRIMARY KEY,
        account_sid TEXT NOT NULL,
        credential_type TEXT NOT NULL,
        friendly_name TEXT NOT NULL,
        sandbox BOOLEAN NOT NULL,
        secret TEXT NOT NULL,
        created BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS push_results (
        sid TEXT PRIMARY KEY,
        binding_sid TEXT NOT NULL,
        provider TEXT NOT NULL,
        outcome TEXT NOT NULL,
        status BIGINT NOT NULL,
        reason TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS subscriptions (
        sid TEXT PRIMARY KEY,
        account_sid TEXT NOT NULL,
        call_sid TEXT NOT NULL,
        callback TEXT NOT NULL,
        created BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS insights_events (
        sid TEXT PRIMARY KEY,
        account_sid TEXT NOT NULL,
        identity TEXT NOT NULL,
        call_sid TEXT,
        event_group TEXT NOT NULL,
        name TEXT NOT NULL,
        level TEXT NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        payload TEXT NOT NULL,
        received BIGINT NOT NULL
    )",
];

/// Applies one change of a call record.
async fn apply<'e, E>(e: E, w: &RecordWrite) -> Result<(), ServerError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let q = match w {
        RecordWrite::Insert(c) => sqlx::query(
            "INSERT INTO calls (sid, parent_sid, account_sid, from_party, to_party, direction, status,
                start_time, answer_time, end_time, duration, end_cause)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&c.sid)
        .bind(&c.parent_sid)
        .bind(&c.account_sid)
        .bind(&c.from)
        .bind(&c.to)
        .bind(&c.direction)
        .bind(&c.status)
        .bind(c.start_time)
        .bind(c.answer_time)
        .bind(c.end_time)
        .bind(c.duration)
        .bind(&c.end_cause),
        RecordWrite::Answered { sid, at } => {
            sqlx::query("UPDATE calls SET status = 'in-progress', answer_time = $2 WHERE sid = $1")
                .bind(sid)
                .bind(*at)
        }
        RecordWrite::Ended { sid, status, cause, at } => sqlx::query(
            "UPDATE calls SET status = $2, end_cause = $3, end_time = $4,
                duration = CASE WHEN answer_time IS NULL THEN 0 ELSE ($4 - answer_time) / 1000 END
             WHERE sid = $1 AND end_time IS NULL",
        )
        .bind(sid)
        .bind(status)
        .bind(cause)
        .bind(*at),
    };
    q.execute(e).await.map_err(db)?;
    Ok(())
}

/// Every column of a call record.
const CALL_COLUMNS: &str = "SELECT sid, parent_sid, account_sid, from_party, to_party, direction, status,
    start_time, answer_time, end_time, duration, end_cause FROM calls";

/// The store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

fn db(e: sqlx::Error) -> ServerError {
    ServerError::Store(e.to_string())
}

impl Store {
    /// Opens (creating) the database at `url` (`sqlite://path` or `sqlite::memory:`).
    pub async fn open(url: &str) -> Result<Store, ServerError> {
        let memory = url.contains(":memory:");
        let opts: SqliteConnectOptions = url.parse().map_err(db)?;
        // WAL: readers never wait for the writer, and a committed transaction survives
        // the process being killed. NORMAL syncs at checkpoints, not at every commit
        // (a power cut can lose the last commits; a crash cannot).
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5));
        // An in-memory database lives in one connection.
        let pool = SqlitePoolOptions::new()
            .max_connections(if memory { 1 } else { 4 })
            .connect_with(opts)
            .await
            .map_err(db)?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await.map_err(db)?;
        }
        // A store made before bindings had credentials gains the column.
        let has_credential: Vec<(String,)> =
            sqlx::query_as("SELECT name FROM pragma_table_info('bindings') WHERE name = 'credential_sid'")
                .fetch_all(&pool)
                .await
                .map_err(db)?;
        if has_credential.is_empty() {
            sqlx::query("ALTER TABLE bindings ADD COLUMN credential_sid TEXT")
                .execute(&pool)
                .await
                .map_err(db)?;
        }
        Ok(Store { pool })
    }

    /// Records a new leg.
    pub async fn insert_call(&self, c: &CallRecord) -> Result<(), ServerError> {
        apply(&self.pool, &RecordWrite::Insert(c.clone())).await
    }

    /// Marks a leg answered.
    pub async fn answered(&self, sid: &str, at: i64) -> Result<(), ServerError> {
        apply(&self.pool, &RecordWrite::Answered { sid: sid.to_owned(), at }).await
    }

    /// Marks a leg ended with its final status and cause (once).
    pub async fn ended(&self, sid: &str, status: &str, cause: &str, at: i64) -> Result<(), ServerError> {
        let w = RecordWrite::Ended {
            sid: sid.to_owned(),
            status: status.to_owned(),
            cause: cause.to_owned(),
            at,
        };
        apply(&self.pool, &w).await
    }

    /// Applies `writes` in order in one transaction: all of them, or none.
    pub async fn write_batch(&self, writes: &[RecordWrite]) -> Result<(), ServerError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for w in writes {
            apply(&mut *tx, w).await?;
        }
        tx.commit().await.map_err(db)
    }

    /// The account's calls, newest first.
    pub async fn list_calls(
        &self,
        account_sid: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<CallRecord>, ServerError> {
        sqlx::query_as::<_, CallRecord>(&format!(
            "{CALL_COLUMNS} WHERE account_sid = $1 ORDER BY start_time DESC, sid LIMIT $2 OFFSET $3"
        ))
        .bind(account_sid)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// Adds a push binding (one per identity and address: a second replaces the first).
    pub async fn add_binding(&self, b: &Binding) -> Result<(), ServerError> {
        sqlx::query("DELETE FROM bindings WHERE identity = $1 AND address = $2")
            .bind(&b.identity)
            .bind(&b.address)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO bindings (sid, identity, binding_type, address, gateway_url, created, credential_sid)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&b.sid)
        .bind(&b.identity)
        .bind(&b.binding_type)
        .bind(&b.address)
        .bind(&b.gateway_url)
        .bind(b.created)
        .bind(&b.credential_sid)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// An identity's push bindings (every identity's with `None`).
    pub async fn bindings(&self, identity: Option<&str>) -> Result<Vec<Binding>, ServerError> {
        const COLUMNS: &str =
            "SELECT sid, identity, binding_type, address, gateway_url, created, credential_sid FROM bindings";
        match identity {
            Some(i) => {
                sqlx::query_as::<_, Binding>(&format!("{COLUMNS} WHERE identity = $1 ORDER BY created, sid"))
                    .bind(i)
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                sqlx::query_as::<_, Binding>(&format!("{COLUMNS} ORDER BY created, sid"))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(db)
    }

    /// Adds a push credential.
    pub async fn add_credential(&self, c: &Credential) -> Result<(), ServerError> {
        sqlx::query(
            "INSERT INTO credentials (sid, account_sid, credential_type, friendly_name, sandbox, secret, created)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&c.sid)
        .bind(&c.account_sid)
        .bind(&c.credential_type)
        .bind(&c.friendly_name)
        .bind(c.sandbox)
        .bind(&c.secret)
        .bind(c.created)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// The account's push credentials (one, by SID, with `sid`).
    pub async fn credentials(
        &self,
        account_sid: &str,
        sid: Option<&str>,
    ) -> Result<Vec<Credential>, ServerError> {
        sqlx::query_as::<_, Credential>(
            "SELECT sid, account_sid, credential_type, friendly_name, sandbox, secret, created FROM credentials
             WHERE account_sid = $1 AND ($2 IS NULL OR sid = $2) ORDER BY created, sid",
        )
        .bind(account_sid)
        .bind(sid)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// Removes a credential; false if there was none.
    pub async fn delete_credential(&self, account_sid: &str, sid: &str) -> Result<bool, ServerError> {
        let r = sqlx::query("DELETE FROM credentials WHERE account_sid = $1 AND sid = $2")
            .bind(account_sid)
            .bind(sid)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    /// Records what became of a push.
    pub async fn add_push_result(&self, r: &PushResult) -> Result<(), ServerError> {
        sqlx::query(
            "INSERT INTO push_results (sid, binding_sid, provider, outcome, status, reason, attempts, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&r.sid)
        .bind(&r.binding_sid)
        .bind(&r.provider)
        .bind(&r.outcome)
        .bind(r.status)
        .bind(&r.reason)
        .bind(r.attempts)
        .bind(r.at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// What became of the pushes to a binding (every binding's with `None`), oldest
    /// first.
    pub async fn push_results(&self, binding_sid: Option<&str>) -> Result<Vec<PushResult>, ServerError> {
        sqlx::query_as::<_, PushResult>(
            "SELECT sid, binding_sid, provider, outcome, status, reason, attempts, at FROM push_results
             WHERE ($1 IS NULL OR binding_sid = $1) ORDER BY at, sid",
        )
        .bind(binding_sid)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// Removes `identity`'s binding of the device `address`; whether there was one.
    pub async fn delete_device_binding(&self, identity: &str, address: &str) -> Result<bool, ServerError> {
        let r = sqlx::query("DELETE FROM bindings WHERE identity = $1 AND address = $2")
            .bind(identity)
            .bind(address)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    /// Removes a binding; false if there was none.
    pub async fn delete_binding(&self, sid: &str) -> Result<bool, ServerError> {
        let r = sqlx::query("DELETE FROM bindings WHERE sid = $1")
            .bind(sid)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    /// One call by SID.
    pub async fn get_call(&self, account_sid: &str, sid: &str) -> Result<Option<CallRecord>, ServerError> {
        sqlx::query_as::<_, CallRecord>(&format!("{CALL_COLUMNS} WHERE account_sid = $1 AND sid = $2"))
            .bind(account_sid)
            .bind(sid)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    /// Adds a call message subscription.
    pub async fn add_subscription(&self, s: &Subscription) -> Result<(), ServerError> {
        sqlx::query(
            "INSERT INTO subscriptions (sid, account_sid, call_sid, callback, created)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&s.sid)
        .bind(&s.account_sid)
        .bind(&s.call_sid)
        .bind(&s.callback)
        .bind(s.created)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// The subscriptions of one call leg, oldest first.
    pub async fn subscriptions(&self, call_sid: &str) -> Result<Vec<Subscription>, ServerError> {
        sqlx::query_as::<_, Subscription>(
            "SELECT sid, account_sid, call_sid, callback, created FROM subscriptions
             WHERE call_sid = $1 ORDER BY created, sid",
        )
        .bind(call_sid)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// Removes a subscription of a call leg; false if there was none.
    pub async fn delete_subscription(&self, call_sid: &str, sid: &str) -> Result<bool, ServerError> {
        let r = sqlx::query("DELETE FROM subscriptions WHERE sid = $1 AND call_sid = $2")
            .bind(sid)
            .bind(call_sid)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    /// Stores insights events (all or none).
    pub async fn add_insights(&self, events: &[InsightsRecord]) -> Result<(), ServerError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for e in events {
            sqlx::query(
                "INSERT INTO insights_events (sid, account_sid, identity, call_sid, event_group, name,
                    level, timestamp_ms, payload, received)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&e.sid)
            .bind(&e.account_sid)
            .bind(&e.identity)
            .bind(&e.call_sid)
            .bind(&e.group)
            .bind(&e.name)
            .bind(&e.level)
            .bind(e.timestamp_ms)
            .bind(&e.payload)
            .bind(e.received)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// Stored insights events, oldest first, filtered by call SID and identity.
    pub async fn insights(
        &self,
        account_sid: &str,
        call_sid: Option<&str>,
        identity: Option<&str>,
        limit: i64,
    ) -> Result<Vec<InsightsRecord>, ServerError> {
        sqlx::query_as::<_, InsightsRecord>(
            "SELECT sid, account_sid, identity, call_sid, event_group, name, level, timestamp_ms, payload,
                received
             FROM insights_events
             WHERE account_sid = $1 AND ($2 IS NULL OR call_sid = $2) AND ($3 IS NULL OR identity = $3)
             ORDER BY timestamp_ms, received, sid LIMIT $4",
        )
        .bind(account_sid)
        .bind(call_sid)
        .bind(identity)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }
}
