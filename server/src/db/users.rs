//! The `users` table: accounts, their rights, and their argon2id password hashes.

use sqlx::Row;

use super::{flag, is_unique_violation, now_ms, Db};
use crate::error::Error;

/// An account as the rest of the server sees it (never with its hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub is_staff: bool,
    pub is_admin: bool,
    pub is_active: bool,
    pub created_at: i64,
}

/// What creating an account takes; `username_key` is the folded name (see [`crate::username`]).
pub struct NewUser<'a> {
    pub username: &'a str,
    pub username_key: &'a str,
    pub password_hash: &'a str,
    pub is_staff: bool,
    pub is_admin: bool,
}

/// A partial update of an account's flags and password; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserPatch {
    pub is_staff: Option<bool>,
    pub is_admin: Option<bool>,
    pub is_active: Option<bool>,
    pub password_hash: Option<String>,
}

const USER_COLUMNS: &str = "id, username, is_staff, is_admin, is_active, created_at";

pub(super) fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        is_staff: flag(row, "is_staff")?,
        is_admin: flag(row, "is_admin")?,
        is_active: flag(row, "is_active")?,
        created_at: row.try_get("created_at")?,
    })
}

/// [`user_from_row`] for a row read without sqlx (see [`super::sqlite_direct`]).
pub(super) fn user_from_sqlite(row: &rusqlite::Row) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get("id")?,
        username: row.get("username")?,
        is_staff: row.get("is_staff")?,
        is_admin: row.get("is_admin")?,
        is_active: row.get("is_active")?,
        created_at: row.get("created_at")?,
    })
}

impl Db {
    /// Creates an account; a name that folds to an existing one is [`Error::UsernameTaken`].
    pub async fn create_user(&self, new: NewUser<'_>) -> Result<User, Error> {
        self.insert_user(new, "").await?.ok_or(Error::UsernameTaken)
    }

    /// Creates the first account only while there is none (`None` once any exists): the check and the
    /// insert are one statement, so two racing setups cannot both succeed.
    pub async fn create_first_user(&self, new: NewUser<'_>) -> Result<Option<User>, Error> {
        self.insert_user(new, "WHERE NOT EXISTS (SELECT 1 FROM users)").await.map_err(|e| match e {
            Error::UsernameTaken => Error::SetupClosed,
            other => other,
        })
    }

    async fn insert_user(&self, new: NewUser<'_>, condition: &str) -> Result<Option<User>, Error> {
        let sql = format!(
            "INSERT INTO users (username, username_key, password_hash, is_staff, is_admin, is_active, created_at) \
             SELECT $1, $2, $3, $4, $5, TRUE, $6 {condition} RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(new.username)
            .bind(new.username_key)
            .bind(new.password_hash)
            .bind(new.is_staff)
            .bind(new.is_admin)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| if is_unique_violation(&e) { Error::UsernameTaken } else { e.into() })?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// The account whose folded name is `key`, with its password hash, for logging in.
    pub async fn user_with_hash(&self, key: &str) -> Result<Option<(User, String)>, Error> {
        let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE username_key = $1");
        let row = sqlx::query(&sql).bind(key).fetch_optional(&self.pool).await?;
        match row {
            Some(row) => Ok(Some((user_from_row(&row)?, row.try_get("password_hash")?))),
            None => Ok(None),
        }
    }

    /// The password hash of account `id`, to check the old password before a change.
    pub async fn password_hash(&self, id: i64) -> Result<Option<String>, Error> {
        let row =
            sqlx::query("SELECT password_hash FROM users WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("password_hash")).transpose()?)
    }

    pub async fn user(&self, id: i64) -> Result<Option<User>, Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Every account, oldest first.
    pub async fn list_users(&self) -> Result<Vec<User>, Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn count_users(&self) -> Result<i64, Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users").fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }

    /// Applies `patch` to account `id` and returns the result, refusing a change that would take away the
    /// last active admin (the check and the update share one transaction).
    pub async fn update_user(&self, id: i64, patch: &UserPatch) -> Result<User, Error> {
        let mut tx = self.begin_write().await?;
        let was_admin = is_active_admin(&mut tx, id).await?.ok_or(Error::NotFound)?;
        let sql = format!(
            "UPDATE users SET is_staff = COALESCE($2, is_staff), is_admin = COALESCE($3, is_admin), \
             is_active = COALESCE($4, is_active), password_hash = COALESCE($5, password_hash) \
             WHERE id = $1 RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(patch.is_staff)
            .bind(patch.is_admin)
            .bind(patch.is_active)
            .bind(patch.password_hash.as_deref())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(Error::NotFound)?;
        let user = user_from_row(&row)?;
        if was_admin && active_admins(&mut tx).await? == 0 {
            return Err(Error::LastAdmin);
        }
        tx.commit().await?;
        Ok(user)
    }

    /// Deletes account `id`; their messages stay, under their name. The last active admin cannot go.
    pub async fn delete_user(&self, id: i64) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        let was_admin = is_active_admin(&mut tx, id).await?.ok_or(Error::NotFound)?;
        sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if was_admin && active_admins(&mut tx).await? == 0 {
            return Err(Error::LastAdmin);
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn active_admins(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM users WHERE is_admin AND is_active").fetch_one(&mut **tx).await?.try_get("n")
}

/// `Some(true)` when account `id` is an active admin, `None` when there is no such account.
async fn is_active_admin(tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: i64) -> Result<Option<bool>, sqlx::Error> {
    let row =
        sqlx::query("SELECT is_admin, is_active FROM users WHERE id = $1").bind(id).fetch_optional(&mut **tx).await?;
    row.map(|r| Ok(flag(&r, "is_admin")? && flag(&r, "is_active")?)).transpose()
}
