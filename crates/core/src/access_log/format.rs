//! `--access-logformat` compiled once into a list of operations: gunicorn's
//! atoms (`%(h)s`, `%({name}i)s`...) as Python's `%` operator reads them
//! from its format, with `%%` for a percent sign. An unknown atom is an
//! error here (gunicorn would print `-` for it): a typo shows at startup.

/// One of gunicorn's single-letter atoms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Atom {
    /// `h`: the client address.
    Client,
    /// `l`: always `-`.
    Dash,
    /// `u`: the user of Basic authentication.
    User,
    /// `t`: `[04/Dec/2026:01:02:03 +0000]`, local time.
    Time,
    /// `r`: `METHOD target HTTP/1.1`.
    RequestLine,
    /// `s`
    Status,
    /// `m`
    Method,
    /// `U`: the path, percent-decoded (PATH_INFO).
    Path,
    /// `q`
    Query,
    /// `H`
    Protocol,
    /// `b`: body bytes sent.
    Bytes,
    /// `B`: the same (gunicorn differs only for a response without `sent`).
    BytesNumber,
    /// `f`
    Referer,
    /// `a`
    UserAgent,
    /// `T`: whole seconds.
    Seconds,
    /// `D`: microseconds.
    Micros,
    /// `M`: milliseconds.
    Millis,
    /// `L`: seconds with six decimals.
    DecimalSeconds,
    /// `p`: `<pid>`.
    Pid,
}

const ATOMS: [(char, Atom); 19] = [
    ('h', Atom::Client),
    ('l', Atom::Dash),
    ('u', Atom::User),
    ('t', Atom::Time),
    ('r', Atom::RequestLine),
    ('s', Atom::Status),
    ('m', Atom::Method),
    ('U', Atom::Path),
    ('q', Atom::Query),
    ('H', Atom::Protocol),
    ('b', Atom::Bytes),
    ('B', Atom::BytesNumber),
    ('f', Atom::Referer),
    ('a', Atom::UserAgent),
    ('T', Atom::Seconds),
    ('D', Atom::Micros),
    ('M', Atom::Millis),
    ('L', Atom::DecimalSeconds),
    ('p', Atom::Pid),
];

/// An entry of the WSGI environ gunicorn offers as `{name}e`, computed from
/// what the engine knows of the request. Keys an app adds are not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environ {
    Atom(Atom),
    /// REMOTE_PORT
    ClientPort,
    /// RAW_URI: the request target as sent.
    Target,
    /// SERVER_NAME and SERVER_PORT: the address the connection arrived
    /// at, as gunicorn has them (not the Host field).
    ServerName,
    ServerPort,
    /// SCRIPT_NAME: always empty.
    Empty,
    /// wsgi.url_scheme
    Scheme,
    /// SSL_PROTOCOL and SSL_CIPHER (mod_ssl's names): the TLS version and
    /// cipher suite of the connection (`TLSv1.3`, `TLS13_AES_128_GCM_SHA256`),
    /// `-` over plain HTTP.
    TlsProtocol,
    TlsCipher,
    /// HTTP_*, CONTENT_TYPE, CONTENT_LENGTH: a request field, repeated
    /// fields joined with `,` (index into `Format::fields`).
    Field(usize),
    /// Any other key: `-`.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Text(Vec<u8>),
    Atom(Atom),
    /// `{name}i`, `{name}o`: index into `Format::fields` / `response_fields`.
    RequestField(usize),
    ResponseField(usize),
    Environ(Environ),
}

/// A request field the log needs, lower-case; `joined`: repeated fields
/// joined with `,` (as the environ has them), else the last one (as
/// gunicorn's `{name}i` has it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub joined: bool,
}

/// How lines are written: gunicorn's format, or one JSON object a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Style {
    Text(Vec<Op>),
    Json,
}

/// A compiled format: its operations and the fields they read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub style: Style,
    pub fields: Vec<Field>,
    pub response_fields: Vec<Vec<u8>>,
}

impl Format {
    /// Whether lines show the address connections arrived at (a system
    /// call per request, so only when asked for).
    pub fn needs_server_address(&self) -> bool {
        matches!(&self.style, Style::Text(ops) if ops.contains(&Op::Environ(Environ::ServerName)))
    }

    /// Whether lines show the connection's TLS version or cipher.
    pub fn needs_tls(&self) -> bool {
        matches!(&self.style, Style::Text(ops) if ops.iter().any(|op| matches!(op, Op::Environ(Environ::TlsProtocol | Environ::TlsCipher))))
    }

