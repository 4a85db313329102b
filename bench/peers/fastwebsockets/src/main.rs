//! Peer for echocast's benchmarks: echo + broadcast rooms on fastwebsockets
//! (hyper upgrade), one thread (current_thread runtime). Same routing as
//! echocast: `/broadcast` and `/broadcast/...` are rooms, every other path echoes.
//! Usage: peer-fastwebsockets ADDR
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use fastwebsockets::{upgrade, FragmentCollector, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

enum Out {
    Data(OpCode, Bytes),
    Control(Frame<'static>),
}

type Rooms = Rc<RefCell<HashMap<String, Vec<(u64, mpsc::UnboundedSender<Out>)>>>>;

fn main() {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:9001".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(&addr).await.unwrap();
        println!("listening on ws://{}", listener.local_addr().unwrap());
        let rooms: Rooms = Rc::default();
        let mut next_id = 0u64;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            next_id += 1;
            let id = next_id;
            let rooms = rooms.clone();
            tokio::task::spawn_local(async move {
                let service = service_fn(move |req| upgrade_request(req, rooms.clone(), id));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

async fn upgrade_request(
    mut req: Request<Incoming>,
    rooms: Rooms,
    id: u64,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let path = req.uri().path().to_string();
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::task::spawn_local(async move {
        if path == "/broadcast" || path.starts_with("/broadcast/") {
            let _ = broadcast(fut, rooms, path, id).await;
        } else {
            let _ = echo(fut).await;
        }
    });
    Ok(response)
}

/// The fastwebsockets example's echo server.
async fn echo(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn broadcast(
    fut: upgrade::UpgradeFut,
    rooms: Rooms,
    path: String,
    id: u64,
) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    let (read, mut write) = ws.split(tokio::io::split);
    let mut read = fastwebsockets::FragmentCollectorRead::new(read);
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    rooms
        .borrow_mut()
        .entry(path.clone())
        .or_default()
        .push((id, tx.clone()));
    let writer = tokio::task::spawn_local(async move {
        while let Some(m) = rx.recv().await {
            let r = match m {
                Out::Data(op, b) => {
                    write
                        .write_frame(Frame::new(true, op, None, Payload::Borrowed(&b)))
                        .await
                }
                Out::Control(f) => write.write_frame(f).await,
            };
            if r.is_err() {
                return;
            }
        }
    });
    loop {
        // Pongs and the close reply go through the writer task.
        let mut obligated = |f: Frame<'_>| {
            let owned = Frame::new(f.fin, f.opcode, None, Payload::Owned(f.payload.to_vec()));
            let _ = tx.send(Out::Control(owned));
            std::future::ready(Ok::<(), WebSocketError>(()))
        };
        let Ok(frame) = read.read_frame(&mut obligated).await else {
            break;
        };
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => {
                let b = Bytes::copy_from_slice(&frame.payload);
                if let Some(members) = rooms.borrow().get(&path) {
                    for (_, tx) in members {
                        let _ = tx.send(Out::Data(frame.opcode, b.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(members) = rooms.borrow_mut().get_mut(&path) {
        members.retain(|(i, _)| *i != id);
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}
