use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use tower::Layer;

use super::DeadLetter;
use crate::backoff::Backoff;
use crate::classify::DefaultClassifier;

/// Where dead letters go.
#[derive(Clone, Debug)]
pub(super) enum Target {
    Subject(String),
    Prefix(String),
}

impl Target {
    pub(super) fn subject_for(&self, original: &str) -> String {
        match self {
            Target::Subject(subject) => subject.clone(),
            Target::Prefix(prefix) => format!("{prefix}.{original}"),
        }
    }

    /// Every subject a dead letter may go to, as one subject with wildcards.
    pub(super) fn pattern(&self) -> String {
        match self {
            Target::Subject(subject) => subject.clone(),
            Target::Prefix(prefix) => format!("{prefix}.>"),
        }
    }
}

pub(super) struct Config<K, C> {
    pub(super) publisher: K,
    pub(super) target: Target,
    pub(super) classifier: C,
    pub(super) max_deliveries: Option<u64>,
    pub(super) nak_backoff: Backoff,
    /// Whether a message's consumer settings were checked against the target yet.
    pub(super) checked: AtomicBool,
    /// Why this service refuses to run, once it found out.
    pub(super) refusal: OnceLock<String>,
}

impl<K, C: fmt::Debug> fmt::Debug for Config<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("target", &self.target)
            .field("classifier", &self.classifier)
            .field("max_deliveries", &self.max_deliveries)
            .field("nak_backoff", &self.nak_backoff)
            .finish_non_exhaustive()
    }
}

/// Applies [`DeadLetter`] to a service: the publisher, the subject and when to give up.
#[derive(Clone, Debug)]
pub struct DeadLetterLayer<K, C = DefaultClassifier> {
    publisher: K,
    target: Target,
    classifier: C,
    max_deliveries: Option<u64>,
    nak_backoff: Backoff,
}

impl<K> DeadLetterLayer<K> {
    /// Dead-letter to `subject` through `publisher` (such as [`natty::Natty::publisher`]),
    /// for messages the [`DefaultClassifier`] gives up.
    pub fn new(publisher: K, subject: impl Into<String>) -> Self {
        Self::with_target(publisher, Target::Subject(subject.into()))
    }

    /// Dead-letter to `<prefix>.<original subject>` through `publisher`.
    pub fn with_prefix(publisher: K, prefix: impl Into<String>) -> Self {
        Self::with_target(publisher, Target::Prefix(prefix.into()))
    }

    fn with_target(publisher: K, target: Target) -> Self {
        Self {
            publisher,
            target,
            classifier: DefaultClassifier,
            max_deliveries: None,
            nak_backoff: Backoff::default(),
        }
    }
}

impl<K, C> DeadLetterLayer<K, C> {
    /// Also dead-letter a retryable failure on delivery `max_deliveries` (the consumer's
    /// `max_deliver`), after which the server would not redeliver it.
    pub fn max_deliveries(mut self, max_deliveries: u64) -> Self {
        self.max_deliveries = Some(max_deliveries);
        self
    }

    /// Delay the nak after a failed dead-letter publish by `backoff` at the delivery count.
    pub fn nak_backoff(mut self, backoff: Backoff) -> Self {
        self.nak_backoff = backoff;
        self
    }

    /// Decide about handler errors with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> DeadLetterLayer<K, C2> {
        DeadLetterLayer {
            publisher: self.publisher,
            target: self.target,
            classifier,
            max_deliveries: self.max_deliveries,
            nak_backoff: self.nak_backoff,
        }
    }

    /// The shared configuration of the services this layer makes.
    pub(super) fn config(&self) -> Arc<Config<K, C>>
    where
        K: Clone,
        C: Clone,
    {
        Arc::new(Config {
            publisher: self.publisher.clone(),
            target: self.target.clone(),
            classifier: self.classifier.clone(),
            max_deliveries: self.max_deliveries,
            nak_backoff: self.nak_backoff,
            checked: AtomicBool::new(false),
            refusal: OnceLock::new(),
        })
    }
}

impl<S, K: Clone, C: Clone> Layer<S> for DeadLetterLayer<K, C> {
    type Service = DeadLetter<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadLetter::new(inner, self)
    }
}
