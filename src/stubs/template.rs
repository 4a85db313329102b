//! Reply templates: `{{message}}`, `{{json.a.b.0}}`, `{{regex.1}}` /
//! `{{regex.NAME}}`, `{{query.NAME}}`, `{{conn}}`, `{{n}}`, `{{count}}`,
//! `{{now}}`, `{{now_ms}}`, `{{uuid}}`. Parsed once at load (an unknown
//! placeholder is an error there); rendered per reply from a [`Context`].
//! In a JSON reply a string that is exactly one placeholder takes the value
//! with its JSON type; the reply is built as a JSON value, so it is always
//! valid JSON whatever the client sent.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// One placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Message,
    Json(Vec<String>),
    Regex(String),
    Query(String),
    Header(String),
    Conn,
    N,
    Count,
    Now,
    NowMs,
    Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Var(Var),
}

/// A text with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Seg>);

/// A JSON value whose strings are templates.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    Plain(Value),
    Text(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

/// What a reply is rendered from: the matched message and where it was.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub message: Option<String>,
    pub json: Option<Value>,
    /// Capture groups by index (0: the whole match) and by name.
    pub captures: Vec<(String, Option<String>)>,
    pub query: Vec<(String, String)>,
    /// The upgrade request's headers.
    pub headers: Vec<(String, String)>,
    pub conn: u32,
    /// 1-based within a stream (1 outside one).
    pub n: u64,
    /// How many times the stub matched on this connection.
    pub count: u64,
}

fn var(name: &str) -> Result<Var, String> {
    let name = name.trim();
    let (head, rest) = name.split_once('.').unwrap_or((name, ""));
    Ok(match (head, rest) {
        ("message", "") => Var::Message,
        ("json", path) if !path.is_empty() => {
            Var::Json(path.split('.').map(str::to_string).collect())
        }
        ("regex", g) if !g.is_empty() => Var::Regex(g.to_string()),
        ("query", q) if !q.is_empty() => Var::Query(q.to_string()),
        ("header", h) if !h.is_empty() => Var::Header(h.to_string()),
        ("conn", "") => Var::Conn,
        ("n", "") => Var::N,
        ("count", "") => Var::Count,
        ("now", "") => Var::Now,
        ("now_ms", "") => Var::NowMs,
        ("uuid", "") => Var::Uuid,
        _ => {
            return Err(format!(
                "unknown placeholder {{{{{name}}}}} (message, json.PATH, regex.N, regex.NAME, \
                 query.NAME, header.NAME, conn, n, count, now, now_ms, uuid; braces for a literal {{{{)"
            ))
        }
    })
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut segs = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                segs.push(Seg::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("an unclosed placeholder in {text:?}"))?;
            // `{{braces}}` is a literal `{{` (a recorded text that has one).
            match after[..close].trim() {
                "braces" => segs.push(Seg::Lit("{{".into())),
                name => segs.push(Seg::Var(var(name)?)),
            }
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            segs.push(Seg::Lit(rest.to_string()));
        }
        Ok(Template(segs))
    }

    /// The one placeholder this template is, if that is all it is.
    fn single(&self) -> Option<&Var> {
        match self.0.as_slice() {
            [Seg::Var(v)] => Some(v),
            _ => None,
        }
    }

    pub fn render(&self, ctx: &Context) -> String {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Seg::Lit(s) => out.push_str(s),
                Seg::Var(v) => match value(v, ctx) {
                    Value::Null => {}
                    Value::String(s) => out.push_str(&s),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        out
    }
}

