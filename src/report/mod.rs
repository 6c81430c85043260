//! Placeholder until the status providers land.
use serde::{Deserialize, Serialize};
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Success,
    Failure,
    Error,
}
pub fn truncate_description(s: &str) -> String {
    if s.chars().count() <= 140 {
        return s.to_string();
    }
    let mut out: String = s.chars().take(139).collect();
    out.push('…');
    out
}
