//! dns/parse.rs: turns one DNS response (possibly cut short, possibly hostile) into the addresses
//! it resolves, each with the name that was asked for (in reverse notation) and how long it holds.
//!
//! hickory-proto decodes the header, the questions and each answer record on its own, so a
//! message cut by the capture limit still yields every record before the cut. Only A/AAAA records
//! on the CNAME chain that starts at the question count: records about other names (which no
//! stub resolver would accept either) are ignored.
use super::name::reverse_labels;
use super::pending::Question;
use hickory_proto::op::{Header, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use std::collections::HashMap;
use std::net::IpAddr;

/// CNAME links followed from an address record back to the question; longer chains are refused.
pub const MAX_CHAIN: usize = 16;

/// Answer records read from one message at most (a message can announce 65535).
pub const MAX_RECORDS: usize = 512;

/// One address a response resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub addr: IpAddr,
    /// The name asked for, in reverse notation (`com.example.www`).
    pub name: String,
    /// Seconds the answer holds: the smallest TTL on its CNAME chain.
    pub ttl: u32,
}

/// What one message held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The transaction id.
    pub id: u16,
    /// A response (QR set), not a query.
    pub response: bool,
    /// The first question, if the message has one.
    pub question: Option<Question>,
    pub resolved: Vec<Resolved>,
    /// The message announced more answer records than could be read (cut short or malformed).
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("shorter than a DNS header")]
    NoHeader,
    #[error("the question cannot be decoded")]
    BadQuestion,
}

/// Parses a DNS message: its id and question, and for a response without error the addresses
/// it resolves. Queries, error responses and other kinds of messages resolve nothing.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ParseError> {
    let mut d = BinDecoder::new(bytes);
    let header = Header::read(&mut d).map_err(|_| ParseError::NoHeader)?;
    let meta = header.metadata;
    let mut question: Option<Name> = None;
    let mut out = Parsed {
        id: meta.id,
        response: meta.message_type == MessageType::Response,
        ..Parsed::default()
    };
    for _ in 0..header.counts.queries {
        let q = Query::read(&mut d).map_err(|_| ParseError::BadQuestion)?;
        if question.is_none() {
            let name = q.name().to_lowercase();
            out.question = Some(Question {
                name: reverse_labels(name.iter()),
                qtype: u16::from(q.query_type()),
                qclass: u16::from(q.query_class()),
            });
            question = Some(name);
        }
    }
    if !out.response || meta.response_code != ResponseCode::NoError {
        return Ok(out);
    }
    let announced = usize::from(header.counts.answers);
    let mut records = Vec::with_capacity(announced.min(MAX_RECORDS));
    let mut truncated = false;
    for _ in 0..announced.min(MAX_RECORDS) {
        match Record::read(&mut d) {
            Ok(r) => records.push(r),
            Err(_) => {
                truncated = true;
                break;
            }
        }
    }
    truncated |= announced > MAX_RECORDS;
    out.resolved = resolve_chain(question.as_ref(), &records);
    out.truncated = truncated;
    Ok(out)
}

