//! Redis's wire protocol (RESP2) through the `redis-protocol` crate, which
//! is sans-IO like the rest of the core: commands are encoded into a
//! buffer, replies decoded from one. And the two server-side scripts that
//! give a room its one order (`APPEND`) and let an instance catch up with
//! it (`CATCH_UP`): each runs atomically in Redis, so a message's id, its
//! place in the room's stream and its publication are one step.

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};

use crate::proto::MessageKind;

/// How both scripts start: the room's epoch is created if Redis has none
/// (a room new to Redis, or lost with its data: its stream, if any, is not
/// trusted), and its counter is raised to the caller's floor (the last id
/// it knows), so ids never go back after Redis lost them. KEYS: seq, epoch,
/// log. ARGV[1]: a new epoch; ARGV[2]: the floor. Leaves `epoch` and `seq`.
macro_rules! room_prelude {
    () => {
        r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[3])
end
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
if seq < tonumber(ARGV[2]) then
  seq = tonumber(ARGV[2])
  redis.call('SET', KEYS[1], seq)
end
"#
    };
}

/// Appends a message to a room (after the prelude): the id is the room's
/// counter plus one, kept in the room's stream (trimmed to the history
/// length) and published to the instances. The instance's
/// answered-but-unacknowledged appends are remembered by ticket in a sorted
/// set (trimmed below `lo`, the oldest ticket the instance still waits for),
/// so an append resent after a lost reply is answered with its id, not
/// appended twice.
///
/// An idempotency key (`ARGV[9]`, empty for none) is looked up first in
/// the room's keys: a sorted set by the time Redis appended them (`TIME`,
/// in ms) and a hash of their ids. Keys older than the window (`ARGV[10]`,
/// ms) are dropped then, those past the newest `ARGV[11]` after an append,
/// and both keys expire with the window, so nothing sweeps them. A key
/// seen is answered with its id and a third element, and not appended.
///
/// KEYS: seq, epoch, log, sent, keys, keyids. ARGV: a new epoch, floor,
/// channel, history, kind, data, ticket, lo, idempotency key, window,
/// count. Returns `{id, epoch}`, or `{id, epoch, 1}` for a duplicate.
pub const APPEND: &str = concat!(
    room_prelude!(),
    r#"
local done = redis.call('ZRANGEBYSCORE', KEYS[4], ARGV[7], ARGV[7])
if done[1] then
  return {tonumber(string.match(done[1], ':(%d+)$')), epoch}
end
local key = ARGV[9]
local now = 0
if key ~= '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local old = now - tonumber(ARGV[10])
  local gone = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. old)
  for _, k in ipairs(gone) do redis.call('HDEL', KEYS[6], k) end
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. old)
  local first = redis.call('HGET', KEYS[6], key)
  if first then
    return {tonumber(first), epoch, 1}
  end
end
local id = redis.call('INCR', KEYS[1])
if tonumber(ARGV[4]) > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], id .. '-1', 'k', ARGV[5], 'd', ARGV[6])
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[7] .. ':' .. id)
redis.call('EXPIRE', KEYS[4], 3600)
redis.call('PUBLISH', ARGV[3], id .. ' ' .. epoch .. ' ' .. ARGV[5] .. '\n' .. ARGV[6])
if key ~= '' then
  redis.call('ZADD', KEYS[5], now, key)
  redis.call('HSET', KEYS[6], key, id)
  local over = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[11])
  if over > 0 then
    for _, k in ipairs(redis.call('ZRANGE', KEYS[5], 0, over - 1)) do
      redis.call('HDEL', KEYS[6], k)
    end
    redis.call('ZREMRANGEBYRANK', KEYS[5], 0, over - 1)
  end
  redis.call('PEXPIRE', KEYS[5], ARGV[10])
  redis.call('PEXPIRE', KEYS[6], ARGV[10])
end
return {id, epoch}
"#
);

