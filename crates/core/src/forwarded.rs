//! What a trusted proxy says about a request in its headers: the scheme
//! (`X-Forwarded-Proto`, `X-Forwarded-Ssl`, RFC 7239 `Forwarded: proto=`)
//! and the client (`X-Forwarded-For`, `Forwarded: for=`). Only read for a
//! connection whose peer is in `--forwarded-allow-ips` (see trust.rs).
//!
//! Precedence: the X-Forwarded-* headers, where present, win over
//! `Forwarded`, each for what it says (the client, the scheme): they are
//! what nginx, HAProxy's `option forwardfor`, cloud load balancers and
//! most proxies set, so a `Forwarded` header a client made up cannot
//! override what such a proxy wrote. A proxy that writes only `Forwarded`
//! must drop the X-Forwarded-* headers clients send (as it should anyway).

use std::net::IpAddr;

use crate::trust::{canonical, AllowList};

/// The client a proxy named: its address as the header wrote it (without
/// brackets, quotes or port), and its port (0 when none was given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client<'a> {
    pub ip: &'a [u8],
    pub port: u16,
}

/// What the headers say; None where they say nothing usable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forwarded<'a> {
    /// The rightmost hop in the chain that is not itself a trusted proxy.
    pub client: Option<Client<'a>>,
    /// Whether the request reached the first proxy over https.
    pub https: Option<bool>,
}

/// Votes on the scheme: a request is https only if no header says http.
#[derive(Default)]
struct Scheme {
    secure: bool,
    plain: bool,
}

impl Scheme {
    fn vote(&mut self, value: &[u8]) {
        let value = unquote(value.trim_ascii());
        for (names, secure) in [(SECURE, true), (PLAIN, false)] {
            if names.iter().any(|n| value.eq_ignore_ascii_case(n)) {
                self.secure |= secure;
                self.plain |= !secure;
            }
        }
    }

    /// A contradiction (one header says https, another http) is http:
    /// never upgraded on a doubt. gunicorn refuses such a request instead.
    fn verdict(&self) -> Option<bool> {
        (self.secure || self.plain).then_some(self.secure && !self.plain)
    }
}

const SECURE: &[&[u8]] = &[b"https", b"wss", b"on"];
const PLAIN: &[&[u8]] = &[b"http", b"ws", b"off"];

fn unquote(text: &[u8]) -> &[u8] {
    text.strip_prefix(b"\"")
        .and_then(|t| t.strip_suffix(b"\""))
        .unwrap_or(text)
}

/// One `name\0value\0` pair after another.
fn fields(headers: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut parts = headers.split(|&b| b == 0);
    std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
}

/// Which forwarding header `name` is, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Name {
    ForwardedFor,
    ForwardedProto,
    ForwardedSsl,
    Forwarded,
}

fn name_of(name: &[u8]) -> Option<Name> {
    // By length first: most names are none of these.
    let known: &[(&[u8], Name)] = match name.len() {
        9 => &[(b"forwarded", Name::Forwarded)],
        15 => &[
            (b"x-forwarded-for", Name::ForwardedFor),
            (b"x-forwarded-ssl", Name::ForwardedSsl),
        ],
        17 => &[(b"x-forwarded-proto", Name::ForwardedProto)],
        _ => return None,
    };
    known
        .iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n))
        .map(|&(_, kind)| kind)
}

