//! The PROXY protocol (HAProxy's proxy-protocol.txt, v1 and v2): the header
//! a TCP proxy (HAProxy `send-proxy`, nginx `proxy_protocol`, AWS NLB,
//! stunnel) sends before anything else, naming the client it took the
//! connection from. Parsed here from whatever bytes have arrived so far,
//! possibly a few at a time; the connection (conn.rs) applies the result.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which headers are read (`--proxy-protocol`, gunicorn's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// None: a `PROXY` line is an invalid HTTP request (400).
    #[default]
    Off,
    V1,
    V2,
    /// Either version.
    Auto,
}

impl Mode {
    pub fn parse(text: &str) -> Result<Mode, String> {
        match text {
            "off" => Ok(Mode::Off),
            "v1" => Ok(Mode::V1),
            "v2" => Ok(Mode::V2),
            "auto" => Ok(Mode::Auto),
            other => Err(format!(
                "proxy protocol must be off, v1, v2 or auto, got {other:?}"
            )),
        }
    }

    fn takes_v1(self) -> bool {
        matches!(self, Mode::V1 | Mode::Auto)
    }

    fn takes_v2(self) -> bool {
        matches!(self, Mode::V2 | Mode::Auto)
    }
}

const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;
/// The longest v2 header accepted: the addresses (216 bytes at most) and
/// room for the TLVs proxies send (ALPN, authority, TLS details, unique
/// id); the format allows 64 KiB, which nobody needs buffered per
/// connection before a byte of HTTP.
pub const V2_MAX: usize = V2_FIXED + 2048;

/// Where the connection really comes from, as the header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// TCP over IPv4 or IPv6: the client and the address it connected to.
    Inet {
        client: SocketAddr,
        server: SocketAddr,
    },
    /// A Unix socket on the proxy's side: no address to show.
    Unix,
}

/// What the bytes received so far are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// They may still become a header: more are needed.
    Incomplete,
    /// A whole header of `len` bytes; `source` None: the connection's own
    /// addresses stand (v2 LOCAL, an UNSPEC family, v1 UNKNOWN).
    Header { len: usize, source: Option<Source> },
    /// A header this mode does not take, or one that is malformed or too long.
    Invalid(&'static str),
}

/// Whether `buf` begins with `prefix`: None while too short to tell.
fn begins(buf: &[u8], prefix: &[u8]) -> Option<bool> {
    if buf.len() >= prefix.len() {
        Some(buf.starts_with(prefix))
    } else if prefix.starts_with(buf) {
        None
    } else {
        Some(false)
    }
}

