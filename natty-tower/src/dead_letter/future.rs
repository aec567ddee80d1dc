use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use natty::header::{HeaderMap, NATS_MESSAGE_ID};
use natty::message::{Acker, DeliveryInfo, Settlement};
use natty::validate;
use natty::Message;
use pin_project_lite::pin_project;

use super::layer::Config;
use super::{
    message_id, DeadLetterAbove, DeadLetterPublisher, DELIVERY_COUNT, ERROR, ORIGINAL_CONSUMER,
    ORIGINAL_MESSAGE_ID, ORIGINAL_SEQUENCE, ORIGINAL_STREAM, ORIGINAL_SUBJECT,
};
use crate::catch_panic::PanicMessage;
use crate::classify::{ClassifyError, Decision};
use crate::retry::RetryAbove;
use crate::settle::log_settle_error;

/// The longest error text put in the [`ERROR`] header.
const MAX_ERROR_LEN: usize = 1024;

/// What is kept of a message to dead-letter it after its handler took it: a clone, which counts
/// references and copies nothing (a change the handler makes to its own is copied there).
#[derive(Debug)]
pub(super) struct Original {
    message: Message,
    last_delivery: bool,
}

impl Original {
    pub(super) fn of(msg: &Message, last_delivery: bool) -> Self {
        Self {
            message: msg.clone(),
            last_delivery,
        }
    }

    fn acker(&self) -> &Acker {
        self.message.acker()
    }

    /// Whether this layer dead-letters a failure decided as `decision`: one a retry layer
    /// above will try again is left to it.
    fn takes(&self, decision: Decision) -> bool {
        let retried = self
            .message
            .extensions()
            .get::<RetryAbove>()
            .is_some_and(|retry| retry.retries(decision));
        let above = DeadLetterAbove {
            last_delivery: self.last_delivery,
        };
        !retried && above.takes(decision)
    }

    /// The dead letter's headers: the original's, less `Nats-*` publish controls and any header
    /// that could not be sent again, plus its own `Nats-Msg-Id`, where it came from and why it
    /// failed. With the `opentelemetry` feature, the trace context is that of the span handling
    /// the original when it has one (the dead letter is published there), else the original's.
    fn dead_letter_headers(&self, info: &DeliveryInfo, error: &str) -> HeaderMap {
        let copied = |name: &str, value: &str| {
            let publish_control = name.len() > 5 && name[..5].eq_ignore_ascii_case("nats-");
            !publish_control && validate::header(name, value).is_ok()
        };
        let original = &self.message;
        let mut headers: HeaderMap = original
            .headers()
            .iter()
            .filter(|(name, value)| copied(name, value))
            .collect();
        #[cfg(feature = "opentelemetry")]
        {
            let mut current = HeaderMap::new();
            natty::otel::inject_current(&mut current);
            if current.contains_key(natty::header::TRACEPARENT) {
                headers.remove(natty::header::TRACEPARENT);
                headers.remove(natty::header::TRACESTATE);
                headers.extend(current.iter());
            }
        }
        // The original's id would make the stream drop the dead letter as its duplicate.
        headers.insert(NATS_MESSAGE_ID, message_id(info));
        if let Some(id) = original.headers().get(NATS_MESSAGE_ID) {
            headers.insert(ORIGINAL_MESSAGE_ID, id);
        }
        headers.insert(ORIGINAL_SUBJECT, original.subject());
        headers.insert(ORIGINAL_STREAM, &*info.stream);
        headers.insert(ORIGINAL_CONSUMER, &*info.consumer);
        headers.insert(ORIGINAL_SEQUENCE, info.stream_sequence.to_string());
        headers.insert(DELIVERY_COUNT, info.delivered.to_string());
        headers.insert(ERROR, one_line(error, MAX_ERROR_LEN));
        headers
    }
}

/// `text` with line breaks made spaces (a header value is one line), cut to `max` bytes.
fn one_line(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace(['\r', '\n'], " ")
}

/// A caught panic, resumed once its message is dealt with.
type Panic = Box<dyn Any + Send>;

/// What the inner service ended with.
enum Ended<O> {
    Output(O),
    Panicked(Panic),
}

