//! Remembered logins: the session token (never the password) in the OS keyring, one entry per server and
//! user under the app's service name. Without a usable keyring, nothing is remembered and the person is
//! told so; a token is never written to a plain file.

use std::sync::OnceLock;

use keyring::{Entry, Error as KeyringError};

use crate::error::{Error, Result};

/// The service name the app's entries are filed under.
pub const SERVICE: &str = "app.multichat.desktop";

/// Which server and account a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub server: String,
    pub username: String,
}

impl Login {
    /// The keyring entry's user field: `ann@http://192.168.1.20:8000`.
    fn entry_name(&self) -> String {
        format!("{}@{}", self.username, self.server)
    }
}

/// Where remembered tokens live (a trait, so the app logic is tested without touching a real keyring).
pub trait CredentialStore: Send + Sync {
    fn save(&self, login: &Login, token: &str) -> Result<()>;
    /// The remembered token, if any.
    fn load(&self, login: &Login) -> Result<Option<String>>;
    /// Forgets the token (nothing remembered is not an error).
    fn forget(&self, login: &Login) -> Result<()>;
}

/// Which OS keyring holds the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The Secret Service over D-Bus (GNOME Keyring, KWallet): survives reboots.
    #[cfg(target_os = "linux")]
    SecretService,
    /// The kernel's session keyring (keyutils): kept until the session ends.
    #[cfg(target_os = "linux")]
    Keyutils,
    /// The macOS Keychain or the Windows Credential Manager.
    #[cfg(not(target_os = "linux"))]
    Platform,
}

/// The OS keyring, through the `keyring` crate.
#[derive(Debug, Clone, Copy)]
pub struct Keyring {
    backend: Backend,
}

impl Keyring {
    pub fn new(backend: Backend) -> Keyring {
        Keyring { backend }
    }

    /// The best keyring this computer has and that works now: on Linux the Secret Service, else the
    /// kernel's session keyring; `None` when neither can keep a token.
    pub fn detect() -> Option<Keyring> {
        #[cfg(target_os = "linux")]
        let candidates = [Backend::SecretService, Backend::Keyutils];
        #[cfg(not(target_os = "linux"))]
        let candidates = [Backend::Platform];
        let probe = Login { server: "probe".into(), username: "multichat".into() };
        candidates
            .into_iter()
            .map(Keyring::new)
            .find(|keyring| keyring.save(&probe, "probe").is_ok() && keyring.forget(&probe).is_ok())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn entry(&self, login: &Login) -> Result<Entry> {
        let user = login.entry_name();
        match self.backend {
            #[cfg(target_os = "linux")]
            Backend::SecretService => {
                let credential = keyring::secret_service::SsCredential::new_with_target(None, SERVICE, &user);
                Ok(Entry::new_with_credential(Box::new(credential.map_err(refusal)?)))
            }
            #[cfg(target_os = "linux")]
            Backend::Keyutils => {
                let credential = keyring::keyutils::KeyutilsCredential::new_with_target(None, SERVICE, &user);
                Ok(Entry::new_with_credential(Box::new(credential.map_err(refusal)?)))
            }
            #[cfg(not(target_os = "linux"))]
            Backend::Platform => Entry::new(SERVICE, &user).map_err(refusal),
        }
    }
}

impl CredentialStore for Keyring {
    fn save(&self, login: &Login, token: &str) -> Result<()> {
        match self.entry(login)?.set_password(token) {
            Ok(()) => Ok(()),
            // keyutils outside any session keyring has nowhere to put it.
            Err(KeyringError::NoEntry) => Err(Error::KeyringUnavailable),
            Err(err) => Err(refusal(err)),
        }
    }

    fn load(&self, login: &Login) -> Result<Option<String>> {
        match self.entry(login)?.get_password() {
            Ok(token) => Ok(Some(token)),
            Err(KeyringError::NoEntry) => Ok(None),
            Err(err) => Err(refusal(err)),
        }
    }

    fn forget(&self, login: &Login) -> Result<()> {
        match self.entry(login)?.delete_credential() {
            Ok(()) | Err(KeyringError::NoEntry) => Ok(()),
            Err(err) => Err(refusal(err)),
        }
    }
}

/// The OS keyring, found when first needed: finding it can mean a prompt (a Secret Service that must create
/// or unlock its keyring), which only someone who asked to be remembered should see, and not before the app's
/// window is up. Without one, it behaves as [`NoKeyring`].
#[derive(Debug, Default)]
pub struct SystemKeyring {
    found: OnceLock<Option<Keyring>>,
}

impl SystemKeyring {
    fn keyring(&self) -> Option<&Keyring> {
        self.found
            .get_or_init(|| {
                let found = Keyring::detect();
                match &found {
                    Some(keyring) => {
                        tracing::info!(backend = ?keyring.backend(), "remembered logins go to the keyring")
                    }
                    None => tracing::warn!("no usable keyring: logins will not be remembered"),
                }
                found
            })
            .as_ref()
    }
}

impl CredentialStore for SystemKeyring {
    fn save(&self, login: &Login, token: &str) -> Result<()> {
        self.keyring().ok_or(Error::KeyringUnavailable)?.save(login, token)
    }

    fn load(&self, login: &Login) -> Result<Option<String>> {
        self.keyring().map_or(Ok(None), |keyring| keyring.load(login))
    }

    fn forget(&self, login: &Login) -> Result<()> {
        self.keyring().map_or(Ok(()), |keyring| keyring.forget(login))
    }
}

/// No keyring at all: nothing is remembered, and saving says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKeyring;

impl CredentialStore for NoKeyring {
    fn save(&self, _: &Login, _: &str) -> Result<()> {
        Err(Error::KeyringUnavailable)
    }

    fn load(&self, _: &Login) -> Result<Option<String>> {
        Ok(None)
    }

    fn forget(&self, _: &Login) -> Result<()> {
        Ok(())
    }
}

fn refusal(err: KeyringError) -> Error {
    match err {
        KeyringError::PlatformFailure(_) => Error::KeyringUnavailable,
        KeyringError::NoStorageAccess(_) => Error::KeyringLocked,
        other => Error::Keyring(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_keyring_nothing_is_remembered_and_saving_says_why() {
        let login = Login { server: "http://lan:8000".into(), username: "ann".into() };
        let err = NoKeyring.save(&login, "token").unwrap_err();
        assert!(err.to_string().contains("cannot be remembered"), "{err}");
        assert_eq!(NoKeyring.load(&login).unwrap(), None);
        NoKeyring.forget(&login).unwrap();
    }

    #[test]
    fn entries_are_per_server_and_user() {
        let a = Login { server: "http://a:8000".into(), username: "ann".into() };
        let b = Login { server: "http://b:8000".into(), username: "ann".into() };
        assert_ne!(a.entry_name(), b.entry_name());
        assert_eq!(a.entry_name(), "ann@http://a:8000");
    }
}
