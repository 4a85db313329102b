//! Rooms over HTTP as a test sees them: a POST, an event-stream subscriber
//! read with the browser's rules, the members a room has (from /stats).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{http_get, Client};

/// A request with a body, on its own connection; the whole answer.
pub fn request(addr: SocketAddr, head: &str, body: &[u8]) -> (String, Vec<u8>) {
    let mut c = Client::raw(addr);
    c.send_raw(head.as_bytes());
    c.send_raw(body);
    c.read_http_response()
}

pub fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> (String, Vec<u8>) {
    request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        ),
        body,
    )
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ev {
    pub id: Option<String>,
    pub kind: String,
    pub data: String,
}

/// An event-stream subscriber reading with the browser's rules (WHATWG
/// HTML §9.2.6): lines end at LF (the server writes LF only), `data`
/// lines joined with LF, an empty line dispatches, comments are skipped.
pub struct Sse {
    pub c: Client,
    pub head: String,
}

impl Sse {
    pub fn open(addr: SocketAddr, path: &str, extra: &str) -> Sse {
        let mut c = Client::raw(addr);
        c.send_raw(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{extra}\r\n")
                .as_bytes(),
        );
        let head = c.read_http_head();
        Sse { c, head }
    }

    pub fn line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.c.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.c.buf.drain(..=pos).collect();
                return Some(String::from_utf8(line[..pos].to_vec()).unwrap());
            }
            let mut tmp = [0u8; 65536];
            match std::io::Read::read(&mut self.c.stream, &mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.c.buf.extend_from_slice(&tmp[..n]),
                Err(e) => panic!("reading the event stream: {e}"),
            }
        }
    }

    /// The next event; `None` at the end of the stream. `retry` is skipped.
    pub fn next(&mut self) -> Option<Ev> {
        let (mut id, mut kind, mut data): (Option<String>, String, Vec<String>) =
            (None, "message".into(), Vec::new());
        let mut any = false;
        loop {
            let line = self.line()?;
            if line.is_empty() {
                if any && !data.is_empty() {
                    return Some(Ev {
                        id,
                        kind,
                        data: data.join("\n"),
                    });
                }
                (id, kind, data, any) = (None, "message".into(), Vec::new(), false);
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            any = true;
            match field {
                "id" => id = Some(value),
                "event" => kind = value,
                "data" => data.push(value),
                "retry" => assert!(value.parse::<u64>().is_ok(), "retry: {value}"),
                other => panic!("unexpected field {other:?}"),
            }
        }
    }

    pub fn expect(&mut self) -> Ev {
        self.next().expect("an event, not the end of the stream")
    }
}

/// Waits until the room has `n` members (subscriptions are registered
/// asynchronously with respect to the client).
pub fn wait_members(addr: SocketAddr, room: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = http_get(addr, "/stats");
        let v = json(&body);
        let members = v["rooms"]["largest"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == room)
            .map_or(0, |r| r["members"].as_u64().unwrap());
        if members == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{room}: {members} members, not {n}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
