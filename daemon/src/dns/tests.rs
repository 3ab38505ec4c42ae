//! dns/tests.rs: naming flows from answers (namespaces, pinning, TCP), and property tests that
//! feed the whole path random and mutated messages: nothing may panic or stall, and well-formed
//! answers must map exactly to their question.
use super::parse::tests::{a, aaaa, cname, response};
use super::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const UDP: u16 = libc::IPPROTO_UDP as u16;
const TCP: u16 = libc::IPPROTO_TCP as u16;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn udp(netns: u32, data: &[u8]) -> DnsPacket<'_> {
    DnsPacket {
        netns,
        protocol: UDP,
        query: false,
        server: ip("127.0.0.153"),
        sport: 53,
        client: ip("127.0.0.1"),
        dport: 40000,
        seq: 0,
        len: data.len() as u32,
        data,
    }
}

/// The query `answer` answers, as the kernel copies it when it leaves.
fn query_of(answer: &[u8]) -> Vec<u8> {
    use hickory_proto::serialize::binary::BinEncodable;
    let m = hickory_proto::op::Message::from_vec(answer).unwrap();
    let mut q = hickory_proto::op::Message::new(
        m.metadata.id,
        hickory_proto::op::MessageType::Query,
        hickory_proto::op::OpCode::Query,
    );
    q.add_queries(m.queries.clone());
    q.to_bytes().unwrap()
}

/// Feeds the query `p` answers (same socket, same server), then `p`.
fn asked_and_answered(n: &mut Names, p: &DnsPacket<'_>, now: u64) {
    let q = query_of(p.data);
    let qp = DnsPacket {
        query: true,
        seq: 0,
        len: q.len() as u32,
        data: &q,
        ..p.clone()
    };
    if p.protocol == TCP {
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        let tp = DnsPacket {
            len: framed.len() as u32,
            data: &framed,
            seq: 777,
            ..qp
        };
        n.on_packet_at(&tp, now);
    } else {
        n.on_packet_at(&qp, now);
    }
    n.on_packet_at(p, now);
}

fn flow(addr: &str) -> FlowId {
    FlowId {
        tgid: 10,
        socket: 99,
        raddr: Some(ip(addr)),
        rport: 443,
    }
}

fn names() -> Names {
    Names::new(&DnsConfig::default())
}

#[test]
fn flows_are_named_per_namespace() {
    let mut n = names();
    let m = response(
        "www.example.com.",
        vec![
            cname("www.example.com.", 30, "edge.example.net."),
            a("edge.example.net.", 30, "192.0.2.10"),
            aaaa("edge.example.net.", 30, "2001:db8::10"),
        ],
    );
    // Nobody asked: refused.
    n.on_packet_at(&udp(7, &m), 0);
    assert_eq!((n.counters.answers, n.counters.unsolicited), (0, 1));
    assert_eq!(&*n.domain_at(flow("192.0.2.10"), 7, 1), "");
    asked_and_answered(&mut n, &udp(7, &m), 0);
    assert_eq!(n.counters.answers, 1);
    assert_eq!(n.counters.addresses, 2);
    assert_eq!(&*n.domain_at(flow("192.0.2.10"), 7, 1), "com.example.www");
    assert_eq!(&*n.domain_at(flow("2001:db8::10"), 7, 1), "com.example.www");
    // Another namespace did not resolve it.
    let other = FlowId {
        socket: 100,
        ..flow("192.0.2.10")
    };
    assert_eq!(&*n.domain_at(other, 8, 1), "");
    // An answer whose namespace is unknown names the address everywhere.
    let m2 = response("old.example.", vec![a("old.example.", 30, "192.0.2.20")]);
    asked_and_answered(&mut n, &udp(cache::ANY_NETNS, &m2), 2);
    assert_eq!(n.counters.no_netns, 1);
    assert_eq!(&*n.domain_at(flow("192.0.2.20"), 9, 3), "example.old");
}

#[test]
fn a_flow_keeps_its_name_after_the_answer_expires() {
    let mut n = names();
    let m = response("api.example.", vec![a("api.example.", 0, "192.0.2.30")]);
    asked_and_answered(&mut n, &udp(1, &m), 0);
    let f = flow("192.0.2.30");
    assert_eq!(&*n.domain_at(f, 1, 5), "example.api");
    let late = cache::hold(0) + 10;
    assert_eq!(&*n.domain_at(f, 1, late), "example.api");
    // A new flow to the address after expiry gets no name.
    let g = FlowId { socket: 5, ..f };
    assert_eq!(&*n.domain_at(g, 1, late), "");
    n.forget([f]);
    assert_eq!(&*n.domain_at(f, 1, late), "");
}