    /// Whether lines show how long a request took (gunicorn's default
    /// format does not: no clock is read for it then).
    pub fn needs_duration(&self) -> bool {
        let timed = |op: &Op| {
            matches!(
                op,
                Op::Atom(Atom::Seconds | Atom::Micros | Atom::Millis | Atom::DecimalSeconds)
            )
        };
        match &self.style {
            Style::Text(ops) => ops.iter().any(timed),
            Style::Json => true,
        }
    }
}

/// The request header the JSON `request_id` comes from.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The JSON line's fields, by index into `Format::fields`.
pub const JSON_REFERER: usize = 0;
pub const JSON_USER_AGENT: usize = 1;
pub const JSON_REQUEST_ID: usize = 2;

fn field_slot(fields: &mut Vec<Field>, name: &[u8], joined: bool) -> usize {
    let name = name.to_ascii_lowercase();
    if let Some(i) = fields
        .iter()
        .position(|f| f.name == name && f.joined == joined)
    {
        return i;
    }
    fields.push(Field { name, joined });
    fields.len() - 1
}

/// The environ key `key` (lower-cased, as gunicorn's `{key}e` is).
fn environ(key: &str, fields: &mut Vec<Field>) -> Environ {
    let atom = |a| Environ::Atom(a);
    match key {
        "remote_addr" => atom(Atom::Client),
        "request_method" => atom(Atom::Method),
        "path_info" => atom(Atom::Path),
        "query_string" => atom(Atom::Query),
        "server_protocol" => atom(Atom::Protocol),
        "raw_uri" => Environ::Target,
        "remote_port" => Environ::ClientPort,
        "server_name" => Environ::ServerName,
        "server_port" => Environ::ServerPort,
        "script_name" => Environ::Empty,
        "wsgi.url_scheme" => Environ::Scheme,
        "ssl_protocol" => Environ::TlsProtocol,
        "ssl_cipher" => Environ::TlsCipher,
        "content_type" | "content_length" => {
            Environ::Field(field_slot(fields, key.replace('_', "-").as_bytes(), true))
        }
        _ => match key.strip_prefix("http_") {
            Some(name) if !name.is_empty() => {
                Environ::Field(field_slot(fields, name.replace('_', "-").as_bytes(), true))
            }
            _ => Environ::Unknown,
        },
    }
}

/// The field slots every format has: `u`, `f`, `a` read the environ's
/// (joined) Authorization, Referer and User-Agent.
const AUTHORIZATION: usize = 3;
const BASE_FIELDS: [(&str, bool); 4] = [
    ("referer", true),
    ("user-agent", true),
    (REQUEST_ID_HEADER, false),
    ("authorization", true),
];

/// Where `u`, `f` and `a` find their fields.
pub fn base_field(atom: Atom) -> Option<usize> {
    match atom {
        Atom::Referer => Some(JSON_REFERER),
        Atom::UserAgent => Some(JSON_USER_AGENT),
        Atom::User => Some(AUTHORIZATION),
        _ => None,
    }
}

fn base_fields() -> Vec<Field> {
    BASE_FIELDS
        .iter()
        .map(|&(name, joined)| Field {
            name: name.as_bytes().to_vec(),
            joined,
        })
        .collect()
}

impl Format {
    pub fn json() -> Format {
        Format {
            style: Style::Json,
            fields: base_fields(),
            response_fields: Vec::new(),
        }
    }

    /// Compiles gunicorn's `access_log_format`; the error names what is wrong.
    pub fn compile(text: &str) -> Result<Format, String> {
        let mut ops = Vec::new();
        let mut fields = base_fields();
        let mut response_fields: Vec<Vec<u8>> = Vec::new();
        let mut literal = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            literal.extend_from_slice(&rest.as_bytes()[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                literal.push(b'%');
                rest = tail;
                continue;
            }
            let Some(inner) = after.strip_prefix('(') else {
                let shown: String = after.chars().take(1).collect();
                return Err(format!(
                    "'%{shown}' is not an atom: write atoms as %(name)s, and a percent sign as %%"
                ));
            };
            // Python's `%` takes the key up to the matching parenthesis.
            let mut depth = 1;
            let close = inner.char_indices().find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i)
            });
            let Some(close) = close else {
                return Err(format!("'%({inner}' has no closing parenthesis"));
            };
            let key = &inner[..close];
            let Some(tail) = inner[close + 1..].strip_prefix('s') else {
                return Err(format!("'%({key})' must be followed by s, as in %({key})s"));
            };
            rest = tail;
            let op = atom_op(key, &mut fields, &mut response_fields)?;
            if !literal.is_empty() {
                ops.push(Op::Text(std::mem::take(&mut literal)));
            }
            ops.push(op);
        }
        literal.extend_from_slice(rest.as_bytes());
        if !literal.is_empty() {
            ops.push(Op::Text(literal));
        }
        Ok(Format {
            style: Style::Text(ops),
            fields,
            response_fields,
        })
    }
}

