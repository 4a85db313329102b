//! The converter alone, then its stubs loaded and driven through the stub
//! engine (`Session`) as a new client would: its own ids come back.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::proto::MessageKind::{Binary, Text};
use crate::stubs::session::{Out, Session};
use crate::stubs::Stubs;

fn m(at_ms: u64, from_client: bool, text: &str) -> Message {
    Message {
        at_ms,
        from_client,
        data: Data::Text(text.into()),
    }
}

/// graphql-transport-ws as the real server answers it: an ack, then a
/// subscription's two results and its completion, with the client's id.
fn graphql() -> Conversation {
    Conversation {
        path: "/graphql".into(),
        opening: Opening::Accepted {
            subprotocol: Some("graphql-transport-ws".into()),
        },
        messages: vec![
            m(5, true, r#"{"type":"connection_init"}"#),
            m(7, false, r#"{"type":"connection_ack"}"#),
            m(
                10,
                true,
                r#"{"id":"8f1c","type":"subscribe","payload":{"query":"subscription { n }"}}"#,
            ),
            m(
                60,
                false,
                r#"{"id":"8f1c","type":"next","payload":{"data":{"n":1}}}"#,
            ),
            m(
                110,
                false,
                r#"{"id":"8f1c","type":"next","payload":{"data":{"n":2}}}"#,
            ),
            m(111, false, r#"{"id":"8f1c","type":"complete"}"#),
        ],
    }
}

fn sent(out: &[Out]) -> Vec<serde_json::Value> {
    out.iter()
        .map(|o| match o {
            Out::Send(Text, b) => serde_json::from_slice(b).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_recorded_subscription_answers_a_new_client_with_its_own_id() {
    let file = stubs_file(&[graphql()], Some("ignore"));
    assert_eq!(
        file["upgrades"],
        json!([{"path": "/graphql", "accept": {"subprotocol": "graphql-transport-ws"}}])
    );
    let stubs = &file["stubs"];
    assert_eq!(
        stubs[1]["on"],
        json!({"json": {"type": "subscribe", "payload": {"query": "subscription { n }"}}})
    );
    assert_eq!(
        stubs[1]["reply"][0],
        json!({"json": {"id": "{{json.id}}", "type": "next", "payload": {"data": {"n": 1}}}, "after": "50ms"})
    );
    assert_eq!(stubs[1]["reply"][2]["after"], "101ms");

    let stubs = Stubs::parse(&file.to_string(), 1 << 20).unwrap();
    let t0 = Instant::now();
    let mut s = Session::new(&stubs, 3, "/graphql");
    assert!(s.on_open(&stubs, t0).out.is_empty());
    let out = s
        .on_message(
            &stubs,
            Text,
            br#"{"type":"connection_init","payload":{}}"#,
            t0,
        )
        .out;
    assert!(out.is_empty(), "answered 2 ms later, as recorded");
    let out = s.on_timer(&stubs, t0 + Duration::from_millis(2));
    assert_eq!(sent(&out), [json!({"type": "connection_ack"})]);
    let ask = br#"{"id":"a-new-uuid","type":"subscribe","payload":{"query":"subscription { n }"}}"#;
    let now = t0 + Duration::from_millis(1);
    assert!(
        s.on_message(&stubs, Text, ask, now).out.is_empty(),
        "the replies keep their delays"
    );
    let later = now + Duration::from_millis(101);
    let out = s.on_timer(&stubs, later);
    assert_eq!(
        sent(&out),
        [
            json!({"id": "a-new-uuid", "type": "next", "payload": {"data": {"n": 1}}}),
            json!({"id": "a-new-uuid", "type": "next", "payload": {"data": {"n": 2}}}),
            json!({"id": "a-new-uuid", "type": "complete"}),
        ]
    );
}

#[test]
fn a_value_comes_back_by_its_key_not_by_its_value() {
    let c = Conversation {
        path: "/rpc".into(),
        opening: Opening::Accepted { subprotocol: None },
        messages: vec![
            m(
                0,
                true,
                r#"{"jsonrpc":"2.0","id":1,"method":"add","params":[1,2]}"#,
            ),
            // `seq` holds 1 too: it is not the client's id.
            m(3, false, r#"{"jsonrpc":"2.0","id":1,"result":3,"seq":1}"#),
        ],
    };
    let file = stubs_file(&[c], None);
    assert!(file.get("upgrades").is_none() && file.get("otherwise").is_none());
    let stub = &file["stubs"][0];
    assert_eq!(
        stub["on"],
        json!({"json": {"method": "add", "params": [1, 2]}})
    );
    assert_eq!(
        stub["reply"][0]["json"],
        json!({"jsonrpc": "{{json.jsonrpc}}", "id": "{{json.id}}", "result": 3, "seq": 1})
    );
    let stubs = Stubs::parse(&file.to_string(), 1 << 20).unwrap();
    let mut s = Session::new(&stubs, 1, "/rpc");
    let out = s
        .on_message(
            &stubs,
            Text,
            br#"{"jsonrpc":"2.0","id":77,"method":"add","params":[1,2]}"#,
            Instant::now(),
        )
        .out;
    // Delayed 3 ms: due on the timer.
    assert!(out.is_empty());
    let out = s.on_timer(&stubs, Instant::now() + Duration::from_millis(10));
    assert_eq!(
        sent(&out),
        [json!({"jsonrpc": "2.0", "id": 77, "result": 3, "seq": 1})]
    );
}

#[test]
fn open_replies_binary_text_with_braces_and_a_refusal() {
    let c = Conversation {
        path: "/feed".into(),
        opening: Opening::Accepted { subprotocol: None },
        messages: vec![
            m(20, false, "hello {{you}}"),
            Message {
                at_ms: 30,
                from_client: true,
                data: Data::Binary(vec![1, 2]),
            },
            Message {
                at_ms: 30,
                from_client: false,
                data: Data::Binary(vec![3, 4]),
            },
        ],
    };
    let refused = Conversation {
        path: "/private".into(),
        opening: Opening::Refused {
            status: 401,
            headers: vec![
                ("WWW-Authenticate".into(), "Bearer".into()),
                ("Content-Length".into(), "7".into()),
            ],
            body: "no auth".into(),
        },
        messages: vec![],
    };
    let file = stubs_file(&[c, refused], Some("ignore"));
    assert_eq!(
        file["upgrades"],
        json!([{"path": "/private", "refuse": {"status": 401, "headers": {"WWW-Authenticate": "Bearer"}, "body": "no auth"}}])
    );
    let stubs = Stubs::parse(&file.to_string(), 1 << 20).unwrap();
    let t0 = Instant::now();
    let mut s = Session::new(&stubs, 1, "/feed");
    assert!(s.on_open(&stubs, t0).out.is_empty());
    let out = s.on_timer(&stubs, t0 + Duration::from_millis(20));
    assert!(
        matches!(&out[..], [Out::Send(Text, b)] if b == b"hello {{you}}"),
        "{out:?}"
    );
    let out = s.on_message(&stubs, Binary, &[1, 2], t0).out;
    assert!(
        matches!(&out[..], [Out::Send(Binary, b)] if b == &[3, 4]),
        "{out:?}"
    );
}

#[test]
fn conversations_share_their_beginning_and_part_where_they_differ() {
    let a = Conversation {
        path: "/chat".into(),
        opening: Opening::Accepted { subprotocol: None },
        messages: vec![
            m(0, true, "hi"),
            m(1, false, "hello"),
            m(2, true, "left"),
            m(3, false, "went left"),
        ],
    };
    let mut b = a.clone();
    b.messages[1] = m(1, false, "hello again");
    b.messages[2] = m(2, true, "right");
    b.messages[3] = m(3, false, "went right");
    let file = stubs_file(&[a, b], Some("ignore"));
    let stubs = file["stubs"].as_array().unwrap();
    assert_eq!(stubs.len(), 3, "one `hi`, then two ways: {file:#}");
    assert_eq!(
        stubs[0]["reply"][0]["text"], "hello",
        "the first recorded answer"
    );
    let (left, right) = (&stubs[1], &stubs[2]);
    assert_eq!(
        (&left["state"], &right["state"]),
        (&stubs[0]["then"]["state"], &stubs[0]["then"]["state"])
    );
    let stubs = Stubs::parse(&file.to_string(), 1 << 20).unwrap();
    for (ask, answer) in [("left", "went left"), ("right", "went right")] {
        let mut s = Session::new(&stubs, 1, "/chat");
        let t0 = Instant::now();
        s.on_message(&stubs, Text, b"hi", t0);
        let out = s.on_message(&stubs, Text, ask.as_bytes(), t0).out;
        assert!(out.is_empty());
        let out = s.on_timer(&stubs, t0 + Duration::from_millis(5));
        assert!(
            matches!(&out[..], [Out::Send(Text, a), Out::Send(Text, b)] if a == b"hello" && b == answer.as_bytes()),
            "{out:?}"
        );
    }
}
