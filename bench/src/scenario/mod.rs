//! The load scenarios, each bounded in time.

pub mod churn;
pub mod fanout;
pub mod idle;
