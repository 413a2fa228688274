//! The MultiChat desktop app: the Tauri v2 shell around the web client in `ui/`.
//!
//! The client's windows share ONE chat socket held here ([`connection`], routed by [`routing`]) and reach
//! the server's HTTP API through here too ([`api`]), so the webview never holds the session token. Logins
//! can be remembered in the OS keyring ([`credentials`]); "Host server" runs the server library inside the
//! app ([`host`]), announced on the LAN, where the login window finds servers ([`lan`]); [`settings`] persist through `tauri-plugin-store`.

pub mod address;
pub mod api;
mod commands;
pub mod connection;
pub mod credentials;
mod desktop;
pub mod error;
pub mod host;
pub mod lan;
pub mod routing;
pub mod session;
pub mod settings;
pub mod tls;
mod windows;

use tauri::webview::PageLoadEvent;
use tauri::{Manager, RunEvent, WindowEvent};

use crate::desktop::Desktop;

/// Runs the app until its last window closes, then stops hosting gracefully.
pub fn run() {
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_store::Builder::default().build())
        .plugin(tauri_plugin_notification::init())
        .setup(|app| {
            let data_dir = app.path().app_data_dir()?;
            let desktop = Desktop::new(app.handle(), data_dir)?;
            // Hosting was on when the app last ran: it comes back on, before the window asks for the
            // remembered login (which may well be on this very server).
            tauri::async_runtime::block_on(desktop.apply_hosting());
            app.manage(desktop);
            Ok(())
        })
        .on_page_load(|webview, payload| {
            // A page that starts (again, if reloaded) is in no room yet.
            if payload.event() == PageLoadEvent::Started {
                if let Some(desktop) = webview.try_state::<Desktop>() {
                    let _ = desktop.sessions.with(|_, _, connection| connection.window_closed(webview.label()));
                }
            }
        })
        .on_window_event(|window, event| {
            if let WindowEvent::Destroyed = event {
                let desktop = window.state::<Desktop>();
                desktop.windows.detach(window.label());
                desktop.lan.unwatch(window.label());
                let _ = desktop.sessions.with(|_, _, connection| connection.window_closed(window.label()));
            }
        })
        .invoke_handler(tauri::generate_handler![
            commands::session_restore,
            commands::login,
            commands::logout,
            commands::settings_get,
            commands::rooms_remembered,
            commands::rooms_remember,
            commands::api_request,
            commands::chat_attach,
            commands::chat_send,
            commands::chat_view,
            commands::chat_notify,
            commands::open_room_window,
            commands::host_status,
            commands::host_set,
            commands::host_create_admin,
            commands::lan_servers,
        ])
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(err) => {
            eprintln!("MultiChat could not start: {err}");
            std::process::exit(1);
        }
    };
    app.run(|handle, event| {
        if let RunEvent::Exit = event {
            tauri::async_runtime::block_on(handle.state::<Desktop>().shut_down());
        }
    });
}
