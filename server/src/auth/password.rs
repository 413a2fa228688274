//! Password hashing: argon2id at the crate's defaults (the OWASP parameters), off the async threads.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;

use crate::error::Error;

/// The longest password accepted, in bytes: enough for any passphrase, short enough to hash quickly.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes and verifies passwords on the blocking pool, a few at a time: each hash takes ~19 MiB and tens
/// of milliseconds, so an unbounded burst of logins must queue rather than exhaust memory and threads.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified when the user does not exist so that a failed login
    /// takes the same path and time either way.
    decoy: Arc<str>,
}

impl Passwords {
    pub fn new(max_concurrent: usize) -> Result<Passwords, Error> {
        let decoy = hash_now(SaltString::generate(&mut OsRng).as_ref())?;
        Ok(Passwords { permits: Arc::new(Semaphore::new(max_concurrent.max(1))), decoy: decoy.into() })
    }

    /// The argon2id PHC string of `password`, which must be non-empty and not absurdly long.
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        check_new(password)?;
        let password = password.to_owned();
        self.run(move || hash_now(&password)).await?
    }

    /// True when `password` matches `phc`; with `phc` absent, checks against the decoy and answers false.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, Error> {
        let known = phc.is_some();
        let phc = phc.map(str::to_owned).unwrap_or_else(|| self.decoy.to_string());
        let password = password.to_owned();
        let matches = self
            .run(move || {
                PasswordHash::new(&phc)
                    .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                    .unwrap_or(false)
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
        let _permit = self.permits.acquire().await.map_err(|_| Error::Hashing)?;
        tokio::task::spawn_blocking(job).await.map_err(|_| Error::Hashing)
    }
}

/// Rules for a new password: not empty, not over [`MAX_PASSWORD_BYTES`].
pub fn check_new(password: &str) -> Result<(), Error> {
    if password.is_empty() {
        return Err(Error::Invalid("the password must not be empty"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::Invalid("the password is longer than 1024 bytes"));
    }
    Ok(())
}

fn hash_now(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| Error::Hashing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_is_argon2id_and_verifies_only_its_password() {
        let passwords = Passwords::new(2).unwrap();
        let phc = passwords.hash("correct horse").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(passwords.verify("correct horse", Some(&phc)).await.unwrap());
        assert!(!passwords.verify("wrong horse", Some(&phc)).await.unwrap());
        assert!(!passwords.verify("correct horse", None).await.unwrap());
    }

    #[tokio::test]
    async fn empty_passwords_are_refused() {
        let passwords = Passwords::new(1).unwrap();
        assert!(matches!(passwords.hash("").await, Err(Error::Invalid(_))));
    }
}
