//! dns::name_property: one reverse notation for every source of names (DNS answers, PTR text,
//! imported rows, `ignore_domains` rules), property-tested across all of them.
use super::tests::check;
use super::{name, reverse};
use proptest::prelude::*;

/// Labels as text the way glibc's `ns_name_ntop` writes them (what `getnameinfo` returns):
/// special characters after a backslash, other bytes that are not printable as `\DDD`.
fn presentation(labels: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for l in labels {
        for &b in l {
            match b {
                b'.' | b';' | b'\\' | b'(' | b')' | b'@' | b'$' | b'"' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x21..=0x7e => out.push(char::from(b)),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('.');
    }
    out
}

/// Labels with any bytes, as a DNS answer can carry them.
fn any_labels() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let byte = prop_oneof![
        4 => prop::sample::select(b"abcXYZ09-_".to_vec()),
        1 => prop::sample::select(b". \\\"*;\x00\x7f\xff".to_vec()),
        1 => any::<u8>(),
    ];
    prop::collection::vec(prop::collection::vec(byte, 1..12), 1..5)
}

#[test]
fn property_one_reverse_notation_for_every_source() {
    let parts = (any_labels(), any_labels(), any_labels());
    check("one_reverse_notation", parts, |(child, base, other)| {
        let full: Vec<Vec<u8>> = child.iter().chain(&base).cloned().collect();
        let Ok(dns) = hickory_proto::rr::Name::from_labels(full.iter().map(|l| l.as_slice()))
        else {
            return Ok(());
        };
        // The DNS path (hickory's labels), the PTR path (the name as text, escapes and all) and
        // the import path turn a name around the same way.
        let from_answer = name::reverse_labels(dns.iter());
        let text = presentation(&full);
        let from_ptr = reverse::reverse_host(&text);
        prop_assert_eq!(from_ptr.as_deref(), Some(&*from_answer));
        prop_assert_eq!(crate::filter::reverse_notation(&text), from_answer.clone());
        // A rule written for `base` (as a user would escape it) covers every name below it, on
        // label boundaries, and nothing else.
        let base_text = presentation(&base);
        let cfg = crate::config::Log {
            ignore_domains: vec![base_text],
            ..crate::config::Log::default()
        };
        if let Ok(rule) = cfg.filters().map(|f| f.domains[0].clone()) {
            prop_assert!(crate::filter::under_domain(&from_answer, &rule));
            let lower = |l: &Vec<Vec<u8>>| -> Vec<Vec<u8>> {
                l.iter().map(|x| x.to_ascii_lowercase()).collect()
            };
            let (o, b) = (lower(&other), lower(&base));
            let below = o.len() >= b.len() && o[o.len() - b.len()..] == b[..];
            let other_rev = name::reverse_labels(&other);
            prop_assert_eq!(crate::filter::under_domain(&other_rev, &rule), below);
        }
        Ok(())
    });
}
