//! api_support: a small HTTP/1.1 client over TCP or a unix socket for the API tests: requests,
//! chunked bodies, and following the live event feed (Server-Sent Events or JSON lines).
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where to send a request: the TCP listener (with a Host header) or the unix socket.
#[derive(Clone)]
pub enum To {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

impl To {
    pub fn connect(&self) -> Box<dyn Stream> {
        let s: Box<dyn Stream> = match self {
            To::Tcp(a) => {
                let s = TcpStream::connect(a).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                Box::new(s)
            }
            To::Unix(p) => {
                let s = UnixStream::connect(p).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                Box::new(s)
            }
        };
        s
    }

    pub fn default_host(&self) -> String {
        match self {
            To::Tcp(a) => format!("127.0.0.1:{}", a.port()),
            To::Unix(_) => "localhost".into(),
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request; `host: None` sends no Host header.
pub fn raw(to: &To, method: &str, target: &str, host: Option<&str>) -> Resp {
    let mut s = to.connect();
    let mut req = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    if let Some(h) = host {
        req.push_str(&format!("Host: {h}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse::<usize>().unwrap());
    let mut body = Vec::new();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        while let Some(chunk) = read_chunk(&mut r) {
            body.extend(chunk);
        }
    } else if let Some(n) = len {
        body.resize(n, 0);
        r.read_exact(&mut body).unwrap();
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    Resp {
        status,
        content_type,
        body: String::from_utf8(body).unwrap(),
    }
}

pub fn get(to: &To, target: &str) -> Resp {
    raw(to, "GET", target, Some(&to.default_host()))
}

/// A 200 answer's JSON.
pub fn ok(to: &To, target: &str) -> Value {
    let r = get(to, target);
    assert_eq!(r.status, 200, "{target}: {}", r.body);
    assert!(r.content_type.starts_with("application/json"), "{r:?}");
    r.json()
}

pub fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    (status, headers)
}

/// The next chunk of a chunked body; `None` at its end.
pub fn read_chunk(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let size = usize::from_str_radix(line.trim(), 16).ok()?;
    let mut data = vec![0; size + 2];
    r.read_exact(&mut data).ok()?;
    data.truncate(size);
    (size > 0).then_some(data)
}

pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// What the feed showed of one executable: its sums and its rows.
pub struct Followed {
    pub sums: (i64, i64),
    pub rows: Vec<Value>,
}

/// Follows the live feed until the rows of `exe` add up to `want` (send, recv); returns what
/// was seen. SSE unless `jsonl`.
pub fn follow(
    to: To,
    jsonl: bool,
    exe: String,
    want: (i64, i64),
) -> std::thread::JoinHandle<Followed> {
    let mut s = to.connect();
    let target = if jsonl {
        "/api/v1/events?format=jsonl"
    } else {
        "/api/v1/events"
    };
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        to.default_host()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    // Once the head is here the daemon has subscribed: nothing written later is missed.
    let (status, headers) = read_head(&mut r);
    assert_eq!(status, 200);
    let ct = &headers.iter().find(|(k, _)| k == "content-type").unwrap().1;
    assert_eq!(
        ct,
        if jsonl {
            "application/x-ndjson"
        } else {
            "text/event-stream"
        }
    );
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut got, mut pending, mut rows) = ((0, 0), String::new(), Vec::new());
        while got != want && Instant::now() < deadline {
            let Some(chunk) = read_chunk(&mut r) else {
                break;
            };
            pending.push_str(&String::from_utf8(chunk).unwrap());
            while let Some(i) = pending.find('\n') {
                let line: String = pending.drain(..=i).collect();
                let json = if jsonl {
                    line.trim()
                } else {
                    match line.strip_prefix("data: ") {
                        Some(d) => d.trim(),
                        None => continue,
                    }
                };
                if json.is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(json).unwrap();
                assert_ne!(v["kind"], "lagged", "the feed lagged: {v}");
                if v["kind"] == "row" && v["exe"] == exe.as_str() {
                    got.0 += v["send"].as_i64().unwrap();
                    got.1 += v["recv"].as_i64().unwrap();
                    rows.push(v);
                }
            }
        }
        Followed { sums: got, rows }
    })
}
