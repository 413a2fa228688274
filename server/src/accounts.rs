//! Creating accounts and checking room titles: the one path that the admin API, the CLI and tests all take.

use crate::auth::Passwords;
use crate::db::{Db, NewUser, User};
use crate::error::Error;
use crate::username;

/// Rights of a new account.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rights {
    pub is_staff: bool,
    pub is_admin: bool,
}

/// Checks the name and password, hashes the password and stores the account.
pub async fn create(db: &Db, passwords: &Passwords, name: &str, password: &str, rights: Rights) -> Result<User, Error> {
    let name = username::validate(name)?;
    let hash = passwords.hash(password).await?;
    db.create_user(NewUser {
        username: name,
        username_key: &username::fold(name),
        password_hash: &hash,
        is_staff: rights.is_staff,
        is_admin: rights.is_admin,
    })
    .await
}

/// Checks a room title: 1–255 characters once trimmed.
pub fn room_title(title: &str) -> Result<&str, Error> {
    let title = title.trim();
    if title.is_empty() {
        return Err(Error::Invalid("the room title must not be empty"));
    }
    if title.chars().count() > 255 {
        return Err(Error::Invalid("the room title is longer than 255 characters"));
    }
    Ok(title)
}
