use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use natty::message::{Acker, Settlement};
use pin_project_lite::pin_project;

use super::LayersAbove;
use super::{settlement_for, AckLayer};
use crate::classify::ClassifyError;
use crate::settle::{log_settle_error, settle, SettleFuture};

pin_project! {
    /// The response future of [`Ack`](super::Ack).
    pub struct ResponseFuture<F: Future, C> {
        #[pin]
        state: State<F>,
        acker: Acker,
        delivered: u64,
        above: LayersAbove,
        layer: AckLayer<C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F: Future> {
        Calling { #[pin] future: F },
        Settling { settle: SettleFuture, settlement: Settlement, output: Option<F::Output> },
    }
}

impl<F: Future, C> ResponseFuture<F, C> {
    pub(super) fn new(
        future: F,
        acker: Acker,
        delivered: u64,
        above: LayersAbove,
        layer: AckLayer<C>,
    ) -> Self {
        Self {
            state: State::Calling { future },
            acker,
            delivered,
            above,
            layer,
        }
    }
}

impl<F, C, R, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<R, E>>,
    C: ClassifyError<E>,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let output = ready!(future.poll(cx));
                    let settlement = match &output {
                        Ok(_) if this.layer.double_ack => Settlement::DoubleAck,
                        Ok(_) => Settlement::Ack,
                        Err(err) => {
                            let decision = this.layer.classifier.classify(err);
                            if this.above.take(decision) {
                                return Poll::Ready(output);
                            }
                            settlement_for(decision, *this.delivered, &this.layer.nak_backoff)
                        }
                    };
                    let Some(settle) = settle(this.acker, settlement) else {
                        return Poll::Ready(output);
                    };
                    this.state.set(State::Settling {
                        settle,
                        settlement,
                        output: Some(output),
                    });
                }
                StateProj::Settling {
                    settle,
                    settlement,
                    output,
                } => {
                    match ready!(settle.as_mut().poll(cx)) {
                        Ok(()) => {
                            #[cfg(feature = "metrics")]
                            crate::metrics::record_settlement(*settlement);
                        }
                        Err(err) => log_settle_error(*settlement, &err),
                    }
                    let output = output
                        .take()
                        .expect("ack::ResponseFuture polled after it completed");
                    return Poll::Ready(output);
                }
            }
        }
    }
}
