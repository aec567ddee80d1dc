//! Settling a message from inside a named future, shared by the layers that settle.

use std::future::Future;
use std::pin::Pin;

use natty::error::SettleErrorKind;
use natty::message::{Acker, SettleError, Settlement};

/// A settle call under way. natty's `Acker::settle` is an `async fn`, so it cannot be named.
pub(crate) type SettleFuture = Pin<Box<dyn Future<Output = Result<(), SettleError>> + Send>>;

/// Start settling through a clone of `acker`, unless it is settled already.
pub(crate) fn settle(acker: &Acker, settlement: Settlement) -> Option<SettleFuture> {
    if acker.is_settled() {
        return None;
    }
    let acker = acker.clone();
    Some(Box::pin(async move { acker.settle(settlement).await }))
}

/// Log a settlement that failed for any reason but a race with another settler.
pub(crate) fn log_settle_error(settlement: Settlement, err: &SettleError) {
    if err.kind() != SettleErrorKind::AlreadySettled {
        tracing::warn!(?settlement, error = %format_args!("{err:#}"), "could not settle message");
    }
}