fn atom_op(
    key: &str,
    fields: &mut Vec<Field>,
    response_fields: &mut Vec<Vec<u8>>,
) -> Result<Op, String> {
    if let Some(&(_, atom)) = ATOMS
        .iter()
        .find(|(c, _)| key.len() == 1 && key.starts_with(*c))
    {
        return Ok(Op::Atom(atom));
    }
    // `{name}i`, `{name}o`, `{name}e`, case-insensitive as gunicorn's SafeAtoms.
    let braced = key.strip_prefix('{').and_then(|k| {
        let kind = k.chars().last()?;
        Some((&k[..k.len() - kind.len_utf8()], kind))
    });
    if let Some((name, kind)) = braced {
        if let Some(name) = name.strip_suffix('}').filter(|n| !n.is_empty()) {
            let name = name.to_ascii_lowercase();
            match kind {
                'i' | 'I' => {
                    return Ok(Op::RequestField(field_slot(fields, name.as_bytes(), false)))
                }
                'o' | 'O' => {
                    let slot = response_fields
                        .iter()
                        .position(|f| f == name.as_bytes())
                        .unwrap_or_else(|| {
                            response_fields.push(name.clone().into_bytes());
                            response_fields.len() - 1
                        });
                    return Ok(Op::ResponseField(slot));
                }
                'e' | 'E' => return Ok(Op::Environ(environ(&name, fields))),
                _ => {}
            }
        }
    }
    Err(format!(
        "unknown atom %({key})s: the atoms are {}, %({{header}}i)s, %({{header}}o)s and %({{variable}}e)s",
        ATOMS.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>().join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunicorns_default_compiles_to_atoms_and_quotes() {
        let f = Format::compile(r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#)
            .unwrap();
        let Style::Text(ops) = f.style else { panic!() };
        assert_eq!(ops[0], Op::Atom(Atom::Client));
        assert_eq!(ops[1], Op::Text(b" ".to_vec()));
        assert_eq!(ops[8], Op::Atom(Atom::RequestLine));
        assert_eq!(ops.last(), Some(&Op::Text(b"\"".to_vec())));
    }

    #[test]
    fn headers_and_environ_are_case_insensitive_and_shared() {
        let f = Format::compile("%({X-Trace}i)s %({x-trace}i)s %({Content-Type}o)s %({HTTP_X_TRACE}e)s %({wsgi.url_scheme}e)s %({app.key}e)s 100%%").unwrap();
        let Style::Text(ops) = f.style else { panic!() };
        let trace = f
            .fields
            .iter()
            .position(|x| x.name == b"x-trace" && !x.joined)
            .unwrap();
        let joined = f
            .fields
            .iter()
            .position(|x| x.name == b"x-trace" && x.joined)
            .unwrap();
        assert_eq!(ops[0], Op::RequestField(trace));
        assert_eq!(ops[2], Op::RequestField(trace));
        assert_eq!(ops[4], Op::ResponseField(0));
        assert_eq!(f.response_fields, vec![b"content-type".to_vec()]);
        assert_eq!(ops[6], Op::Environ(Environ::Field(joined)));
        assert_eq!(ops[8], Op::Environ(Environ::Scheme));
        assert_eq!(ops[10], Op::Environ(Environ::Unknown));
        assert_eq!(ops[11], Op::Text(b" 100%".to_vec()));
    }

    #[test]
    fn mistakes_name_the_atom() {
        let err = Format::compile("%(h)s %(z)s").unwrap_err();
        assert!(err.contains("unknown atom %(z)s"), "{err}");
        assert!(Format::compile("%(h)d").unwrap_err().contains("%(h)"));
        assert!(Format::compile("50% off").unwrap_err().contains("'% '"));
        assert!(Format::compile("%(h").unwrap_err().contains("no closing"));
        assert!(Format::compile("%({}i)s")
            .unwrap_err()
            .contains("unknown atom"));
        assert!(Format::compile("%({é}é)s")
            .unwrap_err()
            .contains("unknown atom"));
    }
}
