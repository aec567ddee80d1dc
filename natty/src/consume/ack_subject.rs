//! Reading a JetStream ack subject, the reply subject of every delivered message:
//! `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`, or
//! the same after `<domain>.<account hash>` with a random token at the end (the form of servers
//! since 2.9 that set a domain).
//!
//! The driver reads the numbers of every message it pulls (the names it knows already), so
//! parsing allocates nothing; [`DeliveryInfo::from_ack_subject`](super::message::DeliveryInfo::from_ack_subject)
//! reads the names too, for code that watches acks on the wire.

/// The tokens of an ack subject: the names as they are, the numbers parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AckSubject<'a> {
    pub(crate) stream: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) numbers: AckNumbers,
}

/// The numbers of an ack subject.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AckNumbers {
    pub(crate) delivered: u64,
    pub(crate) stream_sequence: u64,
    pub(crate) consumer_sequence: u64,
    pub(crate) published_unix_nanos: i128,
    pub(crate) pending: u64,
}

impl<'a> AckSubject<'a> {
    /// The tokens of `reply`, or `None` when it is not an ack subject.
    pub(crate) fn parse(reply: &'a str) -> Option<Self> {
        let rest = reply.strip_prefix("$JS.ACK.")?;
        // Per message, so no allocation: the first 11 tokens on the stack.
        let mut tokens = [""; 11];
        let mut count = 0;
        for token in rest.split('.') {
            if count < tokens.len() {
                tokens[count] = token;
            }
            count += 1;
        }
        // After `$JS.ACK.`: 7 tokens (stream first), or 10+ (domain, hash, then stream).
        let tokens = match count {
            7 => &tokens[0..7],
            n if n >= 10 => &tokens[2..9],
            _ => return None,
        };
        Some(Self {
            stream: tokens[0],
            consumer: tokens[1],
            numbers: AckNumbers {
                delivered: tokens[2].parse().ok()?,
                stream_sequence: tokens[3].parse().ok()?,
                consumer_sequence: tokens[4].parse().ok()?,
                published_unix_nanos: tokens[5].parse().ok()?,
                pending: tokens[6].parse().ok()?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{AckNumbers, AckSubject};

    #[test]
    fn both_forms_of_the_ack_subject_give_the_same_names_and_numbers() {
        let expected = AckSubject {
            stream: "ORDERS",
            consumer: "billing",
            numbers: AckNumbers {
                delivered: 2,
                stream_sequence: 17,
                consumer_sequence: 9,
                published_unix_nanos: 1_700_000_000_000_000_000,
                pending: 4,
            },
        };
        let plain = "$JS.ACK.ORDERS.billing.2.17.9.1700000000000000000.4";
        let with_domain = "$JS.ACK.hub.ACCHASH.ORDERS.billing.2.17.9.1700000000000000000.4.rnd";
        assert_eq!(AckSubject::parse(plain), Some(expected));
        assert_eq!(
            AckSubject::parse(with_domain),
            AckSubject::parse(plain),
            "the domain form reads the same names and numbers"
        );
    }

    #[test]
    fn a_subject_that_is_not_an_ack_subject_gives_nothing() {
        for reply in [
            "_INBOX.abc",
            "$JS.ACK.ORDERS.billing.x.17.9.1.4",
            "$JS.ACK.a.b.c",
        ] {
            assert_eq!(AckSubject::parse(reply), None, "{reply}");
        }
    }
}