/// Where a room stands (after the prelude): its last id, its epoch, and
/// the retained messages after `after` (or, `after` empty, the last
/// `count`).
///
/// KEYS: seq, epoch, log. ARGV: a new epoch, floor, after, count.
/// Returns `{seq, epoch, entries}`, entries oldest first as XRANGE gives
/// them (`[["ID-1", ["k", kind, "d", data]], ...]`).
pub const CATCH_UP: &str = concat!(
    room_prelude!(),
    r#"
local entries = {}
if tonumber(ARGV[4]) > 0 then
  if ARGV[3] == '' then
    local rev = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[4])
    for i = #rev, 1, -1 do entries[#entries + 1] = rev[i] end
  else
    entries = redis.call('XRANGE', KEYS[3], '(' .. ARGV[3] .. '-1', '+', 'COUNT', ARGV[4])
  end
end
return {seq, epoch, entries}
"#
);

/// A script's SHA-1 in hex, as `EVALSHA` names it (loaded with
/// `SCRIPT LOAD` on every new connection, so it is always there).
pub fn sha(script: &str) -> String {
    use sha1::{Digest, Sha1};
    Sha1::digest(script.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Appends one command (an array of bulk strings) to `out`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let parts: Vec<BorrowedFrame<'_>> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let frame = BorrowedFrame::Array(&parts);
    let at = out.len();
    out.resize(at + frame.encode_len(false), 0);
    // The buffer was sized by the frame's own length: encoding cannot fail.
    let n = encode_borrowed(&mut out[at..], &frame, false).unwrap_or(0);
    out.truncate(at + n);
}

/// The next complete reply in `buf`, and how many bytes it took; `Ok(None)`
/// if it is not complete yet. An error means the stream is not RESP.
pub fn reply(buf: &[u8]) -> Result<Option<(OwnedFrame, usize)>, String> {
    decode(buf).map_err(|e| format!("RESP: {e:?}"))
}

/// A reply as an integer (RESP integer or a decimal bulk string).
pub fn int(f: &OwnedFrame) -> Option<u64> {
    match f {
        OwnedFrame::Integer(i) => u64::try_from(*i).ok(),
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
            std::str::from_utf8(b).ok()?.parse().ok()
        }
        _ => None,
    }
}

/// A reply as bytes.
pub fn bytes(f: &OwnedFrame) -> Option<&[u8]> {
    match f {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => Some(b),
        _ => None,
    }
}

/// The message of an error reply.
pub fn error(f: &OwnedFrame) -> Option<&str> {
    match f {
        OwnedFrame::Error(e) => Some(e),
        _ => None,
    }
}

/// A stream entry `["ID-1", ["k", kind, "d", data]]`.
pub fn entry(e: &OwnedFrame) -> Option<(u64, MessageKind, Vec<u8>)> {
    let OwnedFrame::Array(v) = e else {
        return None;
    };
    let id = std::str::from_utf8(bytes(v.first()?)?).ok()?;
    let id = id.split_once('-')?.0.parse().ok()?;
    let OwnedFrame::Array(fields) = v.get(1)? else {
        return None;
    };
    let mut kind = None;
    let mut data = None;
    for pair in fields.chunks(2) {
        match (bytes(&pair[0])?, pair.get(1).and_then(bytes)) {
            (b"k", Some(k)) => kind = Some(kind_of(k)?),
            (b"d", Some(d)) => data = Some(d.to_vec()),
            _ => {}
        }
    }
    Some((id, kind?, data?))
}

fn kind_of(k: &[u8]) -> Option<MessageKind> {
    match k {
        b"t" => Some(MessageKind::Text),
        b"b" => Some(MessageKind::Binary),
        _ => None,
    }
}

/// A publication's payload: `ID EPOCH KIND\nDATA`.
pub fn publication(p: &[u8]) -> Option<(u64, Vec<u8>, MessageKind, Vec<u8>)> {
    let nl = p.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&p[..nl]).ok()?;
    let mut it = head.split(' ');
    let id = it.next()?.parse().ok()?;
    let epoch = it.next()?.as_bytes().to_vec();
    let kind = kind_of(it.next()?.as_bytes())?;
    Some((id, epoch, kind, p[nl + 1..].to_vec()))
}
