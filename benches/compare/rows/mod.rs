//! The rows of the table, one function each (some give two lines). A row
//! that cannot run here (a tool missing, a server that does not start) says
//! why instead of failing the run.

pub mod daemon;
pub mod fetch;
pub mod fleet;
pub mod load;
pub mod pass;
pub mod rollout;
pub mod rsync;

use crate::{Ctx, Row};

/// Runs `f` unless a tool in `needs` is missing; an error becomes a
/// "not run" row naming it, so one broken row does not hide the others.
pub fn guarded(
    ctx: &Ctx,
    measures: &[(&str, &str)],
    needs: &[&str],
    f: impl FnOnce() -> Result<Vec<Row>, String>,
) -> Vec<Row> {
    let why = match ctx.tools.missing(needs) {
        Some(why) => why,
        None => match f() {
            Ok(rows) => return rows,
            Err(e) => e,
        },
    };
    measures
        .iter()
        .map(|(m, t)| Row::not_run(m, t, why.clone()))
        .collect()
}
