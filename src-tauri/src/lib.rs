//! The MultiChat desktop app: the Tauri v2 shell that loads the web client from `ui/`.
//!
//! So far: the window, the settings store, the app icon, [`host`] (the embedded server behind the "Host
//! server" toggle) and [`credentials`] (remembered logins in the OS keyring). The Rust-side connection (one
//! socket for all windows) and the commands that give the client its server come next.

pub mod credentials;
pub mod host;

/// Runs the app until its last window closes.
pub fn run() {
    let app = tauri::Builder::default().plugin(tauri_plugin_store::Builder::default().build());
    if let Err(err) = app.run(tauri::generate_context!()) {
        eprintln!("MultiChat could not start: {err}");
        std::process::exit(1);
    }
}
