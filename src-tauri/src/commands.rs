//! The commands the client's windows invoke. Each is a thin call into [`Desktop`]; errors reach the window
//! as `{status, message, retry_after}`.

use serde_json::Value;
use tauri::ipc::Channel;
use tauri::{AppHandle, Manager, State, WebviewUrl, WebviewWindowBuilder, Window};

use crate::api::Answer;
use crate::connection::Notice;
use crate::desktop::{Desktop, HostStatus};
use crate::error::{Error, Result};
use crate::lan::LanServer;
use crate::routing::View;
use crate::session::SessionInfo;
use crate::settings::Hosting;

/// The session if there is one: the app's own (a second window), else the remembered login.
#[tauri::command]
pub async fn session_restore(desktop: State<'_, Desktop>) -> Result<Option<SessionInfo>> {
    desktop.change_settings(async |settings| desktop.sessions.restore(settings).await).await?
}

#[tauri::command]
pub async fn login(
    desktop: State<'_, Desktop>,
    server: String,
    username: String,
    password: String,
    remember: bool,
) -> Result<SessionInfo> {
    let login =
        async |settings: &mut _| desktop.sessions.login(settings, &server, &username, &password, remember).await;
    desktop.change_settings(login).await?
}

/// Logs out everywhere in the app: the socket, the keyring entry, the server's session.
#[tauri::command]
pub async fn logout(desktop: State<'_, Desktop>) -> Result<()> {
    desktop.change_settings(async |settings| desktop.sessions.logout(settings).await).await
}

/// The recent servers, the remembered login, for the login window.
#[tauri::command]
pub fn settings_get(desktop: State<'_, Desktop>) -> Value {
    let settings = desktop.settings();
    serde_json::json!({ "recent_servers": settings.recent_servers, "remembered": settings.remembered })
}

/// The rooms this account had open last time.
#[tauri::command]
pub fn rooms_remembered(desktop: State<'_, Desktop>) -> Vec<i64> {
    let account = desktop.sessions.account().unwrap_or_default();
    desktop.settings().open_rooms.get(&account).cloned().unwrap_or_default()
}

/// Keeps the rooms open now for the next start.
#[tauri::command]
pub async fn rooms_remember(desktop: State<'_, Desktop>, rooms: Vec<i64>) -> Result<()> {
    let account = desktop.sessions.account().ok_or(Error::NotLoggedIn)?;
    desktop.change_settings(async |settings| settings.open_rooms.insert(account, rooms)).await.map(drop)
}

/// An HTTP call to the session's server, with its token.
#[tauri::command]
pub async fn api_request(
    desktop: State<'_, Desktop>,
    method: String,
    path: String,
    body: Option<Value>,
) -> Result<Answer> {
    let (server, token) = desktop.sessions.with(|server, token, _| (server.clone(), token.to_owned()))?;
    server.call(&method, &path, Some(&token), body.as_ref()).await
}

/// A window's page starts: its frames go to `events` from now on. Returns the socket's state.
#[tauri::command]
pub fn chat_attach(desktop: State<'_, Desktop>, window: Window, events: Channel<Value>) -> Value {
    desktop.windows.attach(window.label(), events)
}

/// A protocol command from a window.
#[tauri::command]
pub fn chat_send(desktop: State<'_, Desktop>, window: Window, command: String) -> Result<()> {
    desktop.sessions.with(|_, _, connection| connection.command(window.label(), command))
}

/// What a window shows, and whether it has the focus (for notifications).
#[tauri::command]
pub fn chat_view(desktop: State<'_, Desktop>, window: Window, room: Option<i64>, focused: bool) -> Result<()> {
    desktop.sessions.with(|_, _, connection| connection.view(window.label(), View { room, focused }))
}

/// A new message that is not the person's own: notified unless a focused window shows its room.
#[tauri::command]
pub fn chat_notify(desktop: State<'_, Desktop>, notice: Notice) -> Result<()> {
    desktop.sessions.with(|_, _, connection| connection.notify(notice))
}

/// Opens room `room` in a window of its own (or brings that window forward).
#[tauri::command]
pub async fn open_room_window(app: AppHandle, room: i64, title: String) -> Result<()> {
    let label = format!("room-{room}");
    if let Some(window) = app.get_webview_window(&label) {
        let _ = window.unminimize();
        let _ = window.set_focus();
        return Ok(());
    }
    WebviewWindowBuilder::new(&app, label, WebviewUrl::App("index.html".into()))
        .title(format!("{title} — MultiChat"))
        .inner_size(560.0, 680.0)
        .min_inner_size(360.0, 400.0)
        .build()
        .map_err(|e| Error::Window(e.to_string()))?;
    Ok(())
}

#[tauri::command]
pub async fn host_status(desktop: State<'_, Desktop>) -> Result<HostStatus> {
    Ok(desktop.host_status().await)
}

/// Turns hosting on or off, at `ip`:`port`, announced on the LAN as `name` or not; remembered for the next start.
#[tauri::command]
pub async fn host_set(
    desktop: State<'_, Desktop>,
    enabled: bool,
    ip: String,
    port: u16,
    advertise: bool,
    name: String,
) -> Result<HostStatus> {
    let ip = ip.trim().parse().map_err(|_| Error::BadAddress)?;
    desktop.set_hosting(Hosting { enabled, ip, port, advertise, name: name.trim().to_owned() }).await
}

/// The MultiChat servers on the LAN, sent to `events` now and each time the list changes.
#[tauri::command]
pub fn lan_servers(desktop: State<'_, Desktop>, window: Window, events: Channel<Vec<LanServer>>) {
    desktop.lan.watch(window.label(), events);
}

#[tauri::command]
pub async fn host_create_admin(desktop: State<'_, Desktop>, username: String, password: String) -> Result<()> {
    desktop.create_host_admin(&username, &password).await
}