/// Maps every A/AAAA record to the start of its CNAME chain. With a question, the chain must start
/// at it; without one (unusual for unicast DNS), the chain's first owner is taken.
pub fn resolve_chain(question: Option<&Name>, records: &[Record]) -> Vec<Resolved> {
    // target -> (owner, ttl) of the CNAME pointing at it; the first one wins.
    let mut back: HashMap<Name, (Name, u32)> = HashMap::new();
    for r in records {
        if let RData::CNAME(c) = &r.data {
            back.entry(c.0.to_lowercase())
                .or_insert((r.name.to_lowercase(), r.ttl));
        }
    }
    let mut out = Vec::new();
    for r in records {
        let addr = match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        let mut owner = r.name.to_lowercase();
        let mut ttl = r.ttl;
        let mut hops = 0;
        while question != Some(&owner) {
            let Some((prev, t)) = back.get(&owner) else {
                break;
            };
            hops += 1;
            if hops > MAX_CHAIN {
                break;
            }
            owner = prev.clone();
            ttl = ttl.min(*t);
        }
        if question.is_some_and(|q| *q != owner) || hops > MAX_CHAIN {
            continue;
        }
        let name = reverse_labels(owner.iter());
        if !name.is_empty() {
            out.push(Resolved { addr, name, ttl });
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::op::Message;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::RecordType;
    use hickory_proto::serialize::binary::BinEncodable;
    use std::str::FromStr;

    pub fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    /// A response to `q` holding `answers`, as bytes.
    pub fn response(q: &str, answers: Vec<Record>) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Response, hickory_proto::op::OpCode::Query);
        m.add_query(Query::query(name(q), RecordType::A));
        m.add_answers(answers);
        m.to_bytes().unwrap()
    }

    pub fn a(owner: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A::from_str(ip).unwrap()))
    }

    pub fn aaaa(owner: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA::from_str(ip).unwrap()))
    }

    pub fn cname(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
    }

    fn got(bytes: &[u8]) -> Vec<(String, String, u32)> {
        parse(bytes)
            .unwrap()
            .resolved
            .into_iter()
            .map(|r| (r.addr.to_string(), r.name, r.ttl))
            .collect()
    }

    #[test]
    fn reverse_notation_of_names() {
        let rev = |n: &Name| reverse_labels(n.iter());
        assert_eq!(rev(&name("www.Example.COM.")), "com.example.www");
        assert_eq!(rev(&name("localhost")), "localhost");
        assert_eq!(rev(&Name::root()), "");
        let odd = Name::from_labels(vec![&b"a.b"[..], &b"x\\y\x01"[..], &b"org"[..]]).unwrap();
        assert_eq!(rev(&odd), "org.x\\092y\\001.a\\046b");
    }

    #[test]
    fn cname_chain_maps_to_the_question() {
        let m = response(
            "www.example.com.",
            vec![
                cname("www.example.com.", 300, "edge.cdn.example.net."),
                cname("edge.cdn.example.net.", 60, "a1.cdn.example.net."),
                a("a1.cdn.example.net.", 120, "192.0.2.7"),
                aaaa("A1.cdn.example.net.", 30, "2001:db8::7"),
            ],
        );
        assert_eq!(
            got(&m),
            vec![
                ("192.0.2.7".into(), "com.example.www".into(), 60),
                ("2001:db8::7".into(), "com.example.www".into(), 30),
            ]
        );
    }

    #[test]
    fn records_off_the_chain_are_ignored() {
        let m = response(
            "www.example.com.",
            vec![
                a("www.example.com.", 10, "192.0.2.1"),
                a("bank.example.org.", 10, "192.0.2.66"),
                cname("other.example.", 10, "www.example.com."),
            ],
        );
        assert_eq!(
            got(&m),
            vec![("192.0.2.1".into(), "com.example.www".into(), 10)]
        );
    }

    #[test]
    fn cname_loops_end() {
        let m = response(
            "a.test.",
            vec![
                cname("a.test.", 10, "b.test."),
                cname("b.test.", 10, "a.test."),
                a("c.test.", 10, "192.0.2.3"),
                a("b.test.", 10, "192.0.2.2"),
            ],
        );
        assert_eq!(got(&m), vec![("192.0.2.2".into(), "test.a".into(), 10)]);
    }

    #[test]
    fn truncated_message_keeps_the_records_before_the_cut() {
        let m = response(
            "many.test.",
            (1..=20)
                .map(|i| a("many.test.", 5, &format!("192.0.2.{i}")))
                .collect(),
        );
        let cut = &m[..m.len() - 20];
        let p = parse(cut).unwrap();
        assert!(p.truncated);
        assert_eq!(p.resolved.len(), 18);
        assert!(parse(&m[..5]).is_err());
    }

    #[test]
    fn queries_and_errors_yield_nothing() {
        let mut m = Message::new(1, MessageType::Query, hickory_proto::op::OpCode::Query);
        m.add_query(Query::query(name("x.test."), RecordType::A));
        m.add_answer(a("x.test.", 5, "192.0.2.1"));
        assert!(parse(&m.to_bytes().unwrap()).unwrap().resolved.is_empty());
        let mut r = Message::new(1, MessageType::Response, hickory_proto::op::OpCode::Query);
        r.metadata.response_code = ResponseCode::NXDomain;
        r.add_query(Query::query(name("x.test."), RecordType::A));
        r.add_answer(a("x.test.", 5, "192.0.2.1"));
        assert!(parse(&r.to_bytes().unwrap()).unwrap().resolved.is_empty());
    }
}
