//! The binary contract between the addon and src/native.ts, defined once:
//! the request table's row layout, the request flag bits, the callback
//! names the server reads from its `callbacks` object. `contract()` (in
//! lib.rs) exports all of it, with the `ServerOptions` field names, and
//! native.ts compares it with what it was written for when it loads the
//! addon, so a drift fails at load with a message, never as wrong data.

/// Defines `Slot` and `SLOTS` from one list, so names and order agree.
macro_rules! slots {
    ($($name:ident),* $(,)?) => {
        /// One request's row in the shared request table (a Float64Array),
        /// slot by slot. Offsets index the batch's text (see driver.rs).
        #[derive(Clone, Copy)]
        pub enum Slot {
            $($name),*
        }

        /// The slots' names, in row order, as native.ts's `Slot` names them.
        pub const SLOTS: &[&str] = &[$(stringify!($name)),*];
    };
}

slots! {
    Conn,
    Flags,
    Method,
    UrlStart,
    UrlEnd,
    HeadersStart,
    HeadersEnd,
    PeerIpStart,
    PeerIpEnd,
    ClientIpStart,
    ClientIpEnd,
    PeerPort,
    LocalPort,
    ClientPort,
}

/// Slots per request.
pub const REQUEST_STRIDE: usize = SLOTS.len();

/// The slots holding offsets into the batch's text: a contiguous run.
pub const TEXT_OFFSETS: std::ops::Range<usize> =
    Slot::UrlStart as usize..Slot::ClientIpEnd as usize + 1;

const _: () = assert!(Slot::ClientPort as usize + 1 == REQUEST_STRIDE);

/// Request flag bits in the `Flags` slot.
pub const FLAG_KEEP_ALIVE: u32 = 1;
pub const FLAG_HAS_BODY: u32 = 2;
pub const FLAG_EXPECT_CONTINUE: u32 = 4;
pub const FLAG_HTTP10: u32 = 8;
/// The scheme is https: a trusted proxy said so, or the connection is TLS.
pub const FLAG_HTTPS: u32 = 16;
/// The connection is TLS; with `FLAG_CLIENT_CERT` the client sent a
/// certificate the CAs verified (read it with `peerCertificate`).
pub const FLAG_TLS: u32 = 32;
pub const FLAG_CLIENT_CERT: u32 = 64;
/// The connection's previous request had the same header block.
pub const FLAG_SAME_HEADERS: u32 = 128;

/// The flags by the names native.ts gives them.
pub const FLAGS: [(&str, u32); 8] = [
    ("FLAG_KEEP_ALIVE", FLAG_KEEP_ALIVE),
    ("FLAG_HAS_BODY", FLAG_HAS_BODY),
    ("FLAG_EXPECT_CONTINUE", FLAG_EXPECT_CONTINUE),
    ("FLAG_HTTP10", FLAG_HTTP10),
    ("FLAG_HTTPS", FLAG_HTTPS),
    ("FLAG_TLS", FLAG_TLS),
    ("FLAG_CLIENT_CERT", FLAG_CLIENT_CERT),
    ("FLAG_SAME_HEADERS", FLAG_SAME_HEADERS),
];

/// Members of the `callbacks` object the server reads.
pub const REQUEST_TABLE: &str = "requestTable";
/// A Float64Array: `[count, conn, conn, ...]`, the connections JavaScript
/// answered, during `onRequests`, with the very response of its last
/// `respond` call; `count` is -1 outside `onRequests` (see driver.rs).
pub const REPEAT_TABLE: &str = "repeatTable";
pub const ON_REQUESTS: &str = "onRequests";
pub const ON_METHOD: &str = "onMethod";
pub const ON_BODY: &str = "onBody";
pub const ON_BODY_END: &str = "onBodyEnd";
pub const ON_CLOSE: &str = "onClose";
pub const ON_DRAIN: &str = "onDrain";
pub const ON_PEER_SHUTDOWN: &str = "onPeerShutdown";
pub const ON_ACCEPT_PAUSED: &str = "onAcceptPaused";
pub const ON_REJECTED: &str = "onRejected";
pub const ON_CAPACITY: &str = "onCapacity";

pub const CALLBACKS: [&str; 12] = [
    REQUEST_TABLE,
    REPEAT_TABLE,
    ON_REQUESTS,
    ON_METHOD,
    ON_BODY,
    ON_BODY_END,
    ON_CLOSE,
    ON_DRAIN,
    ON_PEER_SHUTDOWN,
    ON_ACCEPT_PAUSED,
    ON_REJECTED,
    ON_CAPACITY,
];

/// A Rust field name as napi-rs shows it to JavaScript (camelCase).
pub fn js_name(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_offsets_are_the_string_slots() {
        let names = SLOTS[TEXT_OFFSETS].to_vec();
        assert_eq!(
            names,
            [
                "UrlStart",
                "UrlEnd",
                "HeadersStart",
                "HeadersEnd",
                "PeerIpStart",
                "PeerIpEnd",
                "ClientIpStart",
                "ClientIpEnd"
            ]
        );
        assert_eq!(SLOTS[Slot::PeerPort as usize], "PeerPort");
    }

    #[test]
    fn field_names_become_camel_case() {
        assert_eq!(js_name("limit_request_field_size"), "limitRequestFieldSize");
        assert_eq!(js_name("workers"), "workers");
    }

    #[test]
    fn flags_are_distinct_bits() {
        let all = FLAGS.iter().fold(0, |acc, (_, bit)| {
            assert_eq!(acc & bit, 0);
            assert!(bit.is_power_of_two());
            acc | bit
        });
        assert_eq!(all, (1 << FLAGS.len()) - 1, "the low bits, none skipped");
    }
}
