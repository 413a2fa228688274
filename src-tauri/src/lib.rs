//! The MultiChat desktop app: the Tauri v2 shell that loads the web client from `ui/`.
//!
//! This is the shell's first step: the window, the settings store, the app icon. The Rust-side connection
//! (one socket for all windows), the keyring and the "Host server" toggle build on it.

/// Runs the app until its last window closes.
pub fn run() {
    let app = tauri::Builder::default().plugin(tauri_plugin_store::Builder::default().build());
    if let Err(err) = app.run(tauri::generate_context!()) {
        eprintln!("MultiChat could not start: {err}");
        std::process::exit(1);
    }
}