#[test]
fn tcp_answers_are_reassembled() {
    let mut n = names();
    let m = response("tcp.example.", vec![a("tcp.example.", 60, "192.0.2.40")]);
    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&m);
    let (x, y) = framed.split_at(7);
    let q = query_of(&m);
    let mut qf = (q.len() as u16).to_be_bytes().to_vec();
    qf.extend_from_slice(&q);
    let ask = DnsPacket {
        protocol: TCP,
        query: true,
        seq: 1,
        len: qf.len() as u32,
        ..udp(3, &qf)
    };
    n.on_packet_at(&ask, 0);
    for (seq, part) in [(5000u32, x), (5007, y)] {
        let p = DnsPacket {
            protocol: TCP,
            seq,
            len: part.len() as u32,
            ..udp(3, part)
        };
        n.on_packet_at(&p, 0);
    }
    assert_eq!(&*n.domain_at(flow("192.0.2.40"), 3, 1), "example.tcp");
    assert_eq!(n.counters.malformed, 0);
}

#[test]
fn garbage_and_cut_messages_are_counted() {
    let mut n = names();
    n.on_packet_at(&udp(1, b"\x01\x02"), 0);
    assert_eq!(n.counters.malformed, 1);
    let m = response(
        "cut.example.",
        (1..=10)
            .map(|i| a("cut.example.", 60, &format!("192.0.2.{i}")))
            .collect(),
    );
    // The kernel copied only the first part of a longer datagram.
    let p = DnsPacket {
        len: m.len() as u32,
        ..udp(1, &m[..m.len() - 16])
    };
    let q = query_of(&m);
    n.on_packet_at(
        &DnsPacket {
            query: true,
            ..udp(1, &q)
        },
        0,
    );
    n.on_packet_at(&p, 0);
    assert_eq!(n.counters.truncated, 1);
    assert_eq!(n.counters.addresses, 9);
}

// ---- property tests ----

/// Inputs each property runs (PICOSNITCH_FUZZ_CASES overrides the default).
fn cases() -> u32 {
    std::env::var("PICOSNITCH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

/// Runs a property over `cases()` inputs; prints how many ran and the slowest one.
pub(super) fn check<S: Strategy>(
    name: &str,
    strategy: S,
    f: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let ran = AtomicU64::new(0);
    let slowest = std::sync::Mutex::new(Duration::ZERO);
    let mut runner = TestRunner::new(PropConfig {
        cases: cases(),
        failure_persistence: None,
        ..PropConfig::default()
    });
    runner
        .run(&strategy, |v| {
            ran.fetch_add(1, Ordering::Relaxed);
            let t = std::time::Instant::now();
            let r = f(v);
            let e = t.elapsed();
            let mut s = slowest.lock().unwrap();
            *s = (*s).max(e);
            // A hostile message must not stall the daemon's loop.
            prop_assert!(e < Duration::from_millis(200), "one input took {e:?}");
            r
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!(
        "property {name}: {} inputs, slowest {:?}",
        ran.load(Ordering::Relaxed),
        slowest.lock().unwrap()
    );
}

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?"
}

fn dns_name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..5).prop_map(|l| format!("{}.", l.join(".")))
}

#[derive(Debug, Clone)]
struct Answer {
    question: String,
    chain: Vec<(String, u32)>,
    v4: Vec<([u8; 4], u32)>,
    v6: Vec<([u8; 16], u32)>,
    off_chain: Vec<(String, [u8; 4])>,
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        dns_name(),
        prop::collection::vec((dns_name(), any::<u32>()), 0..4),
        prop::collection::vec((any::<[u8; 4]>(), any::<u32>()), 0..6),
        prop::collection::vec((any::<[u8; 16]>(), any::<u32>()), 0..4),
        prop::collection::vec((dns_name(), any::<[u8; 4]>()), 0..3),
    )
        .prop_map(|(question, chain, v4, v6, off_chain)| Answer {
            question,
            chain,
            v4,
            v6,
            off_chain,
        })
}

