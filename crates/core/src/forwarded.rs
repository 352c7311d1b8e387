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

use std::net::{IpAddr, SocketAddr};

use crate::trust::{canonical, AllowList};

/// What the headers say; None where they say nothing usable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// The client: the rightmost address in the chain that is not itself a
    /// trusted proxy (port 0 when the proxy gave none).
    pub client: Option<SocketAddr>,
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
        let value = value.trim_ascii();
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        for (names, secure) in [
            ([&b"https"[..], b"wss", b"on"], true),
            ([&b"http"[..], b"ws", b"off"], false),
        ] {
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

/// Whether a request's headers name any forwarding header at all (cheap:
/// the common request has none and needs nothing more).
fn any_forwarding(headers: &[u8]) -> bool {
    fields(headers).any(|(name, _)| name_of(name).is_some())
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:5`, possibly quoted (Forwarded).
fn address(text: &[u8]) -> Option<SocketAddr> {
    let text = text.trim_ascii();
    let text = text
        .strip_prefix(b"\"")
        .and_then(|t| t.strip_suffix(b"\""))
        .unwrap_or(text);
    let text = std::str::from_utf8(text).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(canonical(ip), 0));
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return Some(SocketAddr::new(canonical(inner.parse().ok()?), 0));
    }
    let addr: SocketAddr = text.parse().ok()?;
    Some(SocketAddr::new(canonical(addr.ip()), addr.port()))
}

/// The client of a chain of hops, oldest first: walking from the newest,
/// the first one that is not a trusted proxy. A hop that is not an address
/// (`unknown`, an obfuscated name, garbage a client wrote) ends the walk:
/// the last trusted hop before it is as far as the chain can be believed.
fn client_of<'a>(
    hops: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &AllowList,
) -> Option<SocketAddr> {
    let mut last = None;
    for hop in hops.rev() {
        let Some(addr) = address(hop) else {
            break;
        };
        if !trusted.contains(addr.ip()) {
            return Some(addr);
        }
        last = Some(addr);
    }
    last
}

/// The `for=` or `proto=` value of each element of `Forwarded` fields, in
/// order (`None` for an element without it).
fn forwarded_params<'a>(
    values: &'a [&'a [u8]],
    param: &'a [u8],
) -> impl DoubleEndedIterator<Item = &'a [u8]> + 'a {
    values
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(move |element| {
            element
                .split(|&b| b == b';')
                .filter_map(|pair| {
                    let eq = pair.iter().position(|&b| b == b'=')?;
                    let (name, value) = (&pair[..eq], &pair[eq + 1..]);
                    name.trim_ascii()
                        .eq_ignore_ascii_case(param)
                        .then_some(value)
                })
                .next()
                .unwrap_or(b"")
        })
}

/// What the forwarding headers of a request from a trusted peer say.
pub fn scan(headers: &[u8], trusted: &AllowList) -> Forwarded {
    if !any_forwarding(headers) {
        return Forwarded::default();
    }
    let mut for_values: Vec<&[u8]> = Vec::new();
    let mut forwarded: Vec<&[u8]> = Vec::new();
    let mut scheme = Scheme::default();
    for (name, value) in fields(headers) {
        match name_of(name) {
            Some(Name::ForwardedFor) => for_values.push(value),
            Some(Name::ForwardedProto) => value.split(|&b| b == b',').for_each(|v| scheme.vote(v)),
            Some(Name::ForwardedSsl) => scheme.vote(value),
            Some(Name::Forwarded) => forwarded.push(value),
            None => {}
        }
    }
    let client = if for_values.is_empty() {
        client_of(forwarded_params(&forwarded, b"for"), trusted)
    } else {
        client_of(
            for_values.iter().flat_map(|v| v.split(|&b| b == b',')),
            trusted,
        )
    };
    let https = scheme.verdict().or_else(|| {
        let mut proto = Scheme::default();
        forwarded_params(&forwarded, b"proto").for_each(|v| proto.vote(v));
        proto.verdict()
    });
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

    fn scan_with(pairs: &[(&str, &str)], trusted: &str) -> Forwarded {
        scan(&headers(pairs), &AllowList::parse(trusted).unwrap())
    }

    fn client(pairs: &[(&str, &str)], trusted: &str) -> Option<String> {
        scan_with(pairs, trusted).client.map(|a| a.to_string())
    }

    #[test]
    fn nothing_forwarded_says_nothing() {
        assert_eq!(
            scan_with(&[("Host", "x"), ("Accept", "*/*")], "*"),
            Forwarded::default()
        );
        assert_eq!(scan_with(&[], "*"), Forwarded::default());
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let t = "127.0.0.1,10.0.0.0/8";
        assert_eq!(
            client(&[("X-Forwarded-For", "203.0.113.7")], t).as_deref(),
            Some("203.0.113.7:0")
        );
        // A client-written entry on the left is not believed.
        let chain = [("X-Forwarded-For", "1.1.1.1, 203.0.113.7, 10.0.0.5")];
        assert_eq!(client(&chain, t).as_deref(), Some("203.0.113.7:0"));
        // Several fields are one list, in order.
        let split = [
            ("x-forwarded-for", "1.1.1.1, 203.0.113.7"),
            ("X-FORWARDED-FOR", "10.0.0.5"),
        ];
        assert_eq!(client(&split, t).as_deref(), Some("203.0.113.7:0"));
        // Every hop trusted: the oldest one.
        assert_eq!(
            client(&[("X-Forwarded-For", "10.1.1.1, 10.0.0.5")], t).as_deref(),
            Some("10.1.1.1:0")
        );
        // `*` trusts every hop: the leftmost is the client.
        assert_eq!(client(&chain, "*").as_deref(), Some("1.1.1.1:0"));
    }

    #[test]
    fn garbage_ends_the_walk() {
        let t = "10.0.0.0/8";
        let chain = [("X-Forwarded-For", "203.0.113.7, nonsense, 10.0.0.5")];
        assert_eq!(client(&chain, t).as_deref(), Some("10.0.0.5:0"));
        assert_eq!(client(&[("X-Forwarded-For", "unknown")], t), None);
        assert_eq!(client(&[("X-Forwarded-For", "")], t), None);
        assert_eq!(client(&[("X-Forwarded-For", "1.2.3.4:99999")], t), None);
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        let t = "127.0.0.1";
        assert_eq!(
            client(&[("X-Forwarded-For", "203.0.113.7:4711")], t).as_deref(),
            Some("203.0.113.7:4711")
        );
        assert_eq!(
            client(&[("X-Forwarded-For", "2001:db8::1")], t).as_deref(),
            Some("[2001:db8::1]:0")
        );
        assert_eq!(
            client(&[("X-Forwarded-For", "[2001:db8::1]:80")], t).as_deref(),
            Some("[2001:db8::1]:80")
        );
        assert_eq!(
            client(&[("X-Forwarded-For", "::ffff:203.0.113.7")], t).as_deref(),
            Some("203.0.113.7:0")
        );
        // A mapped trusted proxy is skipped like the IPv4 one.
        let chain = [("X-Forwarded-For", "203.0.113.7, ::ffff:127.0.0.1")];
        assert_eq!(client(&chain, t).as_deref(), Some("203.0.113.7:0"));
    }

    #[test]
    fn rfc_7239_forwarded() {
        let t = "127.0.0.1,10.0.0.0/8";
        let f = scan_with(
            &[("Forwarded", "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.0.0.5;by=10.0.0.1")],
            t,
        );
        assert_eq!(
            f.client.map(|a| a.to_string()).as_deref(),
            Some("[2001:db8:cafe::17]:4711")
        );
        assert_eq!(f.https, Some(true));
        // An element without for= ends the walk where it stands.
        assert_eq!(
            client(&[("Forwarded", "for=1.1.1.1, proto=http, for=10.0.0.5")], t).as_deref(),
            Some("10.0.0.5:0")
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
        let f = scan_with(&both, "127.0.0.1");
        assert_eq!(
            f.client.map(|a| a.ip().to_string()).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(f.https, Some(true));
        // Each for what it says: the scheme from Forwarded when no X- header gives one.
        let mixed = [
            ("Forwarded", "for=198.51.100.1;proto=https"),
            ("X-Forwarded-For", "203.0.113.7"),
        ];
        assert_eq!(scan_with(&mixed, "127.0.0.1").https, Some(true));
    }

    #[test]
    fn scheme_headers_and_contradictions() {
        let https = |pairs: &[(&str, &str)]| scan_with(pairs, "*").https;
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
