//! Password hashing: argon2id at the crate's defaults (the OWASP parameters), off the async threads.

use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use crate::error::Error;

/// The longest password accepted, in bytes: enough for any passphrase, short enough to hash quickly.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes and verifies passwords on the blocking pool, a few at a time: each hash takes ~19 MiB and tens
/// of milliseconds, so an unbounded burst of logins must queue rather than exhaust memory and threads.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Argon2's working memory, one per permit, kept and reused. Allocated afresh for every hash, the freed
    /// 19 MiB blocks stayed with the allocator, one per blocking thread it ran on: a server held ~430 MiB
    /// after a burst of 200 logins.
    memory: Arc<Mutex<Vec<Memory>>>,
    /// A real hash of a random password, verified when the user does not exist so that a failed login
    /// takes the same path and time either way.
    decoy: Arc<str>,
}

/// Argon2's working memory: as many blocks as the largest hash computed in it needed.
type Memory = Vec<Block>;

impl Passwords {
    pub fn new(max_concurrent: usize) -> Result<Passwords, Error> {
        let mut memory = Memory::new();
        let decoy = hash_with(SaltString::generate(&mut OsRng).as_ref(), &mut memory)?;
        Ok(Passwords {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            memory: Arc::new(Mutex::new(vec![memory])),
            decoy: decoy.into(),
        })
    }

    /// The argon2id PHC string of `password`, which must be non-empty and not absurdly long.
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        check_new(password)?;
        let password = password.to_owned();
        self.run(move |memory| hash_with(&password, memory)).await?
    }

    /// True when `password` matches `phc`; with `phc` absent, checks against the decoy and answers false.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, Error> {
        let known = phc.is_some();
        let phc = phc.map(str::to_owned).unwrap_or_else(|| self.decoy.to_string());
        let password = password.to_owned();
        let matches = self.run(move |memory| verify_with(password.as_bytes(), &phc, memory)).await?;
        Ok(known && matches)
    }

    /// Runs `job` on the blocking pool with a permit and a working memory of its own.
    async fn run<T: Send + 'static>(&self, job: impl FnOnce(&mut Memory) -> T + Send + 'static) -> Result<T, Error> {
        let _permit = self.permits.acquire().await.map_err(|_| Error::Hashing)?;
        // There are never more memories than permits: each one goes back before its permit does.
        let mut memory = self.memories().pop().unwrap_or_default();
        let (result, memory) =
            tokio::task::spawn_blocking(move || (job(&mut memory), memory)).await.map_err(|_| Error::Hashing)?;
        self.memories().push(memory);
        Ok(result)
    }

    fn memories(&self) -> std::sync::MutexGuard<'_, Vec<Memory>> {
        self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many working memories are kept (at most one per permit).
    #[cfg(test)]
    fn memories_kept(&self) -> usize {
        self.memories().len()
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

/// A new argon2id hash of `password` at the crate's default (OWASP) parameters, as a PHC string.
fn hash_with(password: &str, memory: &mut Memory) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    compute(Algorithm::Argon2id, Version::V0x13, Params::default(), password.as_bytes(), salt.as_salt(), memory)
        .map(|hash| hash.to_string())
        .map_err(|_| Error::Hashing)
}

/// Whether `password` matches the PHC string `phc`, computed with the algorithm, version and parameters the
/// string names (as `PasswordVerifier::verify_password` does); the outputs are compared in constant time.
fn verify_with(password: &[u8], phc: &str, memory: &mut Memory) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else { return false };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else { return false };
    let Ok(version) = hash.version.map(Version::try_from).transpose() else { return false };
    let Ok(params) = Params::try_from(&hash) else { return false };
    let computed = compute(algorithm, version.unwrap_or_default(), params, password, salt, memory);
    computed.ok().and_then(|computed| computed.hash).is_some_and(|output| output == expected)
}

/// What `PasswordHasher::hash_password` computes, with `memory` (grown if too small) as argon2's working
/// memory instead of a fresh allocation. Every block is written before it is read, so what a previous hash
/// left in it does not matter.
fn compute<'a>(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: Salt<'a>,
    memory: &mut Memory,
) -> password_hash::Result<PasswordHash<'a>> {
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let output = Output::init_with(output_len, |out| {
        Ok(argon2.hash_password_into_with_memory(password, salt_bytes, out, &mut memory[..])?)
    })?;
    Ok(PasswordHash {
        algorithm: algorithm.ident(),
        version: Some(version.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt),
        hash: Some(output),
    })
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
    async fn hashes_made_by_the_argon2_crate_itself_verify_and_ours_verify_with_it() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let passwords = Passwords::new(1).unwrap();
        // Stored before this module reused its memory: the crate's own PHC strings, other parameters too.
        let light = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8192, 3, 1, None).unwrap());
        for argon2 in [Argon2::default(), light] {
            let phc = argon2.hash_password(b"old horse", &SaltString::generate(&mut OsRng)).unwrap().to_string();
            assert!(passwords.verify("old horse", Some(&phc)).await.unwrap(), "{phc}");
            assert!(!passwords.verify("old hors", Some(&phc)).await.unwrap(), "{phc}");
        }
        let ours = passwords.hash("new horse").await.unwrap();
        assert!(Argon2::default().verify_password(b"new horse", &PasswordHash::new(&ours).unwrap()).is_ok());
        assert!(!passwords.verify("new horse", Some("$argon2id$v=19$m=19456,t=2,p=1$bm90IGEgaGFzaA")).await.unwrap());
        assert!(!passwords.verify("new horse", Some("not a hash")).await.unwrap());
    }

    #[tokio::test]
    async fn a_burst_of_logins_reuses_one_working_memory_per_permit() {
        let passwords = Passwords::new(2).unwrap();
        let phc = passwords.hash("correct horse").await.unwrap();
        let checks: Vec<_> = (0..12)
            .map(|n| {
                let (passwords, phc) = (passwords.clone(), phc.clone());
                tokio::spawn(async move {
                    let guess = if n % 2 == 0 { "correct horse" } else { "wrong horse" };
                    passwords.verify(guess, Some(&phc)).await.unwrap() == (n % 2 == 0)
                })
            })
            .collect();
        for check in checks {
            assert!(check.await.unwrap(), "every answer right while the memories are shared");
        }
        let kept = passwords.memories_kept();
        assert!((1..=2).contains(&kept), "{kept} working memories kept: each comes back, never more than the permits");
    }

    #[tokio::test]
    async fn empty_passwords_are_refused() {
        let passwords = Passwords::new(1).unwrap();
        assert!(matches!(passwords.hash("").await, Err(Error::Invalid(_))));
    }
}