impl Answer {
    fn encode(&self) -> Vec<u8> {
        let mut records = Vec::new();
        let mut owner = self.question.clone();
        for (target, ttl) in &self.chain {
            records.push(cname(&owner, *ttl, target));
            owner = target.clone();
        }
        for (o, t) in &self.v4 {
            records.push(a(&owner, *t, &std::net::Ipv4Addr::from(*o).to_string()));
        }
        for (o, t) in &self.v6 {
            records.push(aaaa(&owner, *t, &std::net::Ipv6Addr::from(*o).to_string()));
        }
        for (n, o) in &self.off_chain {
            records.push(a(n, 1, &std::net::Ipv4Addr::from(*o).to_string()));
        }
        response(&self.question, records)
    }

    /// Whether the chain names repeat a name (then the expected mapping is ambiguous).
    fn simple(&self) -> bool {
        let mut seen: Vec<String> = vec![self.question.to_ascii_lowercase()];
        for (n, _) in &self.chain {
            let n = n.to_ascii_lowercase();
            if seen.contains(&n) {
                return false;
            }
            seen.push(n);
        }
        self.off_chain
            .iter()
            .all(|(n, _)| !seen.contains(&n.to_ascii_lowercase()))
    }
}

#[test]
fn property_well_formed_answers_map_to_their_question() {
    check("well_formed", answer(), |ans| {
        let bytes = ans.encode();
        let p = parse::parse(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(!p.truncated);
        if !ans.simple() {
            return Ok(());
        }
        let want = ans
            .question
            .trim_end_matches('.')
            .split('.')
            .rev()
            .collect::<Vec<_>>()
            .join(".")
            .to_ascii_lowercase();
        let chain_ttl = ans.chain.iter().map(|c| c.1).min().unwrap_or(u32::MAX);
        prop_assert_eq!(p.resolved.len(), ans.v4.len() + ans.v6.len());
        for (r, (addr, ttl)) in p.resolved.iter().zip(
            ans.v4
                .iter()
                .map(|(o, t)| (IpAddr::from(*o), *t))
                .chain(ans.v6.iter().map(|(o, t)| (IpAddr::from(*o), *t))),
        ) {
            prop_assert_eq!(&r.name, &want);
            prop_assert_eq!(r.addr, addr);
            prop_assert_eq!(r.ttl, ttl.min(chain_ttl));
        }
        Ok(())
    });
}

#[test]
fn property_mutated_answers_never_panic() {
    let mutated = (
        answer(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
        any::<bool>(),
    );
    check("mutated", mutated, |(ans, flips, cut, do_cut)| {
        let mut bytes = ans.encode();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let mut n = names();
        n.on_packet_at(&udp(1, &bytes), 0);
        if let Ok(p) = parse::parse(&bytes) {
            prop_assert!(p.resolved.len() <= parse::MAX_RECORDS);
        }
        prop_assert!(n.cache_len() <= DnsConfig::default().cache_entries as usize);
        Ok(())
    });
}

#[test]
fn property_random_packets_never_panic() {
    let packet = (
        prop::collection::vec(any::<u8>(), 0..1500),
        any::<bool>(),
        any::<u32>(),
        0u32..3000,
        any::<u32>(),
    );
    check(
        "random_packets",
        packet,
        |(data, tcp, seq, extra, netns)| {
            let mut n = names();
            // The same bytes as a datagram, as a TCP segment, and twice more along its stream.
            let p = DnsPacket {
                protocol: if tcp { TCP } else { UDP },
                seq,
                len: data.len() as u32 + extra,
                ..udp(netns, &data)
            };
            n.on_packet_at(&p, 0);
            let q = DnsPacket {
                seq: seq.wrapping_add(p.len),
                ..p.clone()
            };
            n.on_packet_at(&q, 1);
            n.on_packet_at(&p, 2);
            prop_assert_eq!(n.counters.packets, 3);
            Ok(())
        },
    );
}

#[test]
fn property_kernel_records_never_panic() {
    let size = std::mem::size_of::<crate::collector::records::RawDnsEvent>();
    check(
        "kernel_records",
        prop::collection::vec(any::<u8>(), size - 8..size + 8),
        |bytes| {
            if let Some(p) = crate::collector::records::dns_packet(&bytes) {
                prop_assert!(p.data.len() <= crate::collector::records::DNS_CAPTURE);
                let mut n = names();
                n.on_packet_at(&p, 0);
            }
            Ok(())
        },
    );
}

#[test]
fn property_reverse_notation_is_unambiguous() {
    let labels = prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 1..6);
    check("reverse_notation", labels, |labels| {
        let Ok(name) = hickory_proto::rr::Name::from_labels(labels.iter().map(|l| l.as_slice()))
        else {
            return Ok(());
        };
        let r = name::reverse_labels(name.iter());
        // One label per dot-separated part, printable, no upper case.
        prop_assert_eq!(r.split('.').count(), name.iter().count());
        prop_assert!(r
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()));
        Ok(())
    });
}

