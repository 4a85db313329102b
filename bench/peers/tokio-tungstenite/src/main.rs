//! Peer for echocast's benchmarks: echo + broadcast rooms on tokio-tungstenite,
//! one thread (current_thread runtime). Same routing as echocast: `/broadcast`
//! and `/broadcast/...` are rooms, every other path echoes.
//! Usage: peer-tokio-tungstenite ADDR. With PEER_TLS_CERT and PEER_TLS_KEY
//! (PEM files) every connection is TLS first (tokio-rustls, ring backend).
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Rooms = Rc<RefCell<HashMap<String, Vec<(u64, mpsc::UnboundedSender<Message>)>>>>;

fn main() {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:9001".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tls = tls_acceptor();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(&addr).await.unwrap();
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        println!("listening on {scheme}://{}", listener.local_addr().unwrap());
        let rooms: Rooms = Rc::default();
        let mut next_id = 0u64;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            next_id += 1;
            let _ = stream.set_nodelay(true);
            let rooms = rooms.clone();
            match tls.clone() {
                None => {
                    tokio::task::spawn_local(serve(stream, rooms, next_id));
                }
                Some(acceptor) => {
                    tokio::task::spawn_local(async move {
                        if let Ok(s) = acceptor.accept(stream).await {
                            serve(s, rooms, next_id).await;
                        }
                    });
                }
            }
        }
    });
}

fn tls_acceptor() -> Option<TlsAcceptor> {
    let cert = std::env::var("PEER_TLS_CERT").ok()?;
    let key = std::env::var("PEER_TLS_KEY").ok()?;
    let chain = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(TlsAcceptor::from(Arc::new(config)))
}

async fn serve<S>(stream: S, rooms: Rooms, id: u64)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let mut path = String::new();
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let cb = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, cb, Some(config)).await
    else {
        return;
    };
    let (mut write, read) = ws.split();
    if path == "/broadcast" || path.starts_with("/broadcast/") {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        rooms
            .borrow_mut()
            .entry(path.clone())
            .or_default()
            .push((id, tx));
        let writer = tokio::task::spawn_local(async move {
            while let Some(m) = rx.recv().await {
                if write.feed(m).await.is_err() {
                    return;
                }
                // Write everything queued so far in one go, then flush.
                while let Ok(m) = rx.try_recv() {
                    if write.feed(m).await.is_err() {
                        return;
                    }
                }
                if write.flush().await.is_err() {
                    return;
                }
            }
        });
        let mut read = read;
        while let Some(Ok(m)) = read.next().await {
            if m.is_text() || m.is_binary() {
                if let Some(members) = rooms.borrow().get(&path) {
                    for (_, tx) in members {
                        // Bytes payloads: cloning shares, it does not copy.
                        let _ = tx.send(m.clone());
                    }
                }
            }
        }
        if let Some(members) = rooms.borrow_mut().get_mut(&path) {
            members.retain(|(i, _)| *i != id);
        }
        writer.abort();
    } else {
        // The tokio-tungstenite example's echo: forward data messages back.
        let _ = read
            .try_filter(|m| std::future::ready(m.is_text() || m.is_binary()))
            .forward(write)
            .await;
    }
}