/// Whether `buf` begins a PROXY header (of either version): None while
/// too short to tell.
pub fn detect(buf: &[u8]) -> Option<bool> {
    match (begins(buf, V1_PREFIX), begins(buf, V2_SIGNATURE)) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// Parses the header at the start of `buf` as `mode` takes it.
pub fn parse(buf: &[u8], mode: Mode) -> Parsed {
    if begins(buf, V1_PREFIX) == Some(true) {
        if !mode.takes_v1() {
            return Parsed::Invalid("a PROXY v1 header, only v2 is taken");
        }
        return parse_v1(buf);
    }
    if begins(buf, V2_SIGNATURE) == Some(true) {
        if !mode.takes_v2() {
            return Parsed::Invalid("a PROXY v2 header, only v1 is taken");
        }
        return parse_v2(buf);
    }
    match detect(buf) {
        None => Parsed::Incomplete,
        Some(_) => Parsed::Invalid("no PROXY header"),
    }
}

fn port(text: &[u8]) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn ip<T: std::str::FromStr>(text: &[u8]) -> Option<T> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// `PROXY TCP4|TCP6 src dst sport dport\r\n` or `PROXY UNKNOWN ...\r\n`.
fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("PROXY v1 header longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    let len = end + 2;
    let line = &buf[V1_PREFIX.len()..end];
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    match fields.first().copied() {
        // The proxy could not tell: whatever follows is ignored.
        Some(b"UNKNOWN") => return Parsed::Header { len, source: None },
        Some(b"TCP4") | Some(b"TCP6") if fields.len() == 5 => {}
        _ => return Parsed::Invalid("malformed PROXY v1 header"),
    }
    let addresses = if fields[0] == b"TCP4" {
        ip::<Ipv4Addr>(fields[1])
            .zip(ip::<Ipv4Addr>(fields[2]))
            .map(|(s, d)| (IpAddr::V4(s), IpAddr::V4(d)))
    } else {
        ip::<Ipv6Addr>(fields[1])
            .zip(ip::<Ipv6Addr>(fields[2]))
            .map(|(s, d)| (IpAddr::V6(s), IpAddr::V6(d)))
    };
    match (addresses, port(fields[3]), port(fields[4])) {
        (Some((src, dst)), Some(sport), Some(dport)) => Parsed::Header {
            len,
            source: Some(Source::Inet {
                client: SocketAddr::new(src, sport),
                server: SocketAddr::new(dst, dport),
            }),
        },
        _ => Parsed::Invalid("malformed PROXY v1 addresses"),
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

fn octets<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at + N)?.try_into().ok()
}

/// A v2 address block of the INET (N = 4) or INET6 (N = 16) family: source
/// and destination address, source and destination port; and its length.
fn inet<const N: usize>(block: &[u8]) -> Option<(Source, usize)>
where
    IpAddr: From<[u8; N]>,
{
    let (source, destination) = (octets::<N>(block, 0)?, octets::<N>(block, N)?);
    let (source_port, destination_port) = (be16(block, 2 * N)?, be16(block, 2 * N + 2)?);
    let client = SocketAddr::new(IpAddr::from(source), source_port);
    let server = SocketAddr::new(IpAddr::from(destination), destination_port);
    Some((Source::Inet { client, server }, 2 * N + 4))
}

/// The 16-byte fixed part, the addresses, then TLVs (type, 16-bit length,
/// value), which are checked to stay in bounds and otherwise skipped.
fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < V2_FIXED {
        return Parsed::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Parsed::Invalid("PROXY v2 header of another version");
    }
    let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Parsed::Invalid("PROXY v2 header longer than the 2 KiB taken");
    }
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    let block = &buf[V2_FIXED..len];
    match command {
        // LOCAL (the proxy's own health check): the real endpoints stand.
        0 => return Parsed::Header { len, source: None },
        1 => {}
        _ => return Parsed::Invalid("PROXY v2 header with an unknown command"),
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    if family == 0 {
        return Parsed::Header { len, source: None };
    }
    if transport != 1 {
        return Parsed::Invalid("PROXY v2 header for a transport other than a stream");
    }
    let addressed = match family {
        1 => inet::<4>(block),
        2 => inet::<16>(block),
        // Two 108-byte paths.
        3 => (block.len() >= 216).then_some((Source::Unix, 216)),
        _ => return Parsed::Invalid("PROXY v2 header with an unknown address family"),
    };
    let Some((source, used)) = addressed else {
        return Parsed::Invalid("PROXY v2 header too short for its addresses");
    };
    let mut tlvs = &block[used..];
    while !tlvs.is_empty() {
        let Some(value_len) = be16(tlvs, 1) else {
            return Parsed::Invalid("PROXY v2 header with a truncated TLV");
        };
        let Some(rest) = tlvs.get(3 + usize::from(value_len)..) else {
            return Parsed::Invalid("PROXY v2 TLV longer than its header");
        };
        tlvs = rest;
    }
    Parsed::Header {
        len,
        source: Some(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(client: &str, server: &str) -> Option<Source> {
        Some(Source::Inet {
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
        })
    }

    /// A v2 header: command, family/transport byte, block.
    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn tcp4_block() -> Vec<u8> {
        let mut b = vec![203, 0, 113, 7, 10, 0, 0, 1];
        b.extend_from_slice(&4711u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line, Mode::Auto),
            Parsed::Header {
                len: 42,
                source: inet("203.0.113.7:4711", "10.0.0.1:443")
            }
        );
        let line = b"PROXY TCP6 2001:db8::7 ::1 65535 80\r\n";
        assert_eq!(
            parse(line, Mode::V1),
            Parsed::Header {
                len: line.len(),
                source: inet("[2001:db8::7]:65535", "[::1]:80")
            }
        );
        let line = b"PROXY UNKNOWN whatever it says\r\nGET";
        assert_eq!(
            parse(line, Mode::V1),
            Parsed::Header {
                len: line.len() - 3,
                source: None
            }
        );
    }

    #[test]
    fn v1_malformed_lines_are_invalid() {
        for bad in [
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 4711\r\n"[..],
            b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 443 9\r\n",
            b"PROXY TCP4 ::1 10.0.0.1 4711 443\r\n",
            b"PROXY TCP6 10.0.0.2 ::1 4711 443\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 -1 443\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 +1 443\r\n",
            b"PROXY TCP4  203.0.113.7 10.0.0.1 1 443\r\n",
            b"PROXY UDP4 203.0.113.7 10.0.0.1 1 443\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 203.0.113.\xff 10.0.0.1 1 443\r\n",
        ] {
            assert!(
                matches!(parse(bad, Mode::Auto), Parsed::Invalid(_)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn v1_split_oversized_and_unterminated() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 443\r\n";
        for cut in 0..line.len() {
            assert_eq!(
                parse(&line[..cut], Mode::Auto),
                Parsed::Incomplete,
                "cut {cut}"
            );
        }
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'x');
        assert!(matches!(parse(&long, Mode::Auto), Parsed::Invalid(_)));
        long.truncate(V1_MAX - 1);
        assert_eq!(parse(&long, Mode::Auto), Parsed::Incomplete);
        // Exactly the longest allowed line.
        long.truncate(V1_MAX - 2);
        long.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&long, Mode::Auto),
            Parsed::Header { len: V1_MAX, .. }
        ));
    }

    #[test]
    fn v2_families_local_and_tlvs() {
        let header = v2(1, 0x11, &tcp4_block());
        assert_eq!(
            parse(&header, Mode::V2),
            Parsed::Header {
                len: 28,
                source: inet("203.0.113.7:4711", "10.0.0.1:443")
            }
        );
        let mut block = vec![0u8; 36];
        block[15] = 1; // ::1
        block[16] = 0x20;
        block[17] = 0x01;
        block[32..34].copy_from_slice(&8080u16.to_be_bytes());
        block[34..36].copy_from_slice(&80u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 0x21, &block), Mode::Auto),
            Parsed::Header {
                len: 52,
                source: inet("[::1]:8080", "[2001::]:80")
            }
        );
        let unix = v2(1, 0x31, &[b'/'; 216]);
        assert_eq!(
            parse(&unix, Mode::Auto),
            Parsed::Header {
                len: 232,
                source: Some(Source::Unix)
            }
        );
        let local = v2(0, 0x11, &tcp4_block());
        assert_eq!(
            parse(&local, Mode::Auto),
            Parsed::Header {
                len: 28,
                source: None
            }
        );
        assert_eq!(
            parse(&v2(1, 0x00, &[]), Mode::Auto),
            Parsed::Header {
                len: 16,
                source: None
            }
        );
        // ALPN and a NOOP padding TLV after the addresses.
        let mut block = tcp4_block();
        block.extend_from_slice(&[0x01, 0, 2, b'h', b'2', 0x04, 0, 0]);
        let header = v2(1, 0x11, &block);
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&bytes, Mode::Auto),
            Parsed::Header {
                len: header.len(),
                source: inet("203.0.113.7:4711", "10.0.0.1:443")
            }
        );
    }

    #[test]
    fn v2_hostile_headers_are_invalid() {
        let mut bad_tlv = tcp4_block();
        bad_tlv.extend_from_slice(&[0x01, 0, 9, b'h']);
        let mut cut_tlv = tcp4_block();
        cut_tlv.extend_from_slice(&[0x01, 0]);
        for (what, header) in [
            ("short TCP4 block", v2(1, 0x11, &tcp4_block()[..11])),
            ("short TCP6 block", v2(1, 0x21, &[0; 35])),
            ("short UNIX block", v2(1, 0x31, &[0; 215])),
            ("TLV past the end", v2(1, 0x11, &bad_tlv)),
            ("truncated TLV", v2(1, 0x11, &cut_tlv)),
            ("datagram", v2(1, 0x12, &tcp4_block())),
            ("unknown family", v2(1, 0x41, &tcp4_block())),
            ("unknown command", v2(2, 0x11, &tcp4_block())),
            ("oversized", v2(1, 0x11, &vec![0; V2_MAX])),
        ] {
            assert!(
                matches!(parse(&header, Mode::Auto), Parsed::Invalid(_)),
                "{what}"
            );
        }
        let mut version1 = v2(1, 0x11, &tcp4_block());
        version1[12] = 0x11;
        assert!(matches!(parse(&version1, Mode::Auto), Parsed::Invalid(_)));
        // The length alone says oversized, before the bytes arrive.
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(parse(&huge, Mode::Auto), Parsed::Invalid(_)));
    }

    #[test]
    fn v2_split_at_every_byte() {
        let header = v2(1, 0x11, &tcp4_block());
        for cut in 0..header.len() {
            assert_eq!(
                parse(&header[..cut], Mode::V2),
                Parsed::Incomplete,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn modes_take_their_versions_and_http_is_no_header() {
        let v1 = b"PROXY UNKNOWN\r\n";
        let v2h = v2(0, 0, &[]);
        assert!(matches!(parse(v1, Mode::V2), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2h, Mode::V1), Parsed::Invalid(_)));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n", Mode::Auto),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse(b"\r\n\r\nGET", Mode::Auto),
            Parsed::Invalid(_)
        ));
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(detect(b"PRO"), None);
        assert_eq!(detect(b"PROXY"), None);
        assert_eq!(detect(b"\r\n\r\n\0"), None);
        assert_eq!(detect(b"PROXY "), Some(true));
        assert_eq!(detect(&v2h), Some(true));
        assert_eq!(detect(b"PRI * HTTP/2.0"), Some(false));
        assert_eq!(Mode::parse("auto"), Ok(Mode::Auto));
        assert!(Mode::parse("yes").is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small deterministic generator: hostile input without a fuzzer.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 300) as usize;
            let prefix: &[u8] = match next() % 3 {
                0 => V2_SIGNATURE,
                1 => b"PROXY TCP4 ",
                _ => b"",
            };
            let mut bytes = prefix.to_vec();
            bytes.extend((0..len).map(|_| next() as u8));
            if let Parsed::Header { len, .. } = parse(&bytes, Mode::Auto) {
                assert!(len <= bytes.len());
            }
        }
    }
}