pin_project! {
    /// The response future of [`DeadLetter`](super::DeadLetter).
    pub struct ResponseFuture<F: Future, K, C> {
        #[pin]
        state: State<F>,
        original: Option<Original>,
        config: Arc<Config<K, C>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F: Future> {
        Calling { #[pin] future: F },
        CallPanicked { panic: Option<Panic> },
        DeadLettering {
            work: Pin<Box<dyn Future<Output = ()> + Send>>,
            ended: Option<Ended<F::Output>>,
        },
    }
}

impl<F: Future, K, C> ResponseFuture<F, K, C> {
    pub(super) fn new(future: F, original: Original, config: Arc<Config<K, C>>) -> Self {
        Self {
            state: State::Calling { future },
            original: Some(original),
            config,
        }
    }

    pub(super) fn panicked(panic: Panic, original: Original, config: Arc<Config<K, C>>) -> Self {
        Self {
            state: State::CallPanicked { panic: Some(panic) },
            original: Some(original),
            config,
        }
    }
}

impl<F, K, C, T, E> ResponseFuture<F, K, C>
where
    F: Future<Output = Result<T, E>>,
{
    /// A call refused before it started: nak the message, then fail with `error`.
    pub(super) fn refused(acker: Acker, error: E, config: Arc<Config<K, C>>) -> Self {
        let work = Box::pin(async move {
            if let Err(err) = acker.nak(None).await {
                log_settle_error(Settlement::Nak(None), &err);
            }
        });
        Self {
            state: State::DeadLettering {
                work,
                ended: Some(Ended::Output(Err(error))),
            },
            original: None,
            config,
        }
    }
}

impl<F, K, C, T, E> Future for ResponseFuture<F, K, C>
where
    F: Future<Output = Result<T, E>>,
    E: fmt::Display,
    K: DeadLetterPublisher,
    C: ClassifyError<E> + Send + Sync + 'static,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let (ended, error) = match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(output)) => {
                            let Err(err) = &output else {
                                return Poll::Ready(output);
                            };
                            let decision = this.config.classifier.classify(err);
                            if !this.original.as_ref().is_some_and(|o| o.takes(decision)) {
                                return Poll::Ready(output);
                            }
                            let error = format!("{err:#}");
                            (Ended::Output(output), error)
                        }
                        Err(panic) => panicked(panic, this.original.as_ref()),
                    }
                }
                StateProj::CallPanicked { panic } => {
                    let panic = panic
                        .take()
                        .expect("dead_letter::ResponseFuture polled after it completed");
                    panicked(panic, this.original.as_ref())
                }
                StateProj::DeadLettering { work, ended } => {
                    ready!(work.as_mut().poll(cx));
                    match ended
                        .take()
                        .expect("dead_letter::ResponseFuture polled after it completed")
                    {
                        Ended::Output(output) => return Poll::Ready(output),
                        Ended::Panicked(panic) => resume_unwind(panic),
                    }
                }
            };
            let original = this.original.take().filter(|o| !o.acker().is_settled());
            let Some(original) = original else {
                // Settled below already, or not to be dead-lettered: pass it on.
                match ended {
                    Ended::Output(output) => return Poll::Ready(output),
                    Ended::Panicked(panic) => resume_unwind(panic),
                }
            };
            let work = Box::pin(dead_letter(original, error, this.config.clone()));
            this.state.set(State::DeadLettering {
                work,
                ended: Some(ended),
            });
        }
    }
}

/// A panic below: dead-lettered like a retryable error on the last delivery, else resumed.
fn panicked<O>(panic: Panic, original: Option<&Original>) -> (Ended<O>, String) {
    if !original.is_some_and(|o| o.last_delivery) {
        resume_unwind(panic);
    }
    let message = PanicMessage::from_payload(panic.as_ref());
    (
        Ended::Panicked(panic),
        format!("handler panicked: {message}"),
    )
}

/// Publish `original` to the dead-letter subject and terminate it, or nak it if that fails.
async fn dead_letter<K: DeadLetterPublisher, C>(
    original: Original,
    error: String,
    config: Arc<Config<K, C>>,
) {
    let info = original.message.info();
    let subject = config.target.subject_for(original.message.subject());
    let headers = original.dead_letter_headers(info, &error);
    let published = super::publish::publish(
        config.publisher.clone(),
        subject.clone(),
        headers,
        original.message.payload().clone(),
    )
    .await;
    let settlement = match published {
        Ok(()) => {
            // The failure itself is logged by whoever reports it (natty::consume::log_failure),
            // so its error is not repeated here.
            tracing::warn!(
                subject = %original.message.subject(),
                stream = %info.stream,
                stream_sequence = info.stream_sequence,
                delivered = info.delivered,
                dead_letter_subject = %subject,
                "message dead-lettered"
            );
            Settlement::Term
        }
        Err(publish_error) => {
            tracing::error!(
                subject = %original.message.subject(),
                stream = %info.stream,
                stream_sequence = info.stream_sequence,
                dead_letter_subject = %subject,
                error = %format_args!("{publish_error:#}"),
                "could not dead-letter message; nak'd for redelivery"
            );
            Settlement::Nak(Some(config.nak_backoff.delay(info.delivered)))
        }
    };
    match original.acker().settle(settlement).await {
        Ok(()) =>
        {
            #[cfg(feature = "metrics")]
            if settlement == Settlement::Term {
                crate::metrics::record_dead_lettered();
            } else {
                crate::metrics::record_settlement(settlement);
            }
        }
        Err(err) => log_settle_error(settlement, &err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_lines_and_cuts_on_a_char_boundary() {
        assert_eq!(one_line("a\r\nb\nc", 100), "a  b c");
        assert_eq!(one_line("héllo", 2), "h");
        assert_eq!(one_line("short", 1024), "short");
    }
}
