//! The dashboard's files, embedded in the binary from `crates/central/assets/` (owned by the dashboard).

/// The app page (served at `/` with a valid session).
pub const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
/// The login page (served at `/` without a session).
pub const LOGIN_HTML: &str = include_str!("../assets/login.html");
/// The app's script.
pub const APP_JS: &str = include_str!("../assets/app.js");
/// The stylesheet.
pub const STYLE_CSS: &str = include_str!("../assets/style.css");

/// An asset by file name, with its content type.
pub fn lookup(file: &str) -> Option<(&'static str, &'static str)> {
    Some(match file {
        "dashboard.html" => (DASHBOARD_HTML, "text/html; charset=utf-8"),
        "login.html" => (LOGIN_HTML, "text/html; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return None,
    })
}

/// The login page with `message` in its error box (`<div id="login-error" class="alert hidden" …>`), so a
/// refused form post shows why without script.
pub fn login_page_with_error(message: &str) -> String {
    let escaped = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let marker = "id=\"login-error\" class=\"alert hidden\" role=\"alert\"></div>";
    let shown = format!("id=\"login-error\" class=\"alert\" role=\"alert\">{escaped}</div>");
    if LOGIN_HTML.contains(marker) {
        LOGIN_HTML.replacen(marker, &shown, 1)
    } else {
        LOGIN_HTML.to_owned()
    }
}
