//! Who is asking: passwords, session tokens, and the login throttle.

pub mod password;
pub mod session;
pub mod throttle;

pub use password::Passwords;
pub use session::{CurrentUser, SessionToken};
pub use throttle::LoginThrottle;