#[test]
fn answers_must_answer_a_query_that_left() {
    let mut n = names();
    let m = response("bank.example.", vec![a("bank.example.", 60, "192.0.2.50")]);
    let q = query_of(&m);
    let ask = DnsPacket {
        query: true,
        ..udp(4, &q)
    };
    n.on_packet_at(&ask, 0);
    assert_eq!(n.counters.queries, 1);
    // Forged: another id, another question, another port, server or namespace.
    let mut other_id = m.clone();
    other_id[1] ^= 0x55;
    let other_q = response("evil.example.", vec![a("evil.example.", 60, "192.0.2.50")]);
    let forged = [
        udp(4, &other_id),
        udp(4, &other_q),
        DnsPacket {
            dport: 40001,
            ..udp(4, &m)
        },
        DnsPacket {
            server: ip("198.51.100.1"),
            ..udp(4, &m)
        },
        udp(5, &m),
    ];
    for p in &forged {
        n.on_packet_at(p, 1);
    }
    assert_eq!(n.counters.unsolicited, 5);
    assert_eq!(&*n.domain_at(flow("192.0.2.50"), 4, 1), "");
    // The real answer names the address; the same answer again is refused.
    n.on_packet_at(&udp(4, &m), 1);
    assert_eq!(&*n.domain_at(flow("192.0.2.50"), 4, 2), "example.bank");
    let replay = response("bank.example.", vec![a("bank.example.", 60, "192.0.2.66")]);
    n.on_packet_at(&udp(4, &replay), 2);
    assert_eq!(n.counters.unsolicited, 6);
    let g = FlowId {
        socket: 77,
        ..flow("192.0.2.66")
    };
    assert_eq!(&*n.domain_at(g, 4, 3), "");
    // A query a local server received, or an answer it sent, is neither.
    n.on_packet_at(&udp(4, &q), 3);
    n.on_packet_at(
        &DnsPacket {
            query: true,
            ..udp(4, &m)
        },
        3,
    );
    assert_eq!(n.counters.unsolicited, 6);
}

#[test]
fn tcp_answers_match_ids_inside_the_stream() {
    let mut n = names();
    let frame = |m: &[u8]| {
        let mut f = (m.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(m);
        f
    };
    let m = response("tcp2.example.", vec![a("tcp2.example.", 60, "192.0.2.41")]);
    let q = frame(&query_of(&m));
    let ask = DnsPacket {
        protocol: TCP,
        query: true,
        seq: 10,
        len: q.len() as u32,
        ..udp(3, &q)
    };
    n.on_packet_at(&ask, 0);
    // An answer with another id on the same connection is refused; the right one is taken.
    let mut wrong = m.clone();
    wrong[0] ^= 1;
    let both = [frame(&wrong), frame(&m)].concat();
    let ans = DnsPacket {
        protocol: TCP,
        seq: 900,
        len: both.len() as u32,
        ..udp(3, &both)
    };
    n.on_packet_at(&ans, 0);
    assert_eq!(n.counters.unsolicited, 1);
    assert_eq!(&*n.domain_at(flow("192.0.2.41"), 3, 1), "example.tcp2");
}

#[test]
fn live_names_pushed_out_of_the_cache_are_counted() {
    let mut n = Names::new(&DnsConfig {
        cache_entries: 16,
        ..DnsConfig::default()
    });
    for i in 0..20u8 {
        let m = response(
            &format!("h{i}.example."),
            vec![a(&format!("h{i}.example."), 60, &format!("192.0.2.{i}"))],
        );
        let mut m = m;
        m[1] = i; // one id per query
        asked_and_answered(&mut n, &udp(1, &m), 0);
    }
    assert_eq!(n.counters.cache_evicted, 4);
    assert_eq!(n.counters.losses()[4], ("dns_cache_evicted", 4));
}
