use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use natty::message::{Acker, Settlement};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::settle::{log_settle_error, settle, SettleFuture};

pin_project! {
    /// The response future of [`InProgress`](super::InProgress).
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        #[pin]
        next: Sleep,
        interval: Duration,
        acker: Acker,
        // The "in progress" being sent; boxed, but only for handlers that run long.
        sending: Option<SettleFuture>,
        stopped: bool,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(future: F, acker: Acker, interval: Duration) -> Self {
        Self {
            future,
            next: tokio::time::sleep(interval),
            interval,
            acker,
            sending: None,
            // A zero interval would send in a busy loop; such a consumer gets no heartbeats.
            stopped: interval.is_zero(),
        }
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(output);
        }
        while !*this.stopped && this.next.as_mut().poll(cx).is_ready() {
            match settle(this.acker, Settlement::InProgress) {
                // A slow send is replaced rather than queued: one heartbeat is enough.
                Some(sending) => *this.sending = Some(sending),
                None => *this.stopped = true,
            }
            this.next.as_mut().reset(Instant::now() + *this.interval);
        }
        if let Some(sending) = this.sending {
            if let Poll::Ready(result) = sending.as_mut().poll(cx) {
                *this.sending = None;
                if let Err(err) = result {
                    log_settle_error(Settlement::InProgress, &err);
                }
            }
        }
        Poll::Pending
    }
}