impl JsonTemplate {
    pub fn parse(v: &Value) -> Result<JsonTemplate, String> {
        Ok(match v {
            Value::String(s) if s.contains("{{") => JsonTemplate::Text(Template::parse(s)?),
            Value::Array(a) => JsonTemplate::Array(
                a.iter()
                    .map(JsonTemplate::parse)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => JsonTemplate::Object(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), JsonTemplate::parse(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => JsonTemplate::Plain(other.clone()),
        })
    }

    pub fn render(&self, ctx: &Context) -> Value {
        match self {
            JsonTemplate::Plain(v) => v.clone(),
            JsonTemplate::Text(t) => match t.single() {
                Some(v) => value(v, ctx),
                None => Value::String(t.render(ctx)),
            },
            JsonTemplate::Array(a) => Value::Array(a.iter().map(|t| t.render(ctx)).collect()),
            JsonTemplate::Object(o) => {
                Value::Object(o.iter().map(|(k, t)| (k.clone(), t.render(ctx))).collect())
            }
        }
    }
}

/// A placeholder's value (`null` when missing).
fn value(v: &Var, ctx: &Context) -> Value {
    match v {
        Var::Message => ctx.message.clone().map_or(Value::Null, Value::String),
        Var::Json(path) => {
            let mut cur = ctx.json.as_ref();
            for key in path {
                cur = cur.and_then(|c| match c {
                    Value::Object(o) => o.get(key),
                    Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                });
            }
            cur.cloned().unwrap_or(Value::Null)
        }
        Var::Regex(g) => ctx
            .captures
            .iter()
            .find(|(name, _)| name == g)
            .and_then(|(_, v)| v.clone())
            .map_or(Value::Null, Value::String),
        Var::Query(q) => ctx
            .query
            .iter()
            .find(|(k, _)| k == q)
            .map_or(Value::Null, |(_, v)| Value::String(v.clone())),
        Var::Header(h) => ctx
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(h))
            .map_or(Value::Null, |(_, v)| Value::String(v.clone())),
        Var::Conn => Value::from(ctx.conn),
        Var::N => Value::from(ctx.n),
        Var::Count => Value::from(ctx.count),
        Var::Now => Value::String(crate::inspector::rfc3339_micros(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        )),
        Var::NowMs => Value::from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        ),
        Var::Uuid => Value::String(uuid_v4()),
    }
}

/// A random (version 4) UUID from the clock and a per-process counter
/// mixed through SplitMix64: unique within a run, not for cryptography.
fn uuid_v4() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    let (a, b) = (mix(t ^ c.rotate_left(32)), mix(t.wrapping_add(c)));
    let a = (a & !0xf000) | 0x4000; // version 4
    let b = (b & !(0b11 << 62)) | (0b10 << 62); // variant 1
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render_and_keep_their_json_type() {
        let ctx = Context {
            message: Some(r#"{"id": 7, "channel": "prices"}"#.into()),
            json: serde_json::from_str(r#"{"id": 7, "channel": "prices", "tags": ["a", "b"]}"#)
                .ok(),
            captures: vec![
                ("0".into(), Some("bye bob".into())),
                ("1".into(), Some("bob".into())),
            ],
            query: vec![("user".into(), "ann".into())],
            headers: vec![("X-Request-Id".into(), "r-9".into())],
            conn: 3,
            n: 2,
            count: 1,
        };
        let t = JsonTemplate::parse(&serde_json::json!({
            "id": "{{json.id}}", "label": "id {{json.id}} on {{json.channel}}",
            "tag": "{{json.tags.1}}", "missing": "{{json.nope}}", "n": "{{n}}", "who": "{{query.user}}"
        }))
        .unwrap();
        assert_eq!(
            t.render(&ctx),
            serde_json::json!({"id": 7, "label": "id 7 on prices", "tag": "b", "missing": null, "n": 2, "who": "ann"})
        );
        let t =
            Template::parse("goodbye {{regex.1}}{{json.nope}} #{{conn}} {{header.x-request-id}}")
                .unwrap();
        assert_eq!(t.render(&ctx), "goodbye bob #3 r-9");
        assert!(Template::parse("{{nope}}")
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(Template::parse("{{message").is_err());
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
    }
}
