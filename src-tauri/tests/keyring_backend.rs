//! The credential store against a REAL keyring backend, chosen by `MULTICHAT_KEYRING_BACKEND`
//! (`keyutils` or `secret-service`). These need a prepared environment — a fresh session keyring, or a
//! private D-Bus with an unlocked gnome-keyring — so `test.sh` runs them inside one (they are ignored in a
//! plain `cargo test`).

#![allow(clippy::unwrap_used)] // in a test, a panic is the failure report

use multichat_desktop::credentials::{Backend, CredentialStore, Keyring, Login, SystemKeyring};

fn backend() -> Backend {
    match std::env::var("MULTICHAT_KEYRING_BACKEND").as_deref() {
        Ok("keyutils") => Backend::Keyutils,
        Ok("secret-service") => Backend::SecretService,
        other => panic!("set MULTICHAT_KEYRING_BACKEND to keyutils or secret-service (got {other:?})"),
    }
}

#[test]
#[ignore = "needs a real keyring: test.sh runs it inside one"]
fn a_remembered_token_is_recalled_per_server_and_user_then_forgotten() {
    let keyring = Keyring::new(backend());
    let ann_here = Login { server: "http://127.0.0.1:8000".into(), username: "ann".into() };
    let ann_there = Login { server: "http://192.0.2.5:8000".into(), username: "ann".into() };
    assert_eq!(keyring.load(&ann_here).unwrap(), None);
    keyring.save(&ann_here, "token-here").unwrap();
    keyring.save(&ann_there, "token-there").unwrap();
    assert_eq!(keyring.load(&ann_here).unwrap().as_deref(), Some("token-here"));
    assert_eq!(keyring.load(&ann_there).unwrap().as_deref(), Some("token-there"));
    keyring.save(&ann_here, "token-newer").unwrap();
    assert_eq!(keyring.load(&ann_here).unwrap().as_deref(), Some("token-newer"), "a new login replaces the old");
    keyring.forget(&ann_here).unwrap();
    assert_eq!(keyring.load(&ann_here).unwrap(), None, "logout forgets");
    assert_eq!(keyring.load(&ann_there).unwrap().as_deref(), Some("token-there"), "other servers are kept");
    keyring.forget(&ann_there).unwrap();
    keyring.forget(&ann_there).unwrap(); // forgetting twice is fine

    // Each test environment has exactly one working backend, so detection must find that one, and the app's
    // store (which detects on first use) must keep tokens there.
    assert_eq!(Keyring::detect().map(|k| k.backend()), Some(backend()), "detect finds the keyring that works here");
    let app_store = SystemKeyring::default();
    app_store.save(&ann_here, "token-app").unwrap();
    assert_eq!(keyring.load(&ann_here).unwrap().as_deref(), Some("token-app"));
    app_store.forget(&ann_here).unwrap();
    assert_eq!(keyring.load(&ann_here).unwrap(), None);
}
