//! Which peers are trusted, and with what: the forwarded headers
//! (`--forwarded-allow-ips`) and the PROXY protocol (`--proxy-protocol`,
//! `--proxy-allow-from`). An allow list holds addresses, CIDR ranges and
//! `*`; an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a dual-stack
//! socket reports) is compared as the IPv4 address it carries.

use std::net::IpAddr;

use crate::proxy_protocol::Mode;

/// One address or range of an allow list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    /// Leading bits that must match.
    prefix: u8,
}

impl Net {
    fn parse(text: &str) -> Result<Net, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let addr = canonical(addr);
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={bits}"))?,
        };
        Ok(Net { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (ours, theirs, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u128::from(u32::from(a)), u128::from(u32::from(b)), 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        // A shift by the full width (prefix 0) matches everything.
        shift >= bits || (ours >> shift) == (theirs >> shift)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Addresses and ranges, or everything (`*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    any: bool,
    nets: Vec<Net>,
}

impl AllowList {
    /// A comma-separated list: addresses, CIDR ranges, `*`. Empty: nobody.
    pub fn parse(text: &str) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                list.any = true;
            } else {
                list.nets.push(Net::parse(item)?);
            }
        }
        Ok(list)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.any || self.nets.iter().any(|n| n.contains(ip))
    }

    /// Whether a connection's peer, as `socket::Peer` spells it, is in the
    /// list. A Unix-socket peer (no address) is trusted, as in gunicorn:
    /// only a local process can reach the socket, and the file's mode
    /// decides which.
    pub fn allows_peer(&self, peer_ip: &str) -> bool {
        if peer_ip.is_empty() || self.any {
            return true;
        }
        peer_ip.parse().is_ok_and(|ip| self.contains(ip))
    }
}

/// The engine's trust settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// Peers whose X-Forwarded-* and Forwarded headers are believed.
    pub forwarded: AllowList,
    /// Which PROXY protocol headers are read.
    pub proxy_protocol: Mode,
    /// Peers that must (and alone may) send a PROXY header.
    pub proxy_allow: AllowList,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> AllowList {
        AllowList::parse(text).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_and_ranges_match() {
        let l = list("127.0.0.1, 10.0.0.0/8,2001:db8::/32");
        assert!(l.contains(ip("127.0.0.1")));
        assert!(!l.contains(ip("127.0.0.2")));
        assert!(l.contains(ip("10.255.1.2")));
        assert!(!l.contains(ip("11.0.0.1")));
        assert!(l.contains(ip("2001:db8:1::5")));
        assert!(!l.contains(ip("2001:db9::1")));
        assert!(!l.contains(ip("::1")));
    }

    #[test]
    fn mapped_ipv6_is_compared_as_ipv4() {
        let l = list("10.0.0.0/8");
        assert!(l.contains(ip("::ffff:10.1.2.3")));
        assert!(list("::ffff:10.1.2.3").contains(ip("10.1.2.3")));
        assert!(!l.contains(ip("::ffff:11.1.2.3")));
    }

    #[test]
    fn star_zero_prefix_and_empty() {
        assert!(list("*").contains(ip("8.8.8.8")));
        assert!(list("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!list("0.0.0.0/0").contains(ip("::2")));
        assert!(list("::/0").contains(ip("::2")));
        assert!(!list("").contains(ip("127.0.0.1")));
        assert!(!list("").allows_peer("127.0.0.1"));
    }

    #[test]
    fn unix_peers_are_allowed_and_garbage_is_not() {
        let l = list("127.0.0.1");
        assert!(l.allows_peer(""));
        assert!(l.allows_peer("127.0.0.1"));
        assert!(!l.allows_peer("not an address"));
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry_named() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.1/x",
            "host.example",
            "10.0.0.0/-1",
            "1.2.3",
        ] {
            let err = AllowList::parse(&format!("127.0.0.1,{bad}")).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