/// Whether `name` is a forwarding header (the parser notes it, so a
/// request without one is never scanned).
pub fn is_forwarding(name: &[u8]) -> bool {
    name_of(name).is_some()
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:5`, possibly quoted (Forwarded): the
/// address's own bytes, parsed, and the port.
fn address(text: &[u8]) -> Option<(&[u8], IpAddr, u16)> {
    let text = unquote(text.trim_ascii());
    let parse = |bytes: &[u8]| std::str::from_utf8(bytes).ok()?.parse::<IpAddr>().ok();
    let port = |bytes: &[u8]| -> Option<u16> {
        let digits = bytes.strip_prefix(b":")?;
        if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    if let Some(ip) = parse(text) {
        return Some((text, ip, 0));
    }
    if let Some(rest) = text.strip_prefix(b"[") {
        let end = rest.iter().position(|&b| b == b']')?;
        let (inner, after) = (&rest[..end], &rest[end + 1..]);
        let port = if after.is_empty() { 0 } else { port(after)? };
        return match parse(inner)? {
            ip @ IpAddr::V6(_) => Some((inner, ip, port)),
            IpAddr::V4(_) => None,
        };
    }
    // IPv4 with a port: exactly one colon.
    let colon = text.iter().position(|&b| b == b':')?;
    let (host, after) = text.split_at(colon);
    match parse(host)? {
        ip @ IpAddr::V4(_) => Some((host, ip, port(after)?)),
        IpAddr::V6(_) => None,
    }
}

/// The client of a chain of hops, oldest first: walking from the newest,
/// the first one that is not a trusted proxy. A hop that is not an address
/// (`unknown`, an obfuscated name, garbage a client wrote) ends the walk:
/// the last trusted hop before it is as far as the chain can be believed.
///
/// Fed one hop at a time from the oldest, in the same pass over the
/// headers that finds them: it keeps what that walk from the right would
/// return for the hops seen so far, and each newer hop changes it as the
/// walk would meet it first.
#[derive(Default)]
enum Walk<'a> {
    /// An untrusted hop answers.
    Found(Client<'a>),
    /// The walk stops (garbage, or past the oldest hop), having last
    /// walked this trusted hop.
    Ended(Option<Client<'a>>),
    /// No hop yet.
    #[default]
    Empty,
}

impl<'a> Walk<'a> {
    fn hop(&mut self, hop: &'a [u8], trusted: &AllowList) {
        let Some((ip_text, ip, port)) = address(hop) else {
            *self = Walk::Ended(None);
            return;
        };
        let client = Client { ip: ip_text, port };
        if !trusted.contains(canonical(ip)) {
            *self = Walk::Found(client);
        } else if matches!(self, Walk::Empty | Walk::Ended(None)) {
            *self = Walk::Ended(Some(client));
        }
    }

    fn client(self) -> Option<Client<'a>> {
        match self {
            Walk::Found(client) | Walk::Ended(Some(client)) => Some(client),
            Walk::Ended(None) | Walk::Empty => None,
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Walk::Empty)
    }
}

/// The `for=` and `proto=` values of one `Forwarded` element.
fn forwarded_element(element: &[u8]) -> (&[u8], Option<&[u8]>) {
    let (mut for_value, mut proto) = (&b""[..], None);
    for pair in element.split(|&b| b == b';') {
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (name, value) = (pair[..eq].trim_ascii(), &pair[eq + 1..]);
        if name.eq_ignore_ascii_case(b"for") {
            for_value = value;
        } else if name.eq_ignore_ascii_case(b"proto") {
            proto = Some(value);
        }
    }
    (for_value, proto)
}

/// What the forwarding headers of a request from a trusted peer say, in
/// one pass over them.
pub fn scan<'a>(headers: &'a [u8], trusted: &AllowList) -> Forwarded<'a> {
    let (mut x_for, mut x_scheme) = (Walk::default(), Scheme::default());
    let (mut rfc_for, mut rfc_scheme) = (Walk::default(), Scheme::default());
    let comma = |b: &u8| *b == b',';
    for (name, value) in fields(headers) {
        match name_of(name) {
            Some(Name::ForwardedFor) => value.split(comma).for_each(|hop| x_for.hop(hop, trusted)),
            Some(Name::ForwardedProto) => value.split(comma).for_each(|v| x_scheme.vote(v)),
            Some(Name::ForwardedSsl) => x_scheme.vote(value),
            Some(Name::Forwarded) => {
                for element in value.split(comma) {
                    let (for_value, proto) = forwarded_element(element);
                    rfc_for.hop(for_value, trusted);
                    if let Some(proto) = proto {
                        rfc_scheme.vote(proto);
                    }
                }
            }
            None => {}
        }
    }
    let client = if x_for.is_empty() {
        rfc_for.client()
    } else {
        x_for.client()
    };
    let https = x_scheme.verdict().or_else(|| rfc_scheme.verdict());
    Forwarded { client, https }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in pairs {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    /// The client and scheme, the client as `ip port`.
    fn scan_with(pairs: &[(&str, &str)], trusted: &str) -> (Option<String>, Option<bool>) {
        let bytes = headers(pairs);
        let f = scan(&bytes, &AllowList::parse(trusted).unwrap());
        let client = f
            .client
            .map(|c| format!("{} {}", String::from_utf8_lossy(c.ip), c.port));
        (client, f.https)
    }

    fn client(pairs: &[(&str, &str)], trusted: &str) -> Option<String> {
        scan_with(pairs, trusted).0
    }

    #[test]
    fn nothing_forwarded_says_nothing() {
        assert_eq!(
            scan_with(&[("Host", "x"), ("Accept", "*/*")], "*"),
            (None, None)
        );
        assert_eq!(scan_with(&[], "*"), (None, None));
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let t = "127.0.0.1,10.0.0.0/8";
        assert_eq!(
            client(&[("X-Forwarded-For", "203.0.113.7")], t).as_deref(),
            Some("203.0.113.7 0")
        );
        // A client-written entry on the left is not believed.
        let chain = [("X-Forwarded-For", "1.1.1.1, 203.0.113.7, 10.0.0.5")];
        assert_eq!(client(&chain, t).as_deref(), Some("203.0.113.7 0"));
        // Several fields are one list, in order.
        let split = [
            ("x-forwarded-for", "1.1.1.1, 203.0.113.7"),
            ("X-FORWARDED-FOR", "10.0.0.5"),
        ];
        assert_eq!(client(&split, t).as_deref(), Some("203.0.113.7 0"));
        // Every hop trusted: the oldest one.
        assert_eq!(
            client(&[("X-Forwarded-For", "10.1.1.1, 10.0.0.5")], t).as_deref(),
            Some("10.1.1.1 0")
        );
        // `*` trusts every hop: the leftmost is the client.
        assert_eq!(client(&chain, "*").as_deref(), Some("1.1.1.1 0"));
    }

    #[test]
    fn garbage_ends_the_walk() {
        let t = "10.0.0.0/8";
        let chain = [("X-Forwarded-For", "203.0.113.7, nonsense, 10.0.0.5")];
        assert_eq!(client(&chain, t).as_deref(), Some("10.0.0.5 0"));
        assert_eq!(client(&[("X-Forwarded-For", "unknown")], t), None);
        assert_eq!(client(&[("X-Forwarded-For", "")], t), None);
        assert_eq!(client(&[("X-Forwarded-For", "1.2.3.4:99999")], t), None);
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        let t = "127.0.0.1";
        assert_eq!(
            client(&[("X-Forwarded-For", "203.0.113.7:4711")], t).as_deref(),
            Some("203.0.113.7 4711")
        );
        assert_eq!(
            client(&[("X-Forwarded-For", "2001:db8::1")], t).as_deref(),
            Some("2001:db8::1 0")
        );
        assert_eq!(
            client(&[("X-Forwarded-For", "[2001:db8::1]:80")], t).as_deref(),
            Some("2001:db8::1 80")
        );
        assert_eq!(
            client(&[("X-Forwarded-For", "::ffff:203.0.113.7")], t).as_deref(),
            Some("::ffff:203.0.113.7 0")
        );
        // A mapped trusted proxy is skipped like the IPv4 one.
        let chain = [("X-Forwarded-For", "203.0.113.7, ::ffff:127.0.0.1")];
        assert_eq!(client(&chain, t).as_deref(), Some("203.0.113.7 0"));
    }

    #[test]
    fn rfc_7239_forwarded() {
        let t = "127.0.0.1,10.0.0.0/8";
        let f = scan_with(
            &[("Forwarded", "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.0.0.5;by=10.0.0.1")],
            t,
        );
        assert_eq!(f, (Some("2001:db8:cafe::17 4711".into()), Some(true)));
        // An element without for= ends the walk where it stands.
        assert_eq!(
            client(&[("Forwarded", "for=1.1.1.1, proto=http, for=10.0.0.5")], t).as_deref(),
            Some("10.0.0.5 0")
        );
        assert_eq!(client(&[("Forwarded", "for=_hidden")], t), None);
    }

    #[test]
    fn x_forwarded_wins_over_forwarded() {
        let both = [
            ("Forwarded", "for=198.51.100.1;proto=http"),
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
        ];
        assert_eq!(
            scan_with(&both, "127.0.0.1"),
            (Some("203.0.113.7 0".into()), Some(true))
        );
        // Each for what it says: the scheme from Forwarded when no X- header gives one.
        let mixed = [
            ("Forwarded", "for=198.51.100.1;proto=https"),
            ("X-Forwarded-For", "203.0.113.7"),
        ];
        assert_eq!(scan_with(&mixed, "127.0.0.1").1, Some(true));
    }

    #[test]
    fn scheme_headers_and_contradictions() {
        let https = |pairs: &[(&str, &str)]| scan_with(pairs, "*").1;
        assert_eq!(https(&[("X-Forwarded-Proto", "https")]), Some(true));
        assert_eq!(https(&[("X-Forwarded-Proto", "HTTP")]), Some(false));
        assert_eq!(https(&[("X-Forwarded-Ssl", "on")]), Some(true));
        assert_eq!(https(&[("X-Forwarded-Ssl", "off")]), Some(false));
        assert_eq!(https(&[("X-Forwarded-Proto", "gopher")]), None);
        // Disagreeing headers: http, never upgraded on a doubt.
        assert_eq!(
            https(&[("X-Forwarded-Ssl", "on"), ("X-Forwarded-Proto", "http")]),
            Some(false)
        );
        assert_eq!(https(&[("X-Forwarded-Proto", "https, http")]), Some(false));
        assert_eq!(
            https(&[
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Proto", "https")
            ]),
            Some(true)
        );
        assert_eq!(https(&[("Forwarded", "proto=https")]), Some(true));
    }

    #[test]
    fn hostile_values_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"0123456789abcdef.:[]\",;= \0fxFORWARDED-";
        for _ in 0..5_000 {
            let mut bytes = b"X-Forwarded-For\0".to_vec();
            let len = (state % 64) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            bytes.extend_from_slice(b"\0Forwarded\0for=[::1]:1;proto=\"\0");
            let _ = scan(&bytes, &AllowList::parse("10.0.0.0/8").unwrap());
        }
    }
}
